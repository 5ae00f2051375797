"""Copy a source's audio into an output container, interleaved with the video by time.

Both `VideoWriter` (frames we encode) and `join_videos` (packets of already encoded parts) keep the
source's audio this way: packet for packet, never re-encoded unless the output container cannot hold
the codec, or holds it where players cannot play it (PCM and Vorbis in MP4): then it becomes AAC.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import av
import av.error

from nvsvideo.errors import InputError
from nvsvideo.video.probe import av_error_reason, open_video

_DEFAULT_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _players_refuse(format_name: str, codec: str) -> bool:
    """Codecs FFmpeg's MP4 muxer stores but most players (browsers, phones, QuickTime) cannot play from an MP4."""
    return format_name == "mp4" and (codec.startswith("pcm_") or codec == "vorbis")


def _container_takes(format_name: str, template: av.audio.stream.AudioStream) -> bool:
    """True when `format_name` can store `template`'s codec as is (tried by writing a header in memory)."""
    try:
        with av.open(io.BytesIO(), mode="w", format=format_name) as trial:
            trial.add_stream_from_template(template)
            trial.start_encoding()
    except (av.error.FFmpegError, ValueError):
        return False
    return True


class _AudioTrack:
    """One source audio stream on its way into the output: copied, or re-encoded to AAC if it must be."""

    def __init__(self, output: av.container.OutputContainer, source: av.audio.stream.AudioStream) -> None:
        self.source = source
        self.note: str | None = None
        """Set when the stream is re-encoded: which stream, and why."""
        codec = source.codec_context.codec.name if source.codec_context is not None else "unknown"
        refused = _players_refuse(output.format.name, codec)
        self.copied = not refused and _container_takes(output.format.name, source)
        if self.copied:
            self.stream = output.add_stream_from_template(source)
            return
        why = "most players cannot play it from an MP4" if refused else f"{output.format.name} cannot hold it"
        self.note = f"audio stream #{source.index} ({codec}) re-encoded to AAC: {why}"
        ctx = source.codec_context
        if ctx is None:
            raise InputError(
                f"the source's audio stream #{source.index} can be neither copied into {output.format.name} "
                "nor decoded; remove that stream from the source first"
            )
        # FFmpeg's default layout for the channel count: sources may carry an unnamed one ("1 channels").
        layout = _DEFAULT_LAYOUTS.get(ctx.layout.nb_channels, "stereo")
        self.stream = output.add_stream("aac", rate=ctx.sample_rate, layout=layout)
        self.resampler = av.AudioResampler(format="fltp", layout=self.stream.layout, rate=ctx.sample_rate)

    def mux(self, output: av.container.OutputContainer, packet: av.Packet | None) -> None:
        """Write one source packet (None: flush the re-encoder at the end)."""
        if self.copied:
            if packet is not None:
                packet.stream = self.stream
                output.mux(packet)
            return
        for frame in packet.decode() if packet is not None else self.source.codec_context.decode(None):
            for resampled in self.resampler.resample(frame):
                output.mux(self.stream.encode(resampled))
        if packet is None:
            for resampled in self.resampler.resample(None):
                output.mux(self.stream.encode(resampled))
            output.mux(self.stream.encode(None))


class AudioCopier:
    """The audio streams of `source`, added to `output` now and copied into it as the video advances.

    Call `until(seconds)` after muxing video up to that time, and `finish()` after the last video
    packet. Files opened here are closed by `stack`.
    """

    def __init__(self, output: av.container.OutputContainer, source: Path, stack: contextlib.ExitStack) -> None:
        self.warning: str | None = None
        """Set when the source's audio broke off before its end (the copied part is kept)."""
        source_file = stack.enter_context(open_video(source))[0]
        self._output = output
        self._tracks = [_AudioTrack(output, s) for s in source_file.streams.audio]
        self.notes = [t.note for t in self._tracks if t.note is not None]
        """One line per re-encoded stream, for the user."""
        by_index = {t.source.index: t for t in self._tracks}
        # Packets without a dts are demux flush markers, not audio.
        self._packets = (
            (by_index[p.stream.index], p)
            for p in source_file.demux(*source_file.streams.audio)
            if p.size and p.dts is not None
        )
        self._next: tuple[_AudioTrack, av.Packet] | None = None
        if self._tracks:
            self._advance()

    def _advance(self) -> None:
        """Read the next source packet; a source whose audio breaks off keeps what was copied."""
        try:
            self._next = next(self._packets, None)
        except av.error.FFmpegError as err:
            self._next = None
            self.warning = f"the audio of the source stops early ({av_error_reason(err)})"

    def until(self, seconds: float | None) -> None:
        """Copy source packets up to `seconds` (None: all the rest), keeping the file interleaved."""
        while self._next is not None:
            track, packet = self._next
            if seconds is not None and float(packet.dts * packet.time_base) > seconds:
                return
            track.mux(self._output, packet)
            self._advance()

    def finish(self) -> None:
        """Copy what is left and flush the re-encoders."""
        self.until(None)
        for track in self._tracks:
            track.mux(self._output, None)
