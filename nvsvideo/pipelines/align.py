"""Align stage: frames -> landmarks -> one tracked subject -> smoothed 512 crops and EG3D cameras.

Two ways, with the same result:
- whole track (`track_video`, for `align` and `invert`): pass 1 streams the frames through the landmark
  backend and the tracker and keeps only a few numbers per frame (landmarks, crop square, camera);
  smoothing then runs over those whole-video series; pass 2 (`iter_crops`) decodes again and cuts each
  frame's crop with its smoothed transform, batch by batch.
- streaming (`StreamAligner`, the stage inside `rerender`'s one pass): each frame is final once the
  smoothing kernel's look-ahead has arrived, so frames wait only for that window, not for the video.
Deep3D head poses (`--pose deep3d`, `HeadPoses`) are estimated in the same batches of frames either way.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from nvsvideo.cameras.eg3d import lookat_angles, pose_from_label, split_label
from nvsvideo.compose.resample import image_tensor
from nvsvideo.compose.yuv import YuvPlanes, i420_planes
from nvsvideo.console import Reporter
from nvsvideo.errors import InputError, NoFaceError, UsageError
from nvsvideo.face.crop import (
    CropSquare,
    CropTransform,
    apply_crop,
    crop_face,
    crop_five_points,
    crop_square_from_points,
    crop_transform_from_points,
    crop_transform_from_square,
    points_from_crop,
    points_to_crop,
)
from nvsvideo.face.deep3d import Deep3DCameras, label_from_coeffs, recon_crop, translation_in_square
from nvsvideo.face.landmarks import LandmarkBackend, pixel_free
from nvsvideo.face.mesh_pose import estimate_label_from_mesh, mesh_in_crop
from nvsvideo.face.pose import HeadPose, estimate_label, project
from nvsvideo.face.types import Face
from nvsvideo.files import atomic_directory, atomic_output
from nvsvideo.temporal.smoothing import (
    OneEuroCameras,
    OneEuroFilter,
    jitter,
    kernel_radius,
    lag_frames,
    one_euro_labels,
    one_euro_series,
    sigma_frames,
    smooth_crop,
    smooth_labels,
)
from nvsvideo.temporal.tracking import (
    FaceTracker,
    TrackerConfig,
    TrackRecord,
    TrackStatus,
    select_face,
    track_stream,
)
from nvsvideo.video import FrameBatch, FrameSpan, VideoInfo, VideoReader, VideoWriter, probe
from nvsvideo.video.colour import Colour
from nvsvideo.video.reader import yuv_kept

#: Image suffixes `align` accepts as stills.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TRACKS_FORMAT = "nvsvideo-tracks/1"


@dataclass(frozen=True)
class AlignConfig:
    """How frames are aligned."""

    tracker: TrackerConfig = TrackerConfig()
    """Subject selection and gap handling."""
    smooth: float = 0.1
    """Temporal smoothing strength: Gaussian sigma in seconds (0 = off)."""
    causal: bool = False
    """Use the causal one-euro filter (streaming) instead of zero-phase smoothing."""
    batch_size: int = 16
    """Frames per landmark batch."""
    crop_size: int = 512
    """Side of the aligned crops."""
    deep3d: Deep3DCameras | None = None
    """Cameras from Deep3DFaceRecon's network on each frame's recon crop (`--pose deep3d`); None: from the
    landmarks (perspective-n-point on the mean face)."""

    @property
    def pose(self) -> str:
        """Where the cameras come from: `deep3d` or `landmarks` (recorded in the settings and cache keys)."""
        return "landmarks" if self.deep3d is None else self.deep3d.name


@dataclass(eq=False)
class FrameAlignment:
    """One frame's subject: landmarks, crop and camera (None where the subject is missing)."""

    index: int
    pts: int
    time: float
    status: TrackStatus
    landmarks: np.ndarray | None = None
    """[68, 2] frame pixels."""
    box: np.ndarray | None = None
    raw_square: CropSquare | None = None
    """The crop square from this frame's landmarks alone."""
    transform: CropTransform | None = None
    """The crop actually used (smoothed over time for videos)."""
    raw_label: np.ndarray | None = None
    """[25] camera from this frame's landmarks in the used crop."""
    label: np.ndarray | None = None
    """[25] camera actually used (smoothed over time for videos)."""
    residual: float | None = None
    """RMS pose-fit residual, crop pixels (None for Deep3D cameras, which fit nothing)."""
    head_pose: np.ndarray | None = None
    """[6] Deep3D angles (radians) and translation in this frame's own recon crop (`--pose deep3d`)."""
    score: float | None = None
    """The backend's confidence in this frame's face (mesh: face presence, 0-1); None unless detected."""
    mesh: np.ndarray | None = None
    """[468, 3] frame pixels, from the mesh backend (kept only until its camera is made; not written out)."""
    crop_points: np.ndarray | None = None
    """[5, 2] frame pixels: the crop's five points where the backend gave them (`Face.crop_points`; in memory)."""

    @property
    def has_face(self) -> bool:
        return self.transform is not None

    def to_json(self) -> dict[str, Any]:
        def arr(x: np.ndarray | None) -> list | None:
            # Unrounded: JSON floats round-trip exactly, so a reloaded track reproduces the same renders.
            return None if x is None else x.tolist()

        return {
            "index": self.index, "pts": self.pts, "time": self.time, "status": self.status.value,
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 3).tolist(),
            "box": arr(self.box),
            "raw_crop": None if self.raw_square is None else
            {"cx": self.raw_square.cx, "cy": self.raw_square.cy, "side": self.raw_square.side},
            "crop_transform": None if self.transform is None else self.transform.to_json(),
            "raw_label": arr(self.raw_label), "label": arr(self.label),
            "raw_pose": None if self.raw_label is None else _angles(self.raw_label),
            "pose": None if self.label is None else _angles(self.label),
            "pose_residual_px": self.residual, "face_score": self.score,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FrameAlignment:
        def arr(x: list | None) -> np.ndarray | None:
            return None if x is None else np.asarray(x, np.float64)

        raw = d.get("raw_crop")
        return cls(
            index=int(d["index"]), pts=int(d["pts"]), time=float(d["time"]), status=TrackStatus(d["status"]),
            landmarks=arr(d["landmarks"]), box=arr(d["box"]),
            raw_square=None if raw is None else CropSquare(raw["cx"], raw["cy"], raw["side"]),
            transform=None if d["crop_transform"] is None else CropTransform.from_json(d["crop_transform"]),
            raw_label=arr(d["raw_label"]), label=arr(d["label"]), residual=d.get("pose_residual_px"),
            score=d.get("face_score"),
        )


