"""Follow one subject through a video: pick a face once, then match it frame to frame by box overlap.

The subject is the largest face of the first frame that has one (or the `face_index`-th largest,
0 = largest, in the first frame with that many faces). In later frames the subject is the face whose
box best overlaps (IoU) and is nearest (centre distance, in face sizes) to where it was last seen;
faces outside that gate are other people and are ignored. Frames where the subject is not found are:
- interpolated (landmarks and box linearly) when the gap lasts at most `max_gap` frames and a
  detection follows it;
- marked missing otherwise (before the first detection, after the last one, or in a longer gap),
  so later stages pass those frames through unchanged.

The tracker is streaming: it holds back at most `max_gap + 1` records (landmarks only, not frames)
while a gap is still open, so memory does not grow with the video's length.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

import numpy as np

from nvsvideo.errors import NoFaceError
from nvsvideo.face.boxes import box_iou
from nvsvideo.face.types import Face, faces_by_size

T = TypeVar("T")


class TrackStatus(str, Enum):
    """How a frame's subject landmarks were obtained."""

    DETECTED = "detected"
    INTERPOLATED = "interpolated"
    MISSING = "missing"


@dataclass(frozen=True, eq=False)
class TrackRecord:
    """The subject in one frame."""

    index: int
    """Position of the frame in the stream given to the tracker (0-based)."""
    status: TrackStatus
    landmarks: np.ndarray | None
    """float64 [68, 2] frame pixels, None when missing."""
    box: np.ndarray | None
    """float64 [4] x1, y1, x2, y2, None when missing."""
    score: float | None = None
    """Detector confidence, only for detected frames."""
    mesh: np.ndarray | None = None
    """float64 [468, 3] face mesh where the backend gives one (see `Face.mesh`)."""
    crop_points: np.ndarray | None = None
    """float64 [5, 2] the crop's five points where the backend gives them (see `Face.crop_points`)."""

    def __post_init__(self) -> None:
        assert (self.landmarks is None) == (self.status is TrackStatus.MISSING), self.status
        assert self.landmarks is None or self.landmarks.shape == (68, 2), self.landmarks.shape

    def to_json(self) -> dict:
        """Plain-JSON form (for tracks.json)."""
        return {
            "index": self.index,
            "status": self.status.value,
            "landmarks": None if self.landmarks is None else self.landmarks.round(3).tolist(),
            "box": None if self.box is None else self.box.round(3).tolist(),
            "score": self.score,
        }


@dataclass(frozen=True)
class TrackerConfig:
    """How the subject is chosen and followed."""

    face_index: int = 0
    """Which face is the subject, counted by box size in the first frame that has enough faces (0 = largest)."""
    max_gap: int = 5
    """Longest run of frames without the subject that is filled by interpolation."""
    min_iou: float = 0.2
    """A face overlapping the last known box at least this much (IoU) can be the subject."""
    max_shift: float = 0.5
    """...as can one whose centre moved at most this many face sizes per frame since the subject was last seen."""
    max_size_change: float = 2.0
    """Faces this many times larger or smaller (box side) than the subject's last box are other people."""

    def __post_init__(self) -> None:
        assert self.face_index >= 0 and self.max_gap >= 0 and self.max_size_change >= 1, self


@dataclass
class TrackSummary:
    """Frame counts by status."""

    frames: int = 0
    detected: int = 0
    interpolated: int = 0
    missing: int = 0

    def count(self, record: TrackRecord) -> None:
        self.frames += 1
        if record.status is TrackStatus.DETECTED:
            self.detected += 1
        elif record.status is TrackStatus.INTERPOLATED:
            self.interpolated += 1
        else:
            self.missing += 1


def select_face(faces: Sequence[Face], face_index: int = 0) -> Face | None:
    """The `face_index`-th largest face (0 = largest), or None when there are not that many."""
    ordered = faces_by_size(faces)
    return ordered[face_index] if face_index < len(ordered) else None


def match_face(faces: Sequence[Face], last: Face, frames_since: int, config: TrackerConfig) -> Face | None:
    """The face that continues the subject last seen as `last`, `frames_since` frames ago, if any.

    A candidate must be of similar size and either overlap the last box (IoU >= min_iou) or lie within
    `max_shift * frames_since` face sizes of it; among candidates the lowest (1 - IoU) + distance wins.
    """
    size = max(np.sqrt(last.area), 1.0)
    centre = (last.box[:2] + last.box[2:]) / 2
    best, best_cost = None, np.inf
    for face in faces:
        ratio = np.sqrt(max(face.area, 1.0)) / size
        if not 1 / config.max_size_change <= ratio <= config.max_size_change:
            continue
        iou = box_iou(last.box, face.box)
        distance = float(np.linalg.norm((face.box[:2] + face.box[2:]) / 2 - centre)) / size
        if iou < config.min_iou and distance > config.max_shift * frames_since:
            continue
        cost = (1.0 - iou) + distance
        if cost < best_cost:
            best, best_cost = face, cost
    return best


