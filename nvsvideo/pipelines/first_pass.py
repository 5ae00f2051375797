"""The align stage of a first `rerender` pass: frames are aligned as they are decoded, inside the pass.

Landmarks and tracking run frame by frame, and the zero-phase smoothing looks ahead only as far as its
kernel reaches (`StreamAligner`), so the crops and cameras equal those of the whole-track alignment
(`track_video`) while frames wait only for that window. The decoded frames wait beside them (`HeldFrames`).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nvsvideo.cache import FrameRecord
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.pipelines.align import (
    AlignConfig,
    FrameAlignment,
    HeadPoses,
    StreamAligner,
    VideoAlignment,
    detect_stream,
    record_settings,
    tracked_frame,
)
from nvsvideo.pipelines.invert import TrackLog
from nvsvideo.temporal.tracking import FaceTracker, track_stream
from nvsvideo.video import FrameBatch, VideoInfo, VideoReader

#: A batch of aligned frames: the decoded batch, its frames' alignment, their stored cache records (None where
#: the cache has none, or one an interrupted run made from another crop or camera).
AlignedBatch = tuple[FrameBatch, list[FrameAlignment], list[FrameRecord | None]]


#: Decoded frames the align stage keeps in memory while they wait for their alignment; more wait on disk.
#: The default smoothing holds 24 frames (plus the tracker's gap and one batch), so only frames beside a
#: long stretch without the subject (its frames wait for the next ones with it) ever go to disk.
HELD_IN_MEMORY = 64


class HeldFrames:
    """Decoded frames waiting for their alignment, by frame: in memory up to `limit`, beyond that in a
    temporary folder, so memory stays bounded whatever the video (a whole-track smoothing bridges any
    stretch without the subject, and so does the streamed one)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._memory: dict[int, tuple[int, tuple[np.ndarray, ...]]] = {}
        self._disk: dict[int, int] = {}  # frame -> pts of the frames in the folder
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def put(self, index: int, pts: int, images: tuple[np.ndarray, ...]) -> None:
        """Hold a frame's images (its RGB frame, and its 4:2:0 picture where one is kept)."""
        if len(self._memory) < self.limit:
            self._memory[index] = (pts, images)
            return
        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="nvsvideo-held-")
        np.savez(Path(self._folder.name) / f"{index}.npz", *images)
        self._disk[index] = pts

    def pop(self, index: int) -> tuple[int, tuple[np.ndarray, ...]]:
        """(pts, images) of a held frame, which is no longer held."""
        if index in self._memory:
            return self._memory.pop(index)
        assert self._folder is not None
        path = Path(self._folder.name) / f"{index}.npz"
        with np.load(path) as stored:
            images = tuple(stored[f"arr_{k}"] for k in range(len(stored.files)))
        path.unlink()
        return self._disk.pop(index), images

    def close(self) -> None:
        if self._folder is not None:
            self._folder.cleanup()


