"""Streaming decode: batches of upright RGB frames, or of the decoded 4:2:0 pictures, or both, with their
exact timestamps.

At most two batches are in flight at a time, so memory does not grow with the video's length.
FFmpeg decodes on one thread per usable CPU and one more (`codec_threads`; frame or slice threading,
whichever the codec supports) while a small pool converts the decoded pictures to RGB. A truncated or
damaged file is decoded up to the damage; the reader then records a warning instead of failing, unless
not a single frame came out.
"""

from __future__ import annotations

import enum
import itertools
import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from nvsvideo.errors import InputError, UsageError
from nvsvideo.video.colour import DECODE_FLAGS, PLANAR_420, Colour
from nvsvideo.video.probe import VideoInfo, av_error_reason, open_video, probe

#: Threads converting between YUV and RGB beside the codec (here for decoding, in the writer for
#: encoding). Converting beside the codec rather than after it made 512x512 decoding 1.5-1.8x and
#: encoding about 1.5x faster on a 2-core machine; 1 to 4 workers measured the same there.
RGB_WORKERS = 2


#: FFmpeg's own cap on automatic decoder threads: more frame threads only add frames in flight (memory)
#: and, in libx264, cost compression.
MAX_CODEC_THREADS = 16
#: The CPU quota of the cgroup (v2) a container runs in: "QUOTA PERIOD" in microseconds, or "max PERIOD".
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(affinity: int, cpu_max: str | None) -> int:
    """CPUs a process can keep busy: its affinity count, capped by a cgroup `cpu.max` quota (rounded up).

    The affinity mask alone overstates a container limited by quota (`docker --cpus 4` on a 64-core
    host shows 64 CPUs); FFmpeg and libx264 size their thread pools from the mask only.
    """
    fields = (cpu_max or "").split()
    if len(fields) == 2 and fields[0] != "max" and all(f.isdigit() for f in fields) and int(fields[1]) > 0:
        return max(1, min(affinity, math.ceil(int(fields[0]) / int(fields[1]))))
    return max(1, affinity)


def codec_threads() -> int:
    """Threads for FFmpeg's decoders and libx264: the usable CPUs, at most `MAX_CODEC_THREADS`."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        cpu_max: str | None = _CGROUP_CPU_MAX.read_text()
    except OSError:  # no cgroup v2 quota (bare metal, macOS, Windows)
        cpu_max = None
    return min(MAX_CODEC_THREADS, usable_cpus(affinity, cpu_max))


#: How far before a span's first frame the reader seeks, in seconds: a keyframe found by decode time
#: may show its picture a few frames later, so a seek straight to the target can land past it.
SEEK_MARGIN = 1.0


@dataclass(frozen=True)
class FrameSpan:
    """Frames `[start, stop)` by index, with the timestamp of frame `start` so a reader can seek to it."""

    start: int
    """Index of the first frame (0-based, among all the frames the file shows)."""
    stop: int
    """One past the index of the last frame."""
    start_pts: int
    """Presentation timestamp of frame `start`, in ticks of the video stream's time base."""

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"invalid frame span [{self.start}, {self.stop})")