@dataclass(eq=False)
class VideoAlignment:
    """Every frame's alignment plus what is needed to redo pass 2 and to check the file still matches."""

    source: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: list[FrameAlignment]
    settings: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def valid(self) -> np.ndarray:
        """[T] bool: frames whose subject has a crop and camera."""
        return np.array([f.has_face for f in self.frames], dtype=bool)

    def labels(self) -> np.ndarray:
        """[T, 25] cameras used; NaN rows where the subject is missing."""
        out = np.full((len(self.frames), 25), np.nan)
        for i, f in enumerate(self.frames):
            if f.label is not None:
                out[i] = f.label
        return out

    def times(self) -> np.ndarray:
        return np.array([f.time for f in self.frames], dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        counts = {s.value: sum(f.status is s for f in self.frames) for s in TrackStatus}
        # Per frame, how far to trust it: the backend's face score and the pose fit's residual.
        per_frame = [{"index": f.index, "status": f.status.value, "face_score": f.score,
                      "pose_residual_px": f.residual} for f in self.frames]
        return {"source": self.source, "frames": len(self.frames), **counts,
                "faces_found": int(self.valid().sum()), "metrics": self.metrics, "per_frame": per_frame}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TRACKS_FORMAT, "source": self.source, "width": self.width, "height": self.height,
            "fps": str(self.fps), "time_base": str(self.time_base), "settings": self.settings,
            "metrics": self.metrics, "frames": [f.to_json() for f in self.frames],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VideoAlignment:
        if d.get("format") != TRACKS_FORMAT:
            raise InputError(f"not an nvsvideo tracks file (format {d.get('format')!r}, expected {TRACKS_FORMAT})")
        return cls(source=d["source"], width=int(d["width"]), height=int(d["height"]), fps=Fraction(d["fps"]),
                   time_base=Fraction(d["time_base"]), frames=[FrameAlignment.from_json(f) for f in d["frames"]],
                   settings=d.get("settings", {}), metrics=d.get("metrics", {}))

    def save(self, path: Path) -> None:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> VideoAlignment:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"cannot read the tracks file {path}: {err}") from None


