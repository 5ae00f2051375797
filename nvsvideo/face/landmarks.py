"""One interface for every 68-point landmark backend, and the function that picks one.

A backend turns a batch of RGB frames into, per frame, the faces it found: a box, a confidence and
68 landmarks in the iBUG 300-W order (0-based: 0-16 jaw, 17-26 brows, 27-35 nose, 36-41 and 42-47
eyes, 48-67 mouth), in the pixel coordinates of the frame (x right, y down, pixel centres at integers).
dlib's predictor and face-alignment's FAN share this layout, so everything downstream (crop, pose)
has a single code path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from nvsvideo.errors import UsageError

NUM_LANDMARKS = 68

BACKEND_NAMES = ("auto", "fan", "dlib", "file")


@dataclass(frozen=True, eq=False)
class Face:
    """One face found in one frame."""

    box: np.ndarray
    """float64 [4]: x1, y1, x2, y2 in frame pixels."""
    score: float
    """Detector confidence; its scale depends on the backend (dlib HOG margin, S3FD probability, 1 for files)."""
    landmarks: np.ndarray
    """float64 [68, 2]: iBUG 68-point layout, (x, y) in frame pixels."""

    def __post_init__(self) -> None:
        assert self.box.shape == (4,), self.box.shape
        assert self.landmarks.shape == (NUM_LANDMARKS, 2), self.landmarks.shape

    @property
    def area(self) -> float:
        """Box area in pixels², the 'size' that orders faces."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def box_of_points(points: np.ndarray) -> np.ndarray:
    """Tight box around points.

    Args:
        points: float [N, 2] (x, y).

    Returns:
        float64 [4]: x1, y1, x2, y2.
    """
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


class LandmarkBackend(Protocol):
    """What every backend provides."""

    name: str

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
        """Find faces and their 68 landmarks in a batch of frames.

        Args:
            frames: uint8 [B, H, W, 3] RGB.
            start: index of `frames[0]` in the video (or image folder); only backends that read
                per-frame data from a file use it.

        Returns:
            B lists of faces, in no particular order; an empty list for a frame without a face.
        """
        ...


def check_frames(frames: np.ndarray) -> None:
    """Assert the batch layout every backend expects: uint8 [B, H, W, 3]."""
    assert frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype == np.uint8, (frames.shape, frames.dtype)


@dataclass(frozen=True)
class LandmarkConfig:
    """How to find landmarks (the `--landmarks` family of options)."""

    backend: str = "auto"
    """One of `BACKEND_NAMES`: `auto` takes `fan` when it is installed and its weights are present, else `dlib`."""
    fan_detector: str = "sfd"
    """Face detector used by the `fan` backend (see `fan_backend.FAN_DETECTORS`)."""
    fan_flip: bool = False
    """Average FAN's heatmaps with those of the mirrored crop: slightly steadier, twice the cost."""
    landmarks_file: Path | None = None
    """JSON file of per-frame landmarks or boxes, for the `file` backend (format in `file_backend`)."""


def create_backend(config: LandmarkConfig, device: torch.device) -> LandmarkBackend:
    """Build the backend `config` asks for.

    Args:
        config: backend choice and its options.
        device: where the `fan` backend runs (dlib and file backends run on the CPU).

    Raises:
        UsageError: unknown backend name, or `file` without a landmarks file.
        WeightsError: `fan` was asked for explicitly but its weights are missing.
        InputError: the landmarks file cannot be read.
    """
    # Backends import their heavy optional dependencies lazily, so a missing extra fails only when chosen.
    from nvsvideo.face.backends import dlib_backend, fan_backend, file_backend

    name = config.backend
    if name not in BACKEND_NAMES:
        raise UsageError(f"unknown landmark backend '{name}': choose one of {', '.join(BACKEND_NAMES)}")
    if name == "auto":
        name = "fan" if fan_backend.fan_ready(config.fan_detector) else "dlib"
    if name == "fan":
        return fan_backend.FanBackend(device=device, face_detector=config.fan_detector, flip_input=config.fan_flip)
    if name == "dlib":
        return dlib_backend.DlibBackend()
    if config.landmarks_file is None:
        raise UsageError("the 'file' landmark backend needs a landmarks file: pass --landmarks-file PATH")
    return file_backend.FileBackend.from_json(config.landmarks_file)


def faces_by_size(faces: Sequence[Face]) -> list[Face]:
    """Faces sorted largest box first: the order `--face-index` counts in (0 = largest)."""
    return sorted(faces, key=lambda f: f.area, reverse=True)
