"""What a video file holds: size, exact frame rate, timing, frame count, rotation and audio streams.

Headers lie (a truncated download keeps its full-length header; Matroska stores no frame count), so
the counts and timings here come from demuxing the video packets, which reads the file without
decoding it. One frame is decoded to read the rotation and to prove the codec is usable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.stream import Disposition

from nvsvideo.errors import InputError
from nvsvideo.video.colour import Colour, resolve_colour


@dataclass(frozen=True)
class AudioStreamInfo:
    """One audio stream of the file."""

    index: int
    """Stream index in the container (as ffmpeg numbers streams)."""
    codec: str
    """Codec name, e.g. "aac" or "mp3"."""
    sample_rate: int
    """Samples per second."""
    channels: int
    """Number of channels."""
    layout: str
    """Channel layout name, e.g. "stereo"."""


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream of a file, described from its packets rather than only its header."""

    path: Path
    """The probed file."""
    container: str
    """Demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"."""
    stream_index: int
    """Index of the video stream in the container."""
    codec: str
    """Video codec name, e.g. "h264"."""
    pix_fmt: str
    """Decoded pixel format, e.g. "yuv420p"."""
    width: int
    """Display width in pixels, after rotation (the width of the frames the reader yields)."""
    height: int
    """Display height in pixels, after rotation."""
    coded_width: int
    """Width of the pictures as stored, before rotation."""
    coded_height: int
    """Height of the pictures as stored, before rotation."""
    rotation: int
    """Counter-clockwise turn (0, 90, 180 or 270 degrees) that makes the stored pictures upright."""
    fps: Fraction
    """Exact frame rate, e.g. Fraction(30000, 1001); the mean rate when the rate is variable."""
    time_base: Fraction
    """Seconds per timestamp tick of the video stream."""
    start_time: float
    """Timestamp of the first frame, in seconds."""
    end_time: float
    """Timestamp of the last frame, in seconds (a camera path over the whole video needs it before decoding)."""
    duration: float
    """Seconds from the first frame to the end of the last one, from the packets present."""
    frame_count: int
    """Frames present, counted from the demuxed packets (packets an edit list hides are not counted)."""
    header_frame_count: int | None
    """What the header claims (None when the container stores no count)."""
    truncated: bool
    """True when the header promises more frames or time than the file holds."""
    expected_frame_count: int
    """Frames a complete file would show: `frame_count` plus, when truncated, the header's missing ones."""
    variable_frame_rate: bool
    """True when the gaps between timestamps are not all the same."""
    audio: tuple[AudioStreamInfo, ...]
    """Audio streams, in container order."""
    colour: Colour
    """Matrix and range the frames are converted to RGB with (untagged values filled in), primaries, transfer."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary; the frame rate and time base are kept exact as "num/den" strings."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        out["fps_float"] = float(self.fps)
        out["time_base"] = f"{self.time_base.numerator}/{self.time_base.denominator}"
        out["audio"] = [asdict(a) for a in self.audio]
        return out

    def describe(self) -> str:
        """A few human-readable lines for `nvsvideo info`."""
        rate = f"{self.fps.numerator}/{self.fps.denominator}" if self.fps.denominator != 1 else str(self.fps.numerator)
        lines = [
            f"{self.path.name}: {self.codec} {self.width}x{self.height} {self.pix_fmt}",
            f"  frame rate  {rate} fps (~{float(self.fps):.3f}){', variable' if self.variable_frame_rate else ''}",
            f"  frames      {self.frame_count}" + (f" of ~{self.expected_frame_count}" if self.truncated else ""),
            f"  duration    {self.duration:.3f} s (time base {self.time_base})",
        ]
        lines.append(f"  colour      {self.colour.describe()}")
        if self.rotation:
            lines.append(f"  rotation    {self.rotation} degrees (stored as {self.coded_width}x{self.coded_height})")
        if self.truncated:
            lines.append("  warning     the file is shorter than its header says (truncated or damaged)")
        if not self.audio:
            lines.append("  audio       none")
        for a in self.audio:
            lines.append(f"  audio #{a.index}    {a.codec} {a.sample_rate} Hz {a.layout or f'{a.channels} ch'}")
        return "\n".join(lines)


def _check_path(path: Path) -> None:
    """Turn the common path mistakes into one clear sentence each, before FFmpeg sees them."""
    if not path.exists():
        raise InputError(f"video not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a video file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is an empty file (0 bytes)")


@contextlib.contextmanager
def open_video(path: str | Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open a file for reading and yield it with its first video stream (cover art does not count).

    Raises:
        InputError: the path is missing, a folder, empty, not a media file, has no video stream or
            its video codec cannot be decoded.
    """
    path = Path(path)
    _check_path(path)
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as err:
        raise InputError(f"{path} is not a readable video file ({av_error_reason(err)})") from err
    with container:
        # Audio files often carry their cover picture as a one-frame "video" stream.
        moving = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
        if not moving:
            raise InputError(f"{path} has no video stream")
        stream = moving[0]
        if stream.codec_context is None:
            raise InputError(f"{path} uses a video codec this FFmpeg build cannot decode; convert it to H.264 first")
        yield container, stream


