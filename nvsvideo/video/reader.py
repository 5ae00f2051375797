"""Streaming decode: batches of upright RGB frames with their exact timestamps.

At most two batches are in flight at a time, so memory does not grow with the video's length.
FFmpeg decodes on several threads (frame or slice threading, whichever the codec supports) while a
small pool converts the decoded pictures to RGB. A truncated or damaged file is decoded up to the
damage; the reader then records a warning instead of failing, unless not a single frame came out.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from nvsvideo.errors import InputError, UsageError
from nvsvideo.video.probe import VideoInfo, av_error_reason, open_video, probe

#: Threads converting between YUV and RGB beside the codec (here for decoding, in the writer for
#: encoding). Converting beside the codec rather than after it made 512x512 decoding 1.5-1.8x and
#: encoding about 1.5x faster on a 2-core machine; 1 to 4 workers measured the same there.
RGB_WORKERS = 2


class TruncatedVideoWarning(UserWarning):
    """The video ended (or broke) before all the frames its header promises."""


@dataclass(frozen=True)
class FrameBatch:
    """Consecutive decoded frames of one video, upright, with their source timestamps."""

    frames: np.ndarray
    """uint8 [B, H, W, 3] RGB, rotation already applied."""
    indices: np.ndarray
    """int64 [B]: position of each frame among all the frames the file shows (0-based)."""
    pts: np.ndarray
    """int64 [B]: source presentation timestamps, in ticks of `time_base`."""
    time_base: Fraction
    """Seconds per tick of `pts`."""

    def __post_init__(self) -> None:
        b = self.frames.shape[0]
        assert self.frames.ndim == 4 and self.frames.shape[3] == 3 and self.frames.dtype == np.uint8, self.frames.shape
        assert self.indices.shape == (b,) and self.pts.shape == (b,), (self.indices.shape, self.pts.shape)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

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
    stay meaningful after selection.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 16,  # frames per yielded batch
        threads: int = 0,  # decoder threads; 0 lets FFmpeg pick (one per core)
        start: float | None = None,  # seconds; frames before are skipped
        end: float | None = None,  # seconds; frames from here on are not read
        every: int = 1,  # keep one frame in `every`
        info: VideoInfo | None = None,  # a probe result to reuse (saves a pass over the file)
    ) -> None:
        if batch_size < 1 or every < 1 or threads < 0:
            raise UsageError("batch size and --every must be at least 1, and threads at least 0")
        if start is not None and end is not None and end <= start:
            raise UsageError(f"--end ({end}) must be after --start ({start})")
        self.path = Path(path)
        self.info = info if info is not None else probe(self.path)
        self.batch_size = batch_size
        self.threads = threads
        self.start = start
        self.end = end
        self.every = every
        self.frames_decoded = 0
        """Frames decoded in the last pass, including skipped ones; set while iterating."""
        self.warning: str | None = None
        """Set after a pass when the file ended before its promised frames or a decode error stopped it."""

    def __iter__(self) -> Iterator[FrameBatch]:
        self.frames_decoded = 0
        self.warning = None
        rotation = self.info.rotation
        # Frames being converted to RGB, oldest first; at most two batches, so memory stays bounded.
        window: deque[tuple[Future[np.ndarray], int, int]] = deque()
        first_kept: int | None = None  # index of the first frame at or after `start`; `every` counts from it
        reached_end = False
        damage: str | None = None
        with open_video(self.path) as (container, stream), ThreadPoolExecutor(RGB_WORKERS) as pool:
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.threads
            time_base = Fraction(stream.time_base)
            frames = _decode(container, stream)
            try:
                for index, frame in enumerate(frames):
                    self.frames_decoded = index + 1
                    pts = frame.pts if frame.pts is not None else self._guess_pts(index)
                    seconds = float(pts * time_base)
                    if self.end is not None and seconds >= self.end:
                        reached_end = True
                        break
                    if self.start is not None and seconds < self.start:
                        continue
                    first_kept = index if first_kept is None else first_kept
                    if (index - first_kept) % self.every:
                        continue
                    window.append((pool.submit(_upright_rgb, frame, rotation), index, pts))
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
        expected = self.info.expected_frame_count
        if damage is not None:
            self.warning = (
                f"decoding stopped after {self.frames_decoded} of ~{expected} frames ({damage}); "
                f"{self.path.name} is damaged"
            )
        elif not reached_end and self.frames_decoded < expected:
            self.warning = f"decoded {self.frames_decoded} of ~{expected} frames; {self.path.name} is truncated or damaged"

    def _guess_pts(self, index: int) -> int:
        """Timestamp for a frame the container left unstamped (raw streams): its slot at the nominal rate."""
        return round(index / (self.info.fps * self.info.time_base))


class _DecodeStopped(Exception):
    """Raised by `_decode` when FFmpeg reports damage in the middle of a file."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _decode(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
    """Yield decoded frames in presentation order, feeding the final flush packet so none is lost."""
    try:
        for packet in container.demux(stream):
            yield from packet.decode()
    except av.error.FFmpegError as err:
        raise _DecodeStopped(av_error_reason(err)) from err


def _upright_rgb(frame: av.VideoFrame, rotation: int) -> np.ndarray:
    """[H, W, 3] uint8 RGB of a decoded frame, turned upright (runs in a worker thread)."""
    return upright(frame.to_ndarray(format="rgb24"), rotation)


def _take_batch(window: deque[tuple[Future[np.ndarray], int, int]], size: int, time_base: Fraction) -> FrameBatch:
    """Pop up to `size` frames off the front of `window`, waiting for their conversion."""
    taken = [window.popleft() for _ in range(min(size, len(window)))]
    return FrameBatch(
        frames=np.stack([future.result() for future, _, _ in taken]),
        indices=np.array([index for _, index, _ in taken], dtype=np.int64),
        pts=np.array([pts for _, _, pts in taken], dtype=np.int64),
        time_base=time_base,
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