def _angles(label: np.ndarray) -> dict[str, float]:
    yaw, pitch, roll = lookat_angles(split_label(label)[0])
    return {"yaw": round(float(yaw), 4), "pitch": round(float(pitch), 4), "roll": round(float(roll), 4)}


def estimate_camera(landmarks: np.ndarray, mesh: np.ndarray | None, tf: CropTransform) -> tuple[np.ndarray, HeadPose]:
    """The camera label of the crop `tf` cuts: from the 3D mesh where there is one, else from the 68 points."""
    if mesh is not None:
        return estimate_label_from_mesh(mesh_in_crop(mesh, tf), tf.output_size)
    return estimate_label(points_to_crop(landmarks, tf), tf.output_size)


#: A decoded frame as the tracker carries it: (index, pts, seconds, RGB pixels [H, W, 3]).
DecodedFrame = tuple[int, int, float, np.ndarray]


def detect_stream(backend: LandmarkBackend, batches: Iterable[FrameBatch]) -> Iterator[tuple[DecodedFrame, list[Face]]]:
    """Each decoded frame with its faces, batch by batch. A batch without RGB frames (its reader made none,
    as for a landmark file without boxes: `reads_pixels`) takes its faces by index, and its frames carry
    no pixels (None)."""
    indexed = pixel_free(backend)
    for batch in batches:
        if batch.frames is None:
            assert indexed is not None, "a backend that reads pixels needs RGB frames"
            faces = indexed.faces_at(batch.indices.tolist())
        else:
            faces = backend.detect(batch.frames, start=int(batch.indices[0]))
        seconds = batch.pts_seconds
        for i in range(len(batch)):
            image = None if batch.frames is None else batch.frames[i]
            yield (int(batch.indices[i]), int(batch.pts[i]), float(seconds[i]), image), faces[i]


def tracked_frame(index: int, pts: int, seconds: float, record: TrackRecord) -> FrameAlignment:
    """A frame as the tracker leaves it: the subject's landmarks and what the backend gave besides (a crop
    and a camera come with smoothing)."""
    return FrameAlignment(index, pts, seconds, record.status, record.landmarks, record.box, score=record.score,
                          mesh=record.mesh, crop_points=record.crop_points)


