"""The types every landmark backend and every consumer of landmarks share.

This module imports nothing else from `nvsvideo.face`, so backends, the backend factory
(`nvsvideo.face.landmarks`) and the tracker can all import it without an import circle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NUM_LANDMARKS = 68


@dataclass(frozen=True, eq=False)
class Face:
    """One face found in one frame."""

    box: np.ndarray
    """float64 [4]: x1, y1, x2, y2 in frame pixels."""
    score: float
    """Detector confidence; its scale depends on the backend (dlib HOG margin, S3FD probability, 1 for files)."""
    landmarks: np.ndarray
    """float64 [68, 2]: iBUG 68-point layout, (x, y) in frame pixels."""
    mesh: np.ndarray | None = None
    """float64 [468, 3] from the mesh backend: MediaPipe's face mesh, x, y in frame pixels, z on the x
    scale (smaller = nearer the camera); None from 2D backends."""
    crop_points: np.ndarray | None = None
    """float64 [5, 2] the official crop's five points (eye centres, nose tip, mouth corners, image order) where
    the backend reads them as the official preprocessing does (the mesh backend: MTCNN's); None: the crop takes
    them from `landmarks`."""

    def __post_init__(self) -> None:
        assert self.box.shape == (4,), self.box.shape
        assert self.landmarks.shape == (NUM_LANDMARKS, 2), self.landmarks.shape
        assert self.mesh is None or self.mesh.shape == (468, 3), self.mesh.shape
        assert self.crop_points is None or self.crop_points.shape == (5, 2), self.crop_points.shape

    @property
    def area(self) -> float:
        """Box area in pixels², the 'size' that orders faces."""
        return float(max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0))


def faces_by_size(faces: Sequence[Face]) -> list[Face]:
    """Faces sorted largest box first: the order `--face-index` counts in (0 = largest)."""
    return sorted(faces, key=lambda f: f.area, reverse=True)


def check_frames(frames: np.ndarray) -> None:
    """Assert the batch layout every backend expects: uint8 [B, H, W, 3]."""
    assert frames.ndim == 4 and frames.shape[3] == 3 and frames.dtype == np.uint8, (frames.shape, frames.dtype)