def av_error_reason(err: av.error.FFmpegError) -> str:
    """FFmpeg's own short explanation, without the errno and file name PyAV adds."""
    return str(getattr(err, "strerror", None) or err).rstrip(".").lower()


def _rate_from_gaps(gaps: np.ndarray, time_base: Fraction, stream: av.video.stream.VideoStream) -> Fraction:
    """Exact frame rate from the sorted timestamp gaps (in ticks), falling back to the header's rates.

    A constant gap gives the exact rate directly (1001 ticks of 1/30000 s -> 30000/1001). Gaps that
    wobble by one tick are a coarse time base rounding a constant rate (Matroska's 1/1000), and a raw
    stream has no timestamps at all: FFmpeg's guessed rate recovers the exact value of both. Anything
    else is a variable rate, reported as the mean.
    """
    if gaps.size and gaps.min() == gaps.max() and gaps[0] > 0:
        return 1 / (int(gaps[0]) * time_base)
    constant = not gaps.size or gaps.max() - gaps.min() <= 1
    if not constant:
        # The mean over the timestamps themselves: the header's average rate differs between muxers (an
        # exact copy of a file's timestamps read 72000/4171 against its source's 18000/1001).
        return Fraction(int(gaps.size), int(gaps.sum())) / time_base
    if stream.guessed_rate:
        return Fraction(stream.guessed_rate)
    if gaps.size and gaps.sum() > 0:
        return Fraction(int(gaps.size), int(gaps.sum())) / time_base
    raise InputError(f"{stream.container.name} has no timestamps and no frame rate; remux it into .mp4 first")


@dataclass
class _PacketScan:
    """What one pass over the video packets found."""

    packets: int = 0
    """Packets with data, including those an edit list hides."""
    shown: int = 0
    """Packets that become visible frames."""
    pts: list[int] = field(default_factory=list)
    """Timestamps of the shown packets that carry one (raw streams carry none), in stream order."""
    last_duration: int = 0
    """Duration in ticks of the shown packet with the latest timestamp (0 when unknown)."""
    rotation: int | None = None
    """Display rotation of the first decoded frame (None: nothing decoded)."""
    colour_tags: tuple[int, int, int, int] = (2, 0, 2, 2)
    """(matrix, range, primaries, transfer) of the first decoded frame, as tagged."""