def no_subject_error(frames: int, face_index: int, source: str) -> NoFaceError:
    """The error for a video in none of whose `frames` frames the subject (`--face-index`) appears."""
    if face_index == 0:
        return NoFaceError(f"no face was found in any of the {frames} frame(s) of {source}; "
                           "use footage where a face is visible, roughly frontal and at least ~40 px wide")
    return NoFaceError(f"no frame of {source} shows {face_index + 1} faces, so --face-index "
                       f"{face_index} selects nothing; use a smaller --face-index")


class FaceTracker:
    """Feed it each frame's faces in order; it returns finished `TrackRecord`s, in order, as soon as they are known.

    Example:
        tracker = FaceTracker(TrackerConfig())
        for faces in per_frame_faces:
            for record in tracker.update(faces):
                ...
        for record in tracker.finish():
            ...
        tracker.check_found("clip.mp4")  # NoFaceError when the subject never appeared
    """

    def __init__(self, config: TrackerConfig = TrackerConfig()) -> None:
        self.config = config
        self.summary = TrackSummary()
        self._position = 0
        self._last: Face | None = None  # the subject's last detection
        self._last_position = -1
        self._pending: list[int] = []  # positions of an open gap, not yet emitted

    def __repr__(self) -> str:
        return f"FaceTracker({self.config})"

    def update(self, faces: Sequence[Face]) -> list[TrackRecord]:
        """Take the faces of the next frame; return the records that are now final (possibly none)."""
        position = self._position
        self._position += 1
        if self._last is None:
            subject = select_face(faces, self.config.face_index)
        else:
            subject = match_face(faces, self._last, position - self._last_position, self.config)
        if subject is None:
            return self._gap(position)
        records = self._interpolate(subject, position) if self._last is not None else []
        records.append(TrackRecord(position, TrackStatus.DETECTED, subject.landmarks, subject.box, subject.score,
                                   subject.mesh, subject.crop_points))
        self._last, self._last_position, self._pending = subject, position, []
        return self._counted(records)

    def finish(self) -> list[TrackRecord]:
        """End of the video: a trailing gap has nothing to interpolate towards, so it is missing."""
        records = [self._missing(p) for p in self._pending]
        self._pending = []
        return self._counted(records)

    def check_found(self, source: str) -> None:
        """Raise `NoFaceError` when no frame had the subject (call after `finish`)."""
        if not self.summary.detected:
            raise no_subject_error(self.summary.frames, self.config.face_index, source)

    def _gap(self, position: int) -> list[TrackRecord]:
        if self._last is None:
            return self._counted([self._missing(position)])
        self._pending.append(position)
        if position - self._last_position <= self.config.max_gap:
            return []
        # Too long to fill: everything held back, and every further miss of this gap, is final as missing.
        records = [self._missing(p) for p in self._pending]
        self._pending = []
        return self._counted(records)

    def _interpolate(self, subject: Face, position: int) -> list[TrackRecord]:
        records = []
        last, start = self._last, self._last_position
        for p in self._pending:
            w = (p - start) / (position - start)
            records.append(TrackRecord(
                p, TrackStatus.INTERPOLATED,
                landmarks=(1 - w) * last.landmarks + w * subject.landmarks,
                box=(1 - w) * last.box + w * subject.box,
                mesh=None if last.mesh is None or subject.mesh is None else (1 - w) * last.mesh + w * subject.mesh,
                crop_points=None if last.crop_points is None or subject.crop_points is None
                else (1 - w) * last.crop_points + w * subject.crop_points,
            ))
        return records

    @staticmethod
    def _missing(position: int) -> TrackRecord:
        return TrackRecord(position, TrackStatus.MISSING, None, None)

    def _counted(self, records: list[TrackRecord]) -> list[TrackRecord]:
        for record in records:
            self.summary.count(record)
        return records


def track_stream(items: Iterable[tuple[T, Sequence[Face]]], tracker: FaceTracker) -> Iterator[tuple[T, TrackRecord]]:
    """Run `tracker` over (payload, faces) pairs and yield each payload with its frame's final record.

    The payload (typically the frame and its timestamp) waits in a queue of at most `max_gap + 1`
    items until its record is final, so frames and records stay paired without buffering the video.
    """
    waiting: deque[T] = deque()
    for payload, faces in items:
        waiting.append(payload)
        for record in tracker.update(faces):
            yield waiting.popleft(), record
    for record in tracker.finish():
        yield waiting.popleft(), record