class HeadPoses:
    """Deep3D head poses of tracked frames (`--pose deep3d`), estimated in batches of `batch_size` recon crops:
    frames wait, in order and without their pixels, until their batch is estimated. Without Deep3D each frame
    passes straight through. The whole-track and the streaming aligners both use it, so they make the same
    batches, and so the same poses.
    """

    def __init__(self, model: Deep3DCameras | None, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self._waiting: list[FrameAlignment] = []
        self._crops: list[tuple[FrameAlignment, np.ndarray]] = []

    def push(self, frame: FrameAlignment, image: np.ndarray) -> list[FrameAlignment]:
        """Take the next tracked frame and its pixels; return the frames now posed, in order."""
        if self.model is None:
            return [frame]
        self._waiting.append(frame)
        if frame.landmarks is not None:
            self._crops.append((frame, recon_crop(image, crop_five_points(frame.landmarks, frame.crop_points))))
        return self.finish() if len(self._crops) == self.batch_size else []

    def finish(self) -> list[FrameAlignment]:
        """Every frame still waiting, posed (at the end of the video, or of a batch)."""
        if self._crops:
            assert self.model is not None
            poses = self.model.predict(np.stack([crop for _, crop in self._crops]))
            for (frame, _), pose in zip(self._crops, poses, strict=True):
                frame.head_pose = pose
        done, self._waiting, self._crops = self._waiting, [], []
        return done


def track_video(video: Path, backend: LandmarkBackend, config: AlignConfig, reporter: Reporter,
                info: VideoInfo | None = None, *, require_face: bool = True) -> VideoAlignment:
    """Pass 1 and smoothing: the subject's landmarks, crops and cameras in every frame of `video`.

    Raises:
        NoFaceError: the subject appears in no frame (unless `require_face` is False).
    """
    info = info or probe(video)
    tracker = FaceTracker(config.tracker)
    reader = VideoReader(video, batch_size=config.batch_size, info=info)
    frames: list[FrameAlignment] = []
    poses = HeadPoses(config.deep3d, config.batch_size)  # Deep3D needs the pixels, a batch at a time
    with reporter.progress("landmarks", info.frame_count) as advance:
        for (index, pts, seconds, image), record in track_stream(detect_stream(backend, reader), tracker):
            frames.extend(poses.push(tracked_frame(index, pts, seconds, record), image))
            advance(1)
    frames.extend(poses.finish())
    if reader.warning:
        reporter.warn(reader.warning)
    if require_face:
        tracker.check_found(str(video))
    alignment = VideoAlignment(source=str(video), width=info.width, height=info.height, fps=info.fps,
                               time_base=info.time_base, frames=frames)
    smooth_alignment(alignment, config)
    return alignment


def smooth_alignment(alignment: VideoAlignment, config: AlignConfig) -> None:
    """Fill crops and cameras: smooth the crop squares, estimate poses in the smoothed crops, smooth the poses.

    The pose is estimated in the crop actually used so that the camera describes that crop exactly; a Deep3D
    pose, estimated in the frame's own crop, has its translation moved to the crop used.
    Records jitter (RMS second difference) of raw vs smoothed series and, for zero-phase smoothing, the lag.
    """
    frames = [f for f in alignment.frames if f.landmarks is not None]
    if not frames:
        return
    for f in frames:
        f.raw_square = own_square(f, alignment.height)
    centers = np.array([[f.raw_square.cx, f.raw_square.cy] for f in frames])
    sides = np.array([f.raw_square.side for f in frames])
    fps = float(alignment.fps)
    sigma = sigma_frames(config.smooth, fps)
    if config.smooth == 0:
        s_centers, s_sides = centers, sides
    elif config.causal:
        series = one_euro_series(np.column_stack([centers, np.log(sides)]), fps)
        s_centers, s_sides = series[:, :2], np.exp(series[:, 2])
    else:
        s_centers, s_sides = smooth_crop(centers, sides, sigma)
    for f, c, s in zip(frames, s_centers, s_sides, strict=True):
        place_crop(f, c, s, config.crop_size)
    raw_labels = np.stack([f.raw_label for f in frames])
    if config.smooth == 0:
        labels = raw_labels
    elif config.causal:
        labels = one_euro_labels(raw_labels, fps)
    else:
        labels = smooth_labels(raw_labels, sigma)
    for f, label in zip(frames, labels, strict=True):
        f.label = label
    alignment.metrics = temporal_metrics(centers, sides, s_centers, s_sides, raw_labels, labels,
                                         zero_phase=not config.causal and config.smooth > 0)
    record_settings(alignment, config)


def own_square(frame: FrameAlignment, height: int) -> CropSquare:
    """The crop square of a tracked frame's own five points (before smoothing)."""
    return crop_square_from_points(crop_five_points(frame.landmarks, frame.crop_points), height)


def place_crop(frame: FrameAlignment, center: np.ndarray, side: float, crop_size: int) -> None:
    """Give `frame` its (smoothed) crop square, and its camera in that crop: estimated from its mesh or
    landmarks there, or its Deep3D pose (estimated in the frame's own crop) with the translation moved to it."""
    used = CropSquare(float(center[0]), float(center[1]), float(side))
    frame.transform = crop_transform_from_square(used, crop_size)
    if frame.head_pose is None:
        frame.raw_label, pose = estimate_camera(frame.landmarks, frame.mesh, frame.transform)
        frame.residual = round(pose.residual, 3)
        frame.mesh = None  # its camera is made: 11 KB a frame need not stay for the rest of the video
    else:
        assert frame.raw_square is not None
        translation = translation_in_square(frame.head_pose[3:], frame.raw_square, used)
        frame.raw_label = label_from_coeffs(np.concatenate([frame.head_pose[:3], translation]))


def record_settings(alignment: VideoAlignment, config: AlignConfig) -> None:
    """Note in the alignment the settings it was made with."""
    alignment.settings.update(smooth=config.smooth, causal=config.causal, crop_size=config.crop_size, pose=config.pose,
                              face_index=config.tracker.face_index, max_gap=config.tracker.max_gap)


class StreamAligner:
    """The crops and cameras of `smooth_alignment`, frame by frame as the tracker finalises them.

    Zero-phase smoothing reads `kernel_radius` frames of the subject's track each side of a frame, so a
    frame is final once that many later frames with the subject have arrived for its crop square, and as
    many again for its camera (estimated in the smoothed crop, then smoothed itself); at the end of the
    video every frame left is final, with the kernel cut by the track's end exactly as in the whole
    track. Each window is smoothed with the whole-track functions, so the result equals
    `smooth_alignment`'s exactly (nothing outside the kernel's support contributes; the look-ahead IS
    the support, so there is no truncation beyond the whole track's own). Frames without the subject are
    skipped by the smoothing as there (the track is taken as consecutive across gaps) and are final as
    soon as the frames before them are. The causal filter and `smooth 0` need no look-ahead.

    Example:
        aligner = StreamAligner(config, fps, height)
        for frame in frames:                 # FrameAlignment with landmarks, in order
            for done in aligner.push(frame):
                ...                          # done.transform, done.label are set (or it has no face)
        for done in aligner.finish():
            ...
        aligner.metrics()                    # the jitter report of the whole track
    """

    def __init__(self, config: AlignConfig, fps: float, height: int) -> None:
        self.config = config
        self.fps = fps
        self.height = height
        self.sigma = sigma_frames(config.smooth, fps)
        zero_phase = config.smooth > 0 and not config.causal
        self.lookahead = kernel_radius(self.sigma) if zero_phase else 0
        """Frames with the subject that a crop square waits for (a camera waits twice as many)."""
        self._pending: deque[FrameAlignment] = deque()  # frames not yet returned, in order
        self._open: deque[FrameAlignment] = deque()  # frames with the subject still without a camera
        # The subject's whole-track series (a few numbers per frame), for the windows and the jitter report.
        self._centers: list[np.ndarray] = []
        self._sides: list[float] = []
        self._s_centers: list[np.ndarray] = []
        self._s_sides: list[float] = []
        self._raw_labels: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._crop_filter = OneEuroFilter() if config.causal and config.smooth > 0 else None
        self._camera_filter = OneEuroCameras() if config.causal and config.smooth > 0 else None

    def push(self, frame: FrameAlignment) -> list[FrameAlignment]:
        """Take the next frame (landmarks set by the tracker, or None); return the frames now final."""
        self._pending.append(frame)
        if frame.landmarks is not None:
            frame.raw_square = own_square(frame, self.height)
            self._centers.append(np.array([frame.raw_square.cx, frame.raw_square.cy]))
            self._sides.append(frame.raw_square.side)
            self._open.append(frame)
        self._advance(end=False)
        return self._release()

    def finish(self) -> list[FrameAlignment]:
        """End of the video: every frame left is final."""
        self._advance(end=True)
        released = self._release()
        assert not self._pending and not self._open
        return released

    def metrics(self) -> dict[str, Any]:
        """The jitter report of `smooth_alignment` (call after `finish`; empty when the subject never appeared)."""
        if not self._centers:
            return {}
        return temporal_metrics(np.array(self._centers), np.array(self._sides), np.array(self._s_centers),
                                np.array(self._s_sides), np.stack(self._raw_labels), np.stack(self._labels),
                                zero_phase=self.lookahead > 0)

    def _advance(self, *, end: bool) -> None:
        n, cropped = len(self._centers), len(self._s_centers)
        ready = n if end else max(n - self.lookahead, cropped)
        if ready > cropped:
            centers, sides = self._smooth_crops(cropped, ready)
            first = len(self._labels)  # self._open[0] is the frame of series position `first`
            for k, (c, s) in enumerate(zip(centers, sides, strict=True), start=cropped):
                self._s_centers.append(c)
                self._s_sides.append(float(s))
                frame = self._open[k - first]
                place_crop(frame, c, float(s), self.config.crop_size)
                self._raw_labels.append(frame.raw_label)
        estimated, done = len(self._raw_labels), len(self._labels)
        ready = estimated if end else max(estimated - self.lookahead, done)
        if ready > done:
            for label in self._smooth_cameras(done, ready):
                self._labels.append(label)
                self._open.popleft().label = label

    def _window(self, start: int, available: int) -> slice:
        """The series positions that outputs [start, stop) read: the kernel's support, cut at the track's start
        and at what has arrived (which is the track's end, or beyond the support)."""
        return slice(max(0, start - self.lookahead), available)

    def _smooth_crops(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed crop centres [stop - start, 2] and sides of series positions [start, stop)."""
        if self.config.smooth == 0:
            return np.array(self._centers[start:stop]), np.array(self._sides[start:stop])
        if self._crop_filter is not None:
            rows = np.array([self._crop_filter(np.array([*c, np.log(s)]), 1.0 / self.fps)
                             for c, s in zip(self._centers[start:stop], self._sides[start:stop], strict=True)])
            return rows[:, :2], np.exp(rows[:, 2])
        window = self._window(start, len(self._centers))
        centers, sides = smooth_crop(np.array(self._centers[window]), np.array(self._sides[window]), self.sigma)
        keep = slice(start - window.start, stop - window.start)
        return centers[keep], sides[keep]

    def _smooth_cameras(self, start: int, stop: int) -> list[np.ndarray]:
        """Smoothed cameras of series positions [start, stop)."""
        raw = self._raw_labels[start:stop]
        if self.config.smooth == 0:
            return raw
        if self._camera_filter is not None:
            return [self._camera_filter(label, 1.0 / self.fps) for label in raw]
        window = self._window(start, len(self._raw_labels))
        # The window's quaternions are sign-aligned afresh: at worst all of them flip together, which
        # smoothing (linear) and the rotation (quadratic in q) do not see.
        labels = smooth_labels(np.stack(self._raw_labels[window]), self.sigma)
        return list(labels[start - window.start:stop - window.start])

    def _release(self) -> list[FrameAlignment]:
        released = []
        while self._pending and (self._pending[0].landmarks is None or self._pending[0].label is not None):
            released.append(self._pending.popleft())
        return released


def temporal_metrics(centers: np.ndarray, sides: np.ndarray, s_centers: np.ndarray, s_sides: np.ndarray,
                     raw_labels: np.ndarray, labels: np.ndarray, *, zero_phase: bool) -> dict[str, Any]:
    """Jitter of crop centre (px), crop side (px) and pose angles (degrees), raw vs smoothed, and the lag.

    Frames are taken in order as consecutive; gaps in the track are bridged (a slight overestimate of jitter).
    """
    raw_angles = lookat_angles(split_label(raw_labels)[0])
    angles = lookat_angles(split_label(labels)[0])

    def pair(raw: np.ndarray, smooth: np.ndarray) -> dict[str, float]:
        r, s = jitter(raw), jitter(smooth)
        return {"raw": round(r, 4), "smoothed": round(s, 4), "reduction": round(r / s, 2) if s > 0 else None}

    metrics: dict[str, Any] = {
        "jitter_crop_center_px": pair(centers, s_centers),
        "jitter_crop_size_px": pair(sides, s_sides),
        "jitter_pose_deg": pair(raw_angles, angles),
    }
    if len(centers) >= 8:
        metrics["lag_frames"] = {
            "crop_center": round(lag_frames(centers[:, 0], s_centers[:, 0]), 3),
            "pose_yaw": round(lag_frames(raw_angles[:, 0], angles[:, 0]), 3),
            "zero_phase": zero_phase,
        }
    return metrics


def iter_crops(video: Path, alignment: VideoAlignment, batch_size: int = 16, only: set[int] | None = None,
               span: FrameSpan | None = None) -> Iterator[tuple[FrameBatch, list[np.ndarray | None]]]:
    """Pass 2: each decoded batch (of the whole video, or of `span`) with its frames' aligned crops.

    A crop is None where the subject is missing, or where `only` is given and excludes the frame.
    """
    by_index = {f.index: f for f in alignment.frames}
    info = probe(video)
    # Crops are cut from the decoded pictures where the reader keeps them, as `rerender` cuts them.
    pictures = yuv_kept(info)
    for batch in VideoReader(video, batch_size=batch_size, span=span, info=info, keep_yuv=pictures, rgb=not pictures):
        frames, yuv = (None if a is None else image_tensor(a) for a in (batch.frames, batch.yuv))
        crops = []
        for j, i in enumerate(batch.indices.tolist()):
            record = by_index.get(i)
            wanted = record is not None and record.has_face and (only is None or i in only)
            crops.append(crop_face(crop_source(frames, yuv, j, info.colour), record.transform).numpy()
                         if wanted else None)
        yield batch, crops


def crop_source(frames: torch.Tensor | None, pictures: torch.Tensor | None, j: int, colour: Colour
                ) -> torch.Tensor | YuvPlanes:
    """Frame j of a batch as its crop is cut (`crop_face`): its decoded 4:2:0 picture where the reader kept the
    pictures (`yuv_kept`), else its RGB frame. Every pipeline cuts a video's crops so: a crop, and the
    inversion made from it, do not depend on the command that made them.

    Args:
        frames: the batch's RGB frames, uint8 [B, H, W, 3], or None.
        pictures: its packed yuv420p pictures, uint8 [B, H·3/2, W], or None.
        colour: the video's.
    """
    if pictures is not None:
        return i420_planes(pictures[j], colour)
    assert frames is not None
    return frames[j]


def align_images(paths: list[Path], backend: LandmarkBackend, config: AlignConfig
                 ) -> tuple[list[tuple[Path, FrameAlignment, np.ndarray | None]], list[str]]:
    """Align stills one by one with the exact official crop (no smoothing across items).

    Returns:
        (path, alignment, crop or None) per image, an image without a face or that cannot be read having
        status missing; and one line per image that could not be read (skipped, as a face-less one is).

    Raises:
        InputError: the one image given, or every image of a folder, cannot be read.
    """
    results = []
    unreadable = []
    most_faces = 0
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except OSError as err:
            unreadable.append(f"skipped {path.name}: cannot read it as an image ({err})")
            results.append((path, FrameAlignment(i, i, 0.0, TrackStatus.MISSING), None))
            continue
        faces = backend.detect(image[None])[0]
        most_faces = max(most_faces, len(faces))
        face = select_face(faces, config.tracker.face_index)
        if face is None:
            results.append((path, FrameAlignment(i, i, 0.0, TrackStatus.MISSING), None))
            continue
        points = crop_five_points(face.landmarks, face.crop_points)
        tf = crop_transform_from_points(points, image.shape[:2], config.crop_size)
        if config.deep3d is None:
            label, pose = estimate_camera(face.landmarks, face.mesh, tf)
            residual: float | None = round(pose.residual, 3)
        else:
            # A still's crop is the official one, so the official label applies unchanged.
            pose6 = config.deep3d.predict(recon_crop(image, points)[None])[0]
            label, residual = label_from_coeffs(pose6), None
        record = FrameAlignment(i, i, 0.0, TrackStatus.DETECTED, face.landmarks, face.box, transform=tf,
                                raw_label=label, label=label, residual=residual, score=face.score)
        results.append((path, record, apply_crop(image, tf)))
    if len(unreadable) == len(paths):
        raise InputError(unreadable[0].removeprefix("skipped ") if len(paths) == 1
                         else f"none of the {len(paths)} images could be read ({unreadable[0]})")
    if not any(r[2] is not None for r in results):
        if most_faces:
            # Faces were there: the index asked for more than any image shows.
            raise NoFaceError(f"--face-index {config.tracker.face_index} asks for face number "
                              f"{config.tracker.face_index + 1}, but no image shows more than {most_faces}; "
                              f"use --face-index 0 to {most_faces - 1}")
        raise NoFaceError(f"no face was found in any of the {len(paths)} image(s)")
    return results, unreadable


def image_inputs(path: Path) -> list[Path] | None:
    """The stills to align when `path` is an image or a folder of images; None for a video file."""
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
        if not images:
            raise InputError(f"{path} is a folder with no images ({', '.join(IMAGE_SUFFIXES)})")
        return images
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise InputError(f"{path} does not exist")
        return [path]
    return None


def read_official_cameras(path: Path) -> list[tuple[str, np.ndarray]]:
    """Labels from an official EG3D/TriPlaneNet `dataset.json` ({"labels": [[name, [25 floats]], ...]}), by name."""
    try:
        data = json.loads(path.read_text())
        labels = [(str(name), np.asarray(label, np.float64)) for name, label in data["labels"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"cannot read cameras from {path}: {err}") from None
    if any(label.shape != (25,) for _, label in labels):
        raise InputError(f"{path}: every label must have 25 numbers")
    return sorted(labels)


def apply_official_cameras(alignment: VideoAlignment, cameras: list[tuple[str, np.ndarray]]) -> None:
    """Replace our cameras with official ones, matched in frame order to the frames that have a face."""
    frames = [f for f in alignment.frames if f.has_face]
    if len(cameras) != len(frames):
        raise UsageError(f"--cameras has {len(cameras)} labels but {len(frames)} frames have a face; "
                         "the file must come from the same video and face")
    for f, (_, label) in zip(frames, cameras, strict=True):
        f.label = label


def run_align(source: Path, out_dir: Path, backend: LandmarkBackend, config: AlignConfig, reporter: Reporter, *,
              preview: bool = False, cameras: Path | None = None) -> dict[str, Any]:
    """`nvsvideo align`: crops, dataset.json (official label format) and tracks.json in a new folder.

    `cameras` (an official dataset.json) replaces our cameras: matched by file stem for stills, in frame
    order for a video.

    Returns:
        a JSON-ready summary.
    """
    started = time.perf_counter()
    stills = image_inputs(source)
    official = read_official_cameras(cameras) if cameras is not None else None
    with atomic_directory(out_dir) as tmp:
        crops_written: list[tuple[str, FrameAlignment]] = []
        unreadable: list[str] = []
        if stills is not None:
            results, unreadable = align_images(stills, backend, config)
            for line in unreadable:
                reporter.warn(line)
            if official is not None:
                apply_official_cameras_by_name(results, official)
            for path, record, crop in results:
                if crop is not None:
                    Image.fromarray(crop).save(tmp / f"{path.stem}.png")
                    crops_written.append((f"{path.stem}.png", record))
            alignment = VideoAlignment(source=str(source), width=0, height=0, fps=Fraction(1), time_base=Fraction(1),
                                       frames=[r for _, r, _ in results], settings={"stills": True, "pose": config.pose})
        else:
            alignment = track_video(source, backend, config, reporter)
            if official is not None:
                apply_official_cameras(alignment, official)
            by_index = {f.index: f for f in alignment.frames}
            with reporter.progress("crops", len(alignment.frames)) as advance:
                for batch, crops in iter_crops(source, alignment, config.batch_size):
                    for index, crop in zip(batch.indices.tolist(), crops, strict=True):
                        if crop is not None:
                            Image.fromarray(crop).save(tmp / f"{index:06d}.png", compress_level=1)
                            crops_written.append((f"{index:06d}.png", by_index[index]))
                    advance(len(batch))
            if preview:
                write_preview(source, alignment, tmp / "preview.mp4", config.batch_size)
        dataset = {"labels": [[name, record.label.tolist()] for name, record in crops_written]}
        (tmp / "dataset.json").write_text(json.dumps(dataset))
        (tmp / "tracks.json").write_text(json.dumps(alignment.to_json()))
    summary = alignment.summary()
    summary.update(output=str(out_dir), crops=len(crops_written), unreadable=unreadable,
                   seconds=round(time.perf_counter() - started, 3))
    return summary


def apply_official_cameras_by_name(results: list[tuple[Path, FrameAlignment, np.ndarray | None]],
                                   cameras: list[tuple[str, np.ndarray]]) -> None:
    """Replace the cameras of stills with official ones of the same file stem."""
    by_stem = {Path(name).stem: label for name, label in cameras}
    for path, record, crop in results:
        if crop is None:
            continue
        if path.stem not in by_stem:
            raise UsageError(f"--cameras has no label for {path.name}")
        record.label = by_stem[path.stem]


def write_preview(video: Path, alignment: VideoAlignment, output: Path, batch_size: int) -> None:
    """A copy of the video with the subject's landmarks, crop square and head axes drawn on it."""
    by_index = {f.index: f for f in alignment.frames}
    axes = np.array([[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]], dtype=np.float64)

    reader = VideoReader(video, batch_size=batch_size)
    with VideoWriter(output, width=alignment.width, height=alignment.height, fps=alignment.fps,
                     time_base=alignment.time_base, audio_from=video, colour=reader.info.colour) as writer:
        for batch in reader:
            drawn = []
            for index, frame in zip(batch.indices.tolist(), batch.frames, strict=True):
                image = Image.fromarray(frame)
                record = by_index.get(index)
                if record is not None and record.has_face:
                    draw = ImageDraw.Draw(image)
                    for x, y in record.landmarks:
                        draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(0, 255, 0))
                    corners = points_from_crop(np.array([[0, 0], [record.transform.output_size - 1] * 2], float),
                                               record.transform)
                    draw.rectangle([*corners[0], *corners[1]], outline=(255, 255, 0))
                    # The head as the camera actually used sees it (smoothed; mesh, landmarks or Deep3D alike).
                    rotation, translation = pose_from_label(record.label)
                    tips = points_from_crop(project(axes, rotation, translation, record.transform.output_size),
                                            record.transform)
                    for tip, colour in zip(tips[1:], [(255, 0, 0), (0, 255, 0), (0, 128, 255)], strict=True):
                        draw.line([*tips[0], *tip], fill=colour, width=3)
                drawn.append(np.asarray(image))
            writer.write(np.stack(drawn), batch.pts)