def _scan_packets(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> _PacketScan:
    """Demux every video packet (no decoding beyond the first frame, which proves the codec works)."""
    scan = _PacketScan()
    latest = None
    try:
        for packet in container.demux(stream):
            if scan.rotation is None:
                frames = packet.decode()  # the empty final packet flushes the decoder here too
                scan.rotation = normalize_rotation(frames[0].rotation) if frames else None
                if frames:
                    f = frames[0]
                    scan.colour_tags = (int(f.colorspace), int(f.color_range), int(f.color_primaries), int(f.color_trc))
            # A packet cut off by the end of the file (an interrupted download) is flagged corrupt and
            # never decodes to a frame: it is missing, not present.
            if packet.size == 0 or packet.is_corrupt:
                continue
            scan.packets += 1
            # Packets an edit list trims (encoder priming, cut heads) are demuxed but never shown.
            if packet.is_discard:
                continue
            scan.shown += 1
            if packet.pts is not None:
                scan.pts.append(packet.pts)
                if latest is None or packet.pts > latest:
                    latest, scan.last_duration = packet.pts, packet.duration or 0
    except av.error.FFmpegError as err:
        if scan.rotation is None:
            raise InputError(f"{container.name} has a video stream that cannot be decoded ({av_error_reason(err)})") from err
        # A damaged tail: keep the count so far; the header comparison reports the rest as missing.
    return scan


def probe(path: str | Path) -> VideoInfo:
    """Describe the first video stream of `path` (and list its audio streams).

    Reads the whole file once (demuxing is fast: no decoding), so counts and timings are the file's own.

    Raises:
        InputError: see `open_video`; also when no frame can be decoded at all.
    """
    path = Path(path)
    with open_video(path) as (container, stream):
        time_base = Fraction(stream.time_base)
        header_frames = int(stream.frames) or None
        scan = _scan_packets(container, stream)
        if scan.shown == 0 or scan.rotation is None:
            raise InputError(f"{path} holds no decodable video frames (the file is empty or damaged)")
        pts = np.sort(np.asarray(scan.pts, dtype=np.int64))
        gaps = np.diff(pts)
        fps = _rate_from_gaps(gaps, time_base, stream)
        if pts.size:
            last = scan.last_duration or (int(np.median(gaps)) if gaps.size else 0)
            duration = float((int(pts[-1] - pts[0]) + last) * time_base)
        else:
            duration = float(scan.shown / fps)
        header_seconds = container.duration / av.time_base if container.duration else None
        missing = _missing_frames(header_frames, scan.packets, header_seconds, duration, fps)
        ctx = stream.codec_context
        turned = scan.rotation in (90, 270)
        return VideoInfo(
            path=path,
            container=container.format.name,
            stream_index=stream.index,
            codec=ctx.codec.canonical_name,
            pix_fmt=ctx.pix_fmt or "unknown",
            width=ctx.height if turned else ctx.width,
            height=ctx.width if turned else ctx.height,
            coded_width=ctx.width,
            coded_height=ctx.height,
            rotation=scan.rotation,
            fps=fps,
            time_base=time_base,
            start_time=float(pts[0] * time_base) if pts.size else 0.0,
            end_time=float(pts[-1] * time_base) if pts.size else float((scan.shown - 1) / fps),
            duration=duration,
            frame_count=scan.shown,
            header_frame_count=header_frames,
            truncated=missing > 0,
            expected_frame_count=scan.shown + missing,
            variable_frame_rate=bool(gaps.size and gaps.max() - gaps.min() > 1),
            audio=tuple(_audio_info(s) for s in container.streams.audio),
            colour=resolve_colour(*scan.colour_tags, pix_fmt=ctx.pix_fmt or "", width=ctx.width, height=ctx.height),
        )


def _missing_frames(
    header_frames: int | None, packets: int, header_seconds: float | None, duration: float, fps: Fraction
) -> int:
    """Frames the header promises beyond the packets present (0 for a complete file).

    The header's frame count includes packets an edit list hides, so it is compared with all packets;
    containers without a count (Matroska) are judged by their header duration instead, allowing one
    frame of slack plus audio running a little longer than the video.
    """
    if header_frames is not None:
        return max(0, header_frames - packets)
    if header_seconds is None or fps <= 0:
        return 0
    gap = header_seconds - duration
    return round(gap * float(fps)) if gap > 1 / float(fps) + 0.1 else 0


def normalize_rotation(degrees: float) -> int:
    """Snap a display-matrix angle to 0/90/180/270 counter-clockwise; other angles are not honoured (0)."""
    quarter = round(degrees / 90)
    if abs(degrees - 90 * quarter) > 1:
        return 0
    return int(90 * quarter) % 360


def _audio_info(stream: av.audio.stream.AudioStream) -> AudioStreamInfo:
    ctx = stream.codec_context
    if ctx is None:
        return AudioStreamInfo(index=stream.index, codec="unknown", sample_rate=0, channels=0, layout="")
    return AudioStreamInfo(
        index=stream.index,
        codec=ctx.codec.canonical_name,
        sample_rate=int(ctx.sample_rate),
        channels=int(ctx.layout.nb_channels),
        layout=ctx.layout.name,
    )
