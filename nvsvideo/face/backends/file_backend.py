"""Landmarks or face boxes supplied by the user, per frame (reproducible runs, external trackers).

File format (JSON), frame indices counted from 0 over all frames of the video (or the sorted images of
a folder):

    {"0": FACES, "1": FACES, ...}     an object keyed by frame index (frames not listed have no face), or
    [FACES, FACES, ...]               a list with one entry per frame.

FACES is `null`/`[]` (no face), one face, or a list of faces. A face is either 68 `[x, y]` landmark
pairs in the iBUG 300-W order or a box `[x1, y1, x2, y2]`, in frame pixels. Landmarks are used as
given (score 1); boxes get their 68 landmarks fitted by dlib's predictor (extra `nvsvideo[dlib]`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nvsvideo.errors import InputError
from nvsvideo.face.boxes import box_of_points
from nvsvideo.face.types import NUM_LANDMARKS, Face, check_frames

#: Per frame: landmarks float [K, 68, 2] and boxes float [K, 4] (either may have K = 0).
FrameEntry = tuple[np.ndarray, np.ndarray]


def parse_faces(value: object, where: str) -> FrameEntry:
    """Read one frame's FACES value (see the module docstring).

    Args:
        value: the decoded JSON value.
        where: where it came from, for the error message.

    Returns:
        (landmarks float [K, 68, 2], boxes float [K', 4]).
    """
    empty = (np.zeros((0, NUM_LANDMARKS, 2)), np.zeros((0, 4)))
    if value is None or value == []:
        return empty
    try:
        array = np.asarray(value, np.float64)
    except ValueError as err:
        raise InputError(f"{where}: faces must all be 68 [x, y] pairs or all boxes [x1, y1, x2, y2]") from err
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where}: coordinates must be finite numbers")
    if array.shape in ((NUM_LANDMARKS, 2), (4,)):
        array = array[None]
    if array.ndim == 3 and array.shape[1:] == (NUM_LANDMARKS, 2):
        if np.any(np.ptp(array, axis=1) <= 0):
            raise InputError(f"{where}: a face's 68 landmarks lie on one line or point; they cannot be aligned")
        return array, empty[1]
    if array.ndim == 2 and array.shape[1] == 4:
        if np.any(array[:, 2:] <= array[:, :2]):
            raise InputError(f"{where}: boxes must be [x1, y1, x2, y2] with x2 > x1 and y2 > y1")
        return empty[0], array
    raise InputError(f"{where}: expected 68 [x, y] landmark pairs or a box [x1, y1, x2, y2] per face, "
                     f"got an array of shape {array.shape}")


def read_landmarks_file(path: Path) -> dict[int, FrameEntry]:
    """Parse a landmarks/boxes file into {frame index: (landmarks, boxes)}; see the module docstring."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read the landmarks file {path}: {err}") from err
    if isinstance(data, list):
        items = enumerate(data)
    elif isinstance(data, dict):
        try:
            items = [(int(k), v) for k, v in data.items()]
        except ValueError as err:
            raise InputError(f"{path}: keys must be frame indices (0, 1, ...): {err}") from err
    else:
        raise InputError(f"{path}: expected a JSON object keyed by frame index or a list with one entry per frame")
    return {index: parse_faces(value, f"{path}, frame {index}") for index, value in items}


class FileBackend:
    """Serves faces read from a file; boxes without landmarks are completed by dlib's predictor."""

    name = "file"

    def __init__(self, entries: dict[int, FrameEntry]) -> None:
        self._entries = entries
        needs_fit = any(len(boxes) for _, boxes in entries.values())
        self._fitter = None
        if needs_fit:
            from nvsvideo.face.backends.dlib_backend import DlibBackend

            self._fitter = DlibBackend()

    @classmethod
    def from_json(cls, path: Path) -> FileBackend:
        return cls(read_landmarks_file(path))

    def __repr__(self) -> str:
        return f"FileBackend(frames={len(self._entries)})"

    @property
    def reads_pixels(self) -> bool:
        """Whether `detect` looks at the frames: only to fit landmarks in boxes. Without boxes a pipeline
        may leave the frames undecoded and ask `faces_at` instead."""
        return self._fitter is not None

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
        """See `LandmarkBackend.detect`: faces of frames `start .. start + B - 1` from the file."""
        check_frames(frames)
        return [self._faces(start + i, frame) for i, frame in enumerate(frames)]

    def faces_at(self, indices: list[int]) -> list[list[Face]]:
        """The faces of the frames `indices` from a file that has only landmarks (`reads_pixels` is False)."""
        assert not self.reads_pixels, "boxes need the frames' pixels: call detect"
        return [self._faces(index, None) for index in indices]

    def _faces(self, index: int, frame: np.ndarray | None) -> list[Face]:
        landmarks, boxes = self._entries.get(index, (np.zeros((0, NUM_LANDMARKS, 2)), np.zeros((0, 4))))
        faces = [Face(box=box_of_points(points), score=1.0, landmarks=points.copy()) for points in landmarks]
        if len(boxes):
            assert self._fitter is not None and frame is not None
            faces += self._fitter.fit(frame, boxes)
        return faces
