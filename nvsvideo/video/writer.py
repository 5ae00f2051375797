"""Streaming H.264 encode with the source's timestamps and its audio copied packet for packet.

A pipeline opens a `VideoReader` and a `VideoWriter`, pushes each processed batch with the batch's
`pts` (RGB frames, or 4:2:0 pictures encoded as they are: `write_yuv`), and the writer interleaves the
source's audio packets as the video advances. The audio is
never re-encoded unless the output container cannot hold its codec (then it becomes AAC). The file
appears under its final name only when the writer closes without error.
"""

from __future__ import annotations

import contextlib
import itertools
import types
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from nvsvideo.errors import UsageError
from nvsvideo.files import atomic_output, output_error
from nvsvideo.video.audio import AudioCopier
from nvsvideo.video.colour import BT709, ENCODE_FLAGS, FULL, Colour, rgb_to_yuv420
from nvsvideo.video.reader import RGB_WORKERS, codec_threads

#: Output containers by suffix. Matroska is left out on purpose: it rounds timestamps to 1 ms and
#: shifts them by the encoder delay, so it could not keep the source's timing exact.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}


#: libx264's speed presets, fastest first (it checks them only when the encoder opens, too late for a clear error).
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo")


def pad_to_even(frames: np.ndarray) -> np.ndarray:
    """Pad [B, H, W, 3] frames to even H and W by repeating the last row/column (4:2:0 needs even sizes).

    Padding keeps every source pixel (cropping would drop one); the repeated edge is invisible.
    """
    extra_h, extra_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (extra_h or extra_w):
        return frames
    return np.pad(frames, ((0, 0), (0, extra_h), (0, extra_w), (0, 0)), mode="edge")


def open_output(path: Path, suffix: str, time_base: Fraction) -> av.container.OutputContainer:
    """Open `path` for writing in the container of `suffix`, with timestamps kept exact.

    The movie-level clock of MP4/MOV (edit lists, durations) defaults to milliseconds, which moves a
    video that does not start at 0 (a chunk of a longer one, a trimmed source) by up to half a
    millisecond; counting it in the video's own ticks keeps every timestamp as given.
    """
    timescale = time_base.denominator if time_base.denominator < 2**31 else 1000
    options = {"movie_timescale": str(timescale)}
    return av.open(str(path), mode="w", format=CONTAINERS[suffix.lower()], options=options)


def _to_yuv(image: np.ndarray, colour: Colour) -> av.VideoFrame:
    """[H, W, 3] uint8 RGB (even H and W) -> a yuv420p frame in `colour`'s matrix and range (in a worker thread)."""
    if colour.range == FULL:
        planes = rgb_to_yuv420(image, colour)
        frame = av.VideoFrame.from_ndarray(np.concatenate([p.ravel() for p in planes]).reshape(-1, image.shape[1]),
                                           format="yuv420p")
        frame.colorspace, frame.color_range = colour.matrix, colour.range
        return frame
    rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return rgb.reformat(format="yuv420p", dst_colorspace=colour.matrix, dst_color_range=colour.range,
                        interpolation=ENCODE_FLAGS)