class FirstPassAlign:
    """The align stage of a first pass: decoded frames -> landmarks -> tracker -> `StreamAligner` -> aligned batches.

    Frames are held only while the tracker bridges a gap (`max_gap`) and the smoothing looks ahead, so
    memory does not grow with the video. The aligned frames are kept (a few numbers each) to save the
    whole track at the end.
    """

    def __init__(self, backend: LandmarkBackend, config: AlignConfig, info: VideoInfo, log: TrackLog) -> None:
        self.backend = backend
        self.config = config
        self.info = info
        self.log = log
        self.tracker = FaceTracker(config.tracker)
        self.aligner = StreamAligner(config, float(info.fps), info.height)
        self.frames: list[FrameAlignment] = []
        self.seconds = 0.0
        """Busy seconds of landmarks, tracking and smoothing (the source thread's time less decoding and crops)."""

    def batches(self, reader: VideoReader, records: Iterator[tuple[int, FrameRecord | None]],
                cache_lock: threading.Lock, *, keep_rgb: bool = True) -> Iterator[AlignedBatch]:
        """Batches of `reader.batch_size` frames, in order, each as soon as its frames are aligned.

        Args:
            records: the cache's records in frame order, read under `cache_lock`.
            keep_rgb: the RGB frames go on to the model stage (else they serve the alignment only, and only
                the pictures are held and passed on)."""
        held_kinds = (reader.rgb and keep_rgb, reader.keep_yuv)
        pixels = HeldFrames(HELD_IN_MEMORY)
        decode = [0.0]
        pictures: dict[int, np.ndarray] = {}  # the kept 4:2:0 pictures of decoded frames not yet held

        def decoded() -> Iterator[FrameBatch]:
            batches = iter(reader)
            while True:
                started = time.perf_counter()
                batch = next(batches, None)
                decode[0] += time.perf_counter() - started
                if batch is None:
                    return
                if batch.yuv is not None:
                    pictures.update(zip(batch.indices.tolist(), batch.yuv, strict=True))
                yield batch

        def final() -> Iterator[FrameAlignment]:
            poses = HeadPoses(self.config.deep3d, self.config.batch_size)
            for (index, pts, seconds, image), track in track_stream(detect_stream(self.backend, decoded()),
                                                                    self.tracker):
                # Held as (RGB frame, picture), either of which may not be made or needed (`held_kinds`).
                kept = (image if held_kinds[0] else None, pictures.pop(index, None))
                pixels.put(index, pts, tuple(a for a in kept if a is not None))
                for frame in poses.push(tracked_frame(index, pts, seconds, track), image):
                    yield from self.aligner.push(frame)
            for frame in poses.finish():
                yield from self.aligner.push(frame)
            yield from self.aligner.finish()
            self.tracker.check_found(str(reader.path))

        ready: list[FrameAlignment] = []
        frames = final()
        try:
            while True:
                started = time.perf_counter()
                frame = next(frames, None)
                self.seconds += time.perf_counter() - started
                if frame is not None:
                    self.frames.append(frame)
                    ready.append(frame)
                if ready and (frame is None or len(ready) == reader.batch_size):
                    yield self._batch(ready, pixels, held_kinds, records, cache_lock)
                    ready = []
                if frame is None:
                    break
        finally:
            frames.close()  # a pass stopped early closes the decoder now
            pixels.close()
            self.seconds -= decode[0]

    def _batch(self, aligned: list[FrameAlignment], pixels: HeldFrames, held_kinds: tuple[bool, bool],
               records: Iterator[tuple[int, FrameRecord | None]], cache_lock: threading.Lock) -> AlignedBatch:
        """The frames now aligned with their pixels and cache records; `held_kinds`: whether RGB frames and
        pictures are held."""
        held = [pixels.pop(frame.index) for frame in aligned]
        rgb, yuv = held_kinds
        batch = FrameBatch(np.stack([images[0] for _, images in held]) if rgb else None,
                           np.array([f.index for f in aligned], np.int64),
                           np.array([pts for pts, _ in held], np.int64), self.info.time_base,
                           yuv=np.stack([images[-1] for _, images in held]) if yuv else None)
        with cache_lock:
            stored = [next(records)[1] for _ in aligned]
        # An inversion stored by an interrupted run is reused only if made from this very crop and camera.
        stored = [record if self.log.matches(frame) else None for frame, record in zip(aligned, stored, strict=True)]
        return batch, aligned, stored

    def alignment(self, video: Path, settings: dict[str, Any]) -> VideoAlignment:
        """The whole track (call after the pass), as `track_video` would have made it."""
        alignment = VideoAlignment(source=str(video), width=self.info.width, height=self.info.height,
                                   fps=self.info.fps, time_base=self.info.time_base, frames=self.frames,
                                   settings=dict(settings), metrics=self.aligner.metrics())
        record_settings(alignment, self.config)
        return alignment
