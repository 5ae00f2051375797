"""face-alignment's 2D FAN landmarks (optional extra `nvsvideo[fan]`), offline-safe.

face-alignment downloads its weights on first use. Offline that ends in a bare URL error, so this
backend checks for every file it will need *before* constructing the model and, when one is missing,
says which files to put where. All files live in torch-hub's checkpoint folder,
`$TORCH_HOME/hub/checkpoints/` (default `~/.cache/torch/hub/checkpoints/`); FAN itself has no other
way to be pointed at a file. Detector weights are always passed by path, so they load with
`torch.load(weights_only=True)` and never through a downloader.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.face.backends.dlib_backend import DlibBackend
from nvsvideo.face.types import NUM_LANDMARKS, Face, check_frames
from nvsvideo.weights.registry import get_weight, torch_hub_checkpoints_dir

#: Detector name -> {keyword argument of face-alignment's detector: weights registry name}.
#: `dlib` needs no file: boxes come from our own dlib HOG detector and are handed to FAN.
FAN_DETECTORS: dict[str, dict[str, str]] = {
    "sfd": {"path_to_detector": "fan-detector-sfd"},
    "blazeface": {"path_to_detector": "fan-detector-blazeface", "path_to_anchor": "fan-detector-blazeface-anchors"},
    "retinaface": {"path_to_detector": "fan-detector-retinaface"},
    "dlib": {},
}


def checkpoint_dir() -> Path:
    """torch-hub's checkpoint folder, where face-alignment looks for its weights."""
    return torch_hub_checkpoints_dir(os.environ)


def fan_weight_files(face_detector: str) -> dict[str, tuple[Path, str]]:
    """Every file the FAN backend with this detector needs.

    Returns:
        {role: (local path, download URL)}; role is "fan" or a detector keyword argument.
    """
    if face_detector not in FAN_DETECTORS:
        raise UsageError(f"unknown FAN face detector '{face_detector}': choose one of {', '.join(FAN_DETECTORS)}")
    folder = checkpoint_dir()
    roles = {"fan": "fan-2d", **FAN_DETECTORS[face_detector]}
    return {role: (folder / get_weight(name).filename, get_weight(name).url) for role, name in roles.items()}


def missing_weights_message(face_detector: str) -> str | None:
    """One sentence naming the missing files and where they go, or None when all are present."""
    missing = [(path, url) for path, url in fan_weight_files(face_detector).values() if not path.is_file()]
    if not missing:
        return None
    listing = "; ".join(f"{path.name} (from {url})" for path, url in missing)
    return (f"face-alignment weights are missing from {checkpoint_dir()}: {listing}; download them into that "
            f"folder (or set TORCH_HOME to a folder whose hub/checkpoints/ holds them), or use --landmarks dlib")


def fan_importable() -> bool:
    """True when the face-alignment package is installed."""
    import importlib.util

    return importlib.util.find_spec("face_alignment") is not None


def fan_ready(face_detector: str) -> bool:
    """True when the FAN backend can run offline: package installed and all its weights present."""
    return fan_importable() and missing_weights_message(face_detector) is None


class FanBackend:
    """2D FAN landmarks on boxes from one of face-alignment's detectors, batched."""

    name = "fan"

    def __init__(
        self,
        *,
        device: torch.device,    # where the detector and FAN run
        face_detector: str = "sfd",  # key of FAN_DETECTORS
        flip_input: bool = False,  # also run FAN on the mirrored crop (2x cost, slightly steadier)
        max_batch_size: int = 8,  # faces per FAN forward pass
    ) -> None:
        if not fan_importable():
            raise UsageError('the fan landmark backend needs the face-alignment package; install the extra with: '
                             'pip install "nvsvideo[fan]"')
        message = missing_weights_message(face_detector)
        if message is not None:
            raise WeightsError(message)
        import face_alignment

        files = fan_weight_files(face_detector)
        detector_kwargs = {role: str(path) for role, (path, _) in files.items() if role != "fan"}
        # Our own HOG boxes stand in for face-alignment's dlib detector, which has no batch API.
        self._boxes = DlibBackend() if face_detector == "dlib" else None
        self.device = device
        self.face_detector = face_detector
        self.flip_input = flip_input
        self._fa = face_alignment.FaceAlignment(
            face_alignment.LandmarksType.TWO_D,
            device=str(device),
            flip_input=flip_input,
            face_detector="folder" if face_detector == "dlib" else face_detector,
            face_detector_kwargs=detector_kwargs,
            compile=False,  # torch.compile costs minutes on the first call and needs a compiler
            max_batch_size=max_batch_size,
        )

    def __repr__(self) -> str:
        return f"FanBackend(device={self.device}, face_detector={self.face_detector!r}, flip_input={self.flip_input})"

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
        """See `LandmarkBackend.detect`; `start` is unused."""
        check_frames(frames)
        # Moved as uint8 and converted on the device: a quarter of the host-to-GPU traffic at 1080p.
        batch = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).to(torch.float32)
        boxes = None
        if self._boxes is not None:
            boxes = [np.array([np.append(f.box, f.score) for f in faces]).reshape(-1, 5)
                     for faces in self._boxes.detect(frames, start=start)]
        points, _, boxes = self._fa.get_landmarks_from_batch(batch, detected_faces=boxes, return_bboxes=True,
                                                             return_landmark_score=True)
        return [_faces(p, b) for p, b in zip(points, boxes, strict=True)]


def _faces(points: np.ndarray | list, boxes: np.ndarray | list) -> list[Face]:
    """face-alignment's per-image output (all faces' points concatenated, boxes [K, 5]) as `Face`s."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 5)
    if len(points) == 0 or len(boxes) == 0:
        return []
    points = np.asarray(points, np.float64).reshape(len(boxes), NUM_LANDMARKS, 2)
    return [Face(box=b[:4].copy(), score=float(b[4]), landmarks=p) for b, p in zip(boxes, points, strict=True)]