class VideoWriter:
    """Encode RGB frames to H.264 (yuv420p) at exact timestamps, copying the audio of `audio_from`.

    Use it as a context manager: on success the file is renamed into place, on any error the
    temporary file is removed.

    Example:
        info = probe(src)
        with VideoWriter(dst, width=info.width, height=info.height, fps=info.fps,
                         time_base=info.time_base, colour=info.colour, audio_from=src) as writer:
            for batch in VideoReader(src, info=info):
                writer.write(render(batch.frames), batch.pts)

    Odd sizes are padded by one repeated row/column (`output_size` says what was written).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,  # frame width the caller will pass in
        height: int,  # frame height the caller will pass in
        fps: Fraction | int,  # nominal frame rate (the encoder's rate control; timestamps come from `pts`)
        time_base: Fraction | None = None,  # seconds per `pts` tick; default 1/fps (pts = frame number)
        crf: int = 18,  # libx264 quality, 0 (lossless) .. 51; 18 is visually lossless
        preset: str = "medium",  # libx264 speed/size trade-off, ultrafast .. veryslow
        audio_from: str | Path | None = None,  # copy this file's audio streams
        protect: tuple[Path, ...] = (),  # inputs that must never be overwritten (audio_from is added)
        colour: Colour = BT709,  # matrix, range and tags: the source's (`VideoInfo.colour`) keeps its pixels
        frames_expected: int | None = None,  # frames the caller will write (sizes the space a full disk lacked)
    ) -> None:
        path = Path(path)
        if path.suffix.lower() not in CONTAINERS:
            raise UsageError(f"cannot write {path.name}: use one of {', '.join(CONTAINERS)} as the output suffix")
        if preset not in X264_PRESETS:
            raise UsageError(f"unknown x264 preset {preset!r}; use one of {', '.join(X264_PRESETS)}")
        if not 0 <= crf <= 51:
            raise UsageError(f"crf must be between 0 and 51, got {crf}")
        if width < 1 or height < 1 or fps <= 0:
            raise UsageError(f"frame size and rate must be positive, got {width}x{height} at {fps} fps")
        self.path = path
        self.width, self.height = width, height
        self.output_size = (width + width % 2, height + height % 2)
        """(width, height) actually encoded: odd sizes grow by one padded pixel."""
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.fps
        self.colour = colour
        self.frames_written = 0
        self._frames_expected = frames_expected
        self._temp: Path | None = None
        self._last_pts: int | None = None
        self._audio: AudioCopier | None = None
        self._stack = contextlib.ExitStack()
        protected = tuple(Path(p) for p in protect) + ((Path(audio_from),) if audio_from is not None else ())
        try:
            temp = self._temp = self._stack.enter_context(atomic_output(path, protect=protected))
            self._pool = self._stack.enter_context(ThreadPoolExecutor(RGB_WORKERS))
            self._out = self._stack.enter_context(open_output(temp, path.suffix, self.time_base))
            self._video = self._add_video(crf, preset)
            if audio_from is not None:
                self._audio = AudioCopier(self._out, Path(audio_from), self._stack)
        except BaseException as err:
            self._stack.__exit__(type(err), err, err.__traceback__)
            raise

    def _add_video(self, crf: int, preset: str) -> av.video.stream.VideoStream:
        stream = self._out.add_stream("libx264", rate=self.fps, options={"crf": str(crf), "preset": preset})
        stream.width, stream.height = self.output_size
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.time_base
        ctx = stream.codec_context
        ctx.time_base = self.time_base
        # Slice threads (PyAV's default): frame threads, the ffmpeg command line's choice, made files
        # about 0.5 % smaller but encoded 1.6x slower on 2 cores, fed one frame at a time from Python.
        # As many as the usable CPUs: libx264's own count ignores a container's CPU quota.
        ctx.thread_type = "SLICE"
        ctx.thread_count = codec_threads()
        # Always tagged: players honour the tags, and an untagged file leaves them guessing the matrix.
        ctx.colorspace, ctx.color_range = self.colour.matrix, self.colour.range
        ctx.color_primaries, ctx.color_trc = self.colour.primaries, self.colour.transfer
        return stream

    @property
    def audio_notes(self) -> list[str]:
        """One line per source audio stream that is re-encoded to AAC rather than copied, saying why."""
        return self._audio.notes if self._audio is not None else []

    @property
    def audio_warning(self) -> str | None:
        """Set when the source's audio broke off before its end (the copied part is kept)."""
        return self._audio.warning if self._audio is not None else None

    def write(self, frames: np.ndarray, pts: np.ndarray | None = None) -> None:
        """Encode uint8 RGB frames [B, H, W, 3] at timestamps `pts` (int [B], ticks of `time_base`).

        Without `pts`, the n-th frame written (counting from 0) is stamped n / fps. Timestamps must increase.
        """
        assert frames.ndim == 4 and frames.shape[1:] == (self.height, self.width, 3), frames.shape
        assert frames.dtype == np.uint8, frames.dtype
        # The RGB -> YUV conversions run in the pool while libx264 encodes on its own threads.
        self._encode(lambda: self._pool.map(_to_yuv, pad_to_even(frames), itertools.repeat(self.colour)),
                     len(frames), pts)

    def write_yuv(self, pictures: np.ndarray, pts: np.ndarray | None = None) -> None:
        """Encode decoded 4:2:0 pictures as they are: uint8 [B, H·3/2, W] in FFmpeg's packed yuv420p layout
        (`FrameBatch.yuv`), in this writer's colour, at `pts` as `write`'s. H and W are the writer's (even)."""
        assert pictures.ndim == 3 and pictures.shape[1:] == (self.height * 3 // 2, self.width), pictures.shape
        assert pictures.dtype == np.uint8 and self.output_size == (self.width, self.height), pictures.dtype

        def frames() -> Iterator[av.VideoFrame]:
            for picture in pictures:
                frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
                frame.colorspace, frame.color_range = self.colour.matrix, self.colour.range
                yield frame

        self._encode(frames, len(pictures), pts)

    def _encode(self, frames: Callable[[], Iterable[av.VideoFrame]], count: int, pts: np.ndarray | None) -> None:
        """Encode `count` frames made by `frames()` at `pts` (see `write`), then the audio up to the last one."""
        if pts is None:
            first = self.frames_written
            step = 1 / (self.fps * self.time_base)
            pts = np.array([round((first + i) * step) for i in range(count)], dtype=np.int64)
        assert pts.shape == (count,), pts.shape
        if not count:
            return
        stamps = pts.tolist()
        for before, stamp in zip([self._last_pts, *stamps[:-1]], stamps, strict=True):
            if before is not None and stamp <= before:
                raise ValueError(f"timestamps must increase: {stamp} after {before}")
        with self._space_errors():
            for frame, stamp in zip(frames(), stamps, strict=True):
                frame.pts = stamp
                frame.time_base = self.time_base
                self._out.mux(self._video.encode(frame))
                self.frames_written += 1
            self._last_pts = stamps[-1]
            if self._audio is not None:
                self._audio.until(float((self._last_pts + 1) * self.time_base))

    @contextlib.contextmanager
    def _space_errors(self) -> Iterator[None]:
        """A full disk (or a folder made read-only meanwhile) becomes `OutputError`, naming the output and,
        from the bytes per frame so far, about how much space the whole video needs."""
        try:
            yield
        except OSError as err:
            needed = None
            if self._frames_expected and self.frames_written and self._temp is not None:
                with contextlib.suppress(OSError):
                    needed = self._temp.stat().st_size * self._frames_expected // self.frames_written
            mapped = output_error(err, self.path, needed)
            if mapped is None:
                raise
            raise mapped from err

    def close(self) -> None:
        """Flush the encoder, copy the remaining audio, and move the file into place."""
        if self.frames_written == 0:
            raise ValueError("no frames were written; refusing to create an empty video")
        with self._space_errors():
            self._out.mux(self._video.encode(None))
            if self._audio is not None:
                self._audio.finish()
            self._stack.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException as err:
                self._stack.__exit__(type(err), err, err.__traceback__)
                raise
        else:
            self._stack.__exit__(exc_type, exc, tb)

