"""Join videos encoded in parts (chunks of one video, e.g. rendered on several workers) into one file.

The parts' H.264 packets are copied, not re-encoded: each part starts on a keyframe and carries the
source's own timestamps, so the joined stream plays as if encoded in one go. The source's audio is
copied in beside the video, interleaved, exactly as `VideoWriter` does for a single pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error

from nvsvideo.errors import InputError
from nvsvideo.files import atomic_output
from nvsvideo.video.audio import AudioCopier
from nvsvideo.video.probe import av_error_reason, open_video
from nvsvideo.video.writer import CONTAINERS, open_output


def _stream_shape(stream: av.video.stream.VideoStream) -> tuple[object, ...]:
    """What two parts must share for their packets to form one stream."""
    ctx = stream.codec_context
    return (ctx.name, ctx.width, ctx.height, ctx.pix_fmt, bytes(ctx.extradata or b""), Fraction(stream.time_base))


def join_videos(parts: Sequence[Path], output: Path, *, audio_from: Path | None = None) -> int:
    """Write the video packets of `parts`, in order, and the audio of `audio_from` into `output` (atomically).

    Args:
        parts: videos encoded alike (same codec, size and codec headers, as `VideoWriter` makes them
            with the same settings), each holding later timestamps than the one before.
        output: the joined file (.mp4/.m4v/.mov); it appears only once complete.
        audio_from: copy this file's audio streams (e.g. the source of the parts).

    Returns:
        The number of video packets (frames) written.

    Raises:
        InputError: a part is missing or unreadable, encoded differently from the first, or overlaps
            the time span of the part before it.
    """
    if not parts:
        raise ValueError("no parts to join")
    if output.suffix.lower() not in CONTAINERS:
        raise ValueError(f"cannot write {output.name}: use one of {', '.join(CONTAINERS)}")
    protected = (*parts, *([audio_from] if audio_from is not None else []))
    frames = 0
    with contextlib.ExitStack() as stack:
        temp = stack.enter_context(atomic_output(output, protect=tuple(protected)))
        first = stack.enter_context(open_video(parts[0]))[1]
        shape = _stream_shape(first)
        out = stack.enter_context(open_output(temp, output.suffix, Fraction(first.time_base)))
        video = out.add_stream_from_template(first)
        audio = AudioCopier(out, audio_from, stack) if audio_from is not None else None
        last_dts: int | None = None
        for part in parts:
            with open_video(part) as (container, stream):
                if _stream_shape(stream) != shape:
                    raise InputError(
                        f"{part.name} was encoded differently from {parts[0].name} (size, pixel format or "
                        "codec settings), so the two cannot be joined without re-encoding"
                    )
                try:
                    for packet in container.demux(stream):
                        if packet.dts is None:  # the demuxer's end-of-stream marker
                            continue
                        if last_dts is not None and packet.dts <= last_dts:
                            raise InputError(
                                f"{part.name} overlaps the part before it in time (decode time "
                                f"{packet.dts * packet.time_base} s); the parts must be consecutive"
                            )
                        last_dts = packet.dts
                        packet.stream = video
                        out.mux(packet)
                        frames += 1
                        if audio is not None and packet.pts is not None:
                            audio.until(float(packet.pts * Fraction(stream.time_base)))
                except av.error.FFmpegError as err:
                    raise InputError(f"{part} is damaged ({av_error_reason(err)})") from err
        if audio is not None:
            audio.finish()
    return frames