class TruncatedVideoWarning(UserWarning):
    """The video ended (or broke) before all the frames its header promises."""


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive decoded frames of one video, upright, with their source timestamps."""

    frames: np.ndarray | None
    """uint8 [B, H, W, 3] RGB, rotation already applied; None when the reader made none (`rgb`)."""
    indices: np.ndarray
    """int64 [B]: position of each frame among all the frames the file shows (0-based)."""
    pts: np.ndarray
    """int64 [B]: source presentation timestamps, in ticks of `time_base`."""
    time_base: Fraction
    """Seconds per tick of `pts`."""
    yuv: np.ndarray | None = None
    """uint8 [B, H·3/2, W]: the decoded 4:2:0 pictures in FFmpeg's packed yuv420p layout (`keep_yuv`), else None."""

    def __post_init__(self) -> None:
        b = len(self.indices)
        assert self.indices.shape == (b,) and self.pts.shape == (b,), (self.indices.shape, self.pts.shape)
        assert self.frames is not None or self.yuv is not None, "a batch holds RGB frames or pictures"
        if self.frames is not None:
            frames = self.frames
            assert frames.shape[0] == b and frames.ndim == 4 and frames.shape[3] == 3, frames.shape
            assert frames.dtype == np.uint8, frames.dtype
        if self.yuv is not None:
            assert self.yuv.ndim == 3 and self.yuv.shape[0] == b and self.yuv.dtype == np.uint8, self.yuv.shape
            if self.frames is not None:
                assert self.yuv.shape[1:] == (self.frames.shape[1] * 3 // 2, self.frames.shape[2]), self.yuv.shape

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def pts_seconds(self) -> np.ndarray:
        """float64 [B]: presentation times in seconds."""
        return self.pts.astype(np.float64) * float(self.time_base)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored picture [H, W, C] counter-clockwise by `rotation` degrees (a multiple of 90)."""
    return np.rot90(image, k=rotation // 90) if rotation else image


class VideoReader:
    """Iterate over a video in `FrameBatch`es; after the loop, `warning` says whether the file was cut short.

    Example:
        reader = VideoReader("in.mp4", batch_size=16)
        for batch in reader:
            ...
        if reader.warning:
            report.warn(reader.warning)

    Frames are selected by time (`start` <= t < `end`, seconds on the file's own clock) and then
    every `every`-th one is kept; `indices` always count from the first frame of the file, so they
    stay meaningful after selection. Or they are selected by index (`span`): the reader seeks close to
    the span instead of decoding the file from its start, which makes reading the end of a long
    video cheap; where the seek cannot be trusted (it lands past the span's first frame) it decodes
    from the start instead.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 16,  # frames per yielded batch
        threads: int = 0,  # decoder threads; 0: one more than `codec_threads()`
        start: float | None = None,  # seconds; frames before are skipped
        end: float | None = None,  # seconds; frames from here on are not read
        every: int = 1,  # keep one frame in `every`
        info: VideoInfo | None = None,  # a probe result to reuse (saves a pass over the file)
        span: FrameSpan | None = None,  # frames by index (instead of start/end/every)
        keep_yuv: bool = False,  # also yield the decoded pictures (`FrameBatch.yuv`); see `yuv_kept`
        rgb: bool = True,  # convert the pictures to RGB frames (`FrameBatch.frames`); False needs `keep_yuv`
    ) -> None:
        if batch_size < 1 or every < 1 or threads < 0:
            raise UsageError("batch size and --every must be at least 1, and threads at least 0")
        if span is not None and (start is not None or end is not None or every != 1):
            raise ValueError("a span selects frames by index: it cannot be combined with start, end or every")
        if start is not None and end is not None and end <= start:
            raise UsageError(f"--end ({end}) must be after --start ({start})")
        self.path = Path(path)
        self.info = info if info is not None else probe(self.path)
        self.batch_size = batch_size
        self.threads = threads
        self.start = start
        self.end = end
        self.every = every
        self.span = span
        if keep_yuv and not yuv_kept(self.info):
            raise ValueError(f"{self.info.pix_fmt} pictures turned by {self.info.rotation} degrees cannot be kept")
        if not (rgb or keep_yuv):
            raise ValueError("a reader yields RGB frames, pictures, or both")
        self.keep_yuv = keep_yuv
        self.rgb = rgb
        self._first_kept: int | None = None  # index of the first frame at or after `start`; `every` counts from it
        self._last_index = -1  # index of the last frame decoded in this pass
        self.frames_decoded = 0
        """Frames decoded in the last pass, including skipped ones but not those before a seek."""
        self.warning: str | None = None
        """Set after a pass when the file ended before its promised frames or a decode error stopped it."""

    def __iter__(self) -> Iterator[FrameBatch]:
        self.frames_decoded = 0
        self.warning = None
        rotation = self.info.rotation
        # Frames being converted to RGB, oldest first; at most two batches, so memory stays bounded.
        window: deque[tuple[Future[tuple[np.ndarray | None, np.ndarray | None]], int, int]] = deque()
        reached_end = False
        damage: str | None = None
        with open_video(self.path) as (container, stream), ThreadPoolExecutor(RGB_WORKERS) as pool:
            stream.thread_type = "AUTO"
            # One spare thread, as FFmpeg's own automatic count: a frame thread waiting for its reference
            # frame would otherwise leave a core idle (measured 5 % faster than one per CPU on 2 cores).
            stream.codec_context.thread_count = self.threads or codec_threads() + 1
            time_base = Fraction(stream.time_base)
            frames = self._indexed_frames(container, stream)
            try:
                for index, frame, pts in frames:
                    verdict = self._select(index, float(pts * time_base))
                    if verdict is _Pick.STOP:
                        reached_end = True
                        break
                    if verdict is _Pick.SKIP:
                        continue
                    window.append((pool.submit(_pixels, frame, rotation, self.info.colour, self.rgb, self.keep_yuv), index, pts))
                    if len(window) == 2 * self.batch_size:
                        yield _take_batch(window, self.batch_size, time_base)
            except _DecodeStopped as stop:
                damage = stop.reason
            finally:
                frames.close()
            while window:
                yield _take_batch(window, self.batch_size, time_base)
        if self.frames_decoded == 0:
            raise InputError(f"{self.path} holds no decodable video frames (the file is damaged)")
        expected = self.span.stop if self.span is not None else self.info.expected_frame_count
        last = self._last_index + 1
        if damage is not None:
            self.warning = f"decoding stopped after {last} of ~{expected} frames ({damage}); {self.path.name} is damaged"
        elif not reached_end and last < expected:
            self.warning = f"decoded {last} of ~{expected} frames; {self.path.name} is truncated or damaged"

    def _indexed_frames(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
                        ) -> Iterator[tuple[int, av.VideoFrame, int]]:
        """(index, frame, pts) of the decoded frames; from near the span's start when one is set."""
        self._last_index = -1
        self._first_kept = None
        decoded, first, head = self._seek_to_span(container, stream)
        try:
            for index, frame in enumerate(itertools.chain(head, decoded), start=first):
                self.frames_decoded += 1
                self._last_index = index
                yield index, frame, self._pts_of(frame, index)
        finally:
            decoded.close()

    def _seek_to_span(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream
                      ) -> tuple[Generator[av.VideoFrame, None, None], int, list[av.VideoFrame]]:
        """The decoder positioned for this pass: (frames, index of the first one, frames already taken)."""
        span = self.span
        if span is None or span.start == 0:
            return _decode(container, stream), 0, []
        margin = round(SEEK_MARGIN / Fraction(stream.time_base))
        container.seek(max(span.start_pts - margin, 0), stream=stream, backward=True)
        decoded = _decode(container, stream)
        head = next((f for f in decoded if f.pts is None or f.pts >= span.start_pts), None)
        if head is not None and head.pts == span.start_pts:
            return decoded, span.start, [head]
        # The seek landed past the span (or the stream has no timestamps): count every frame from the start.
        decoded.close()
        container.seek(0, stream=stream, backward=True)
        return _decode(container, stream), 0, []

    def _select(self, index: int, seconds: float) -> _Pick:
        """Whether the frame at `index`, shown at `seconds`, is kept, skipped, or ends the pass."""
        if self.span is not None:
            if index >= self.span.stop:
                return _Pick.STOP
            return _Pick.KEEP if index >= self.span.start else _Pick.SKIP
        if self.end is not None and seconds >= self.end:
            return _Pick.STOP
        if self.start is not None and seconds < self.start:
            return _Pick.SKIP
        self._first_kept = index if self._first_kept is None else self._first_kept
        return _Pick.SKIP if (index - self._first_kept) % self.every else _Pick.KEEP

    def _pts_of(self, frame: av.VideoFrame, index: int) -> int:
        """The frame's pts; for a frame the container left unstamped (raw streams), its slot at the nominal rate."""
        return frame.pts if frame.pts is not None else round(index / (self.info.fps * self.info.time_base))


class _Pick(enum.Enum):
    KEEP = "keep"
    SKIP = "skip"
    STOP = "stop"


class _DecodeStopped(Exception):
    """Raised by `_decode` when FFmpeg reports damage in the middle of a file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """Yield decoded frames in presentation order, feeding the final flush packet so none is lost."""
    try:
        for packet in container.demux(stream):
            # A packet cut off by the end of the file (truncation) holds no whole frame: skip it, as
            # `probe` does, rather than feed the decoder a fragment it would report as damage.
            if packet.is_corrupt and packet.size:
                continue
            yield from packet.decode()
    except av.error.FFmpegError as err:
        raise _DecodeStopped(av_error_reason(err)) from err


def yuv_kept(info: VideoInfo) -> bool:
    """Whether the reader can keep a video's decoded pictures (`keep_yuv`): 8-bit 4:2:0 of even size, not turned.

    Those are the pictures the writer encodes as they are (`VideoWriter.write_yuv`); other formats go through RGB.
    """
    return (info.pix_fmt in PLANAR_420 and info.rotation == 0 and info.width % 2 == 0 and info.height % 2 == 0)


def _pixels(frame: av.VideoFrame, rotation: int, colour: Colour, rgb: bool, keep_yuv: bool
            ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(with `rgb`, [H, W, 3] uint8 RGB of a decoded frame by the source's matrix and range, turned upright;
    with `keep_yuv`, its picture in the packed yuv420p layout) (in a worker thread)."""
    image = None
    if rgb:
        image = upright(frame.to_ndarray(format="rgb24", src_colorspace=colour.matrix, src_color_range=colour.range,
                                         interpolation=DECODE_FLAGS), rotation)
    if not keep_yuv:
        return image, None
    # A picture in another format than the stream's first (a mid-stream change) is converted to the kept one.
    picture = frame if frame.format.name in PLANAR_420 else frame.reformat(format="yuv420p")
    return image, picture.to_ndarray()


def _take_batch(window: deque[tuple[Future[tuple[np.ndarray | None, np.ndarray | None]], int, int]], size: int,
                time_base: Fraction) -> FrameBatch:
    """Pop up to `size` frames off the front of `window`, waiting for their conversion."""
    taken = [window.popleft() for _ in range(min(size, len(window)))]
    pixels = [future.result() for future, _, _ in taken]
    return FrameBatch(
        frames=None if pixels[0][0] is None else np.stack([rgb for rgb, _ in pixels]),
        indices=np.array([index for _, index, _ in taken], dtype=np.int64),
        pts=np.array([pts for _, _, pts in taken], dtype=np.int64),
        time_base=time_base,
        yuv=None if pixels[0][1] is None else np.stack([yuv for _, yuv in pixels]),
    )


def read_frames(
    path: str | Path,
    *,
    batch_size: int = 16,
    threads: int = 0,
    start: float | None = None,
    end: float | None = None,
    every: int = 1,
    on_warning: Callable[[str], None] | None = None,
) -> Iterator[FrameBatch]:
    """Yield `FrameBatch`es of `path`; see `VideoReader` for the arguments.

    A truncated file yields what it holds, then `on_warning(message)` is called (or, without a
    callback, a `TruncatedVideoWarning` is issued through the `warnings` module).
    """
    reader = VideoReader(path, batch_size=batch_size, threads=threads, start=start, end=end, every=every)
    yield from reader
    if reader.warning is not None:
        if on_warning is not None:
            on_warning(reader.warning)
        else:
            warnings.warn(reader.warning, TruncatedVideoWarning, stacklevel=2)
