"""One interface for every 68-point landmark backend, and the function that picks one.

A backend turns a batch of RGB frames into, per frame, the faces it found: a box, a confidence and
68 landmarks in the iBUG 300-W order (0-based: 0-16 jaw, 17-26 brows, 27-35 nose, 36-41 and 42-47
eyes, 48-67 mouth), in the pixel coordinates of the frame (x right, y down, pixel centres at integers).
dlib's predictor and face-alignment's FAN share this layout, so everything downstream (crop, pose)
has a single code path; the `mesh` backend maps MediaPipe's 468 points onto it and also hands over the
3D mesh itself (`Face.mesh`), from which the head pose is fitted. The shared types live in `nvsvideo.face.types`, which the backends import;
this module imports the backends (lazily), so the imports run one way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from nvsvideo.errors import UsageError
from nvsvideo.face.types import Face
from nvsvideo.weights.registry import resolve_weights_dir

BACKEND_NAMES = ("auto", "mesh", "fan", "dlib", "file")


class LandmarkBackend(Protocol):
    """What every backend provides."""

    name: str

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
        """Find faces and their 68 landmarks in a batch of frames.

        Args:
            frames: uint8 [B, H, W, 3] RGB.
            start: index of `frames[0]` in the video (or image folder). Backends that read per-frame
                data from a file look it up by this index; backends that follow faces from frame to
                frame treat a batch that does not continue the previous one as a new shot.

        Returns:
            B lists of faces, in no particular order; an empty list for a frame without a face.
        """
        ...


@runtime_checkable
class IndexedFaces(Protocol):
    """A backend that may give frames' faces without their pixels (a landmark file without boxes)."""

    reads_pixels: bool
    """Whether it needs the frames after all (`detect`); else `faces_at` serves."""

    def faces_at(self, indices: list[int]) -> list[list[Face]]:
        """The faces of the frames `indices` (0-based in the video), without their pixels."""
        ...


def pixel_free(backend: LandmarkBackend) -> IndexedFaces | None:
    """`backend` as an `IndexedFaces` when it needs no pixels (a pipeline may then decode no RGB frames for it),
    else None."""
    return backend if isinstance(backend, IndexedFaces) and not backend.reads_pixels else None


@dataclass(frozen=True)
class LandmarkConfig:
    """How to find landmarks (the `--landmarks` family of options)."""

    backend: str = "auto"
    """One of `BACKEND_NAMES`: `auto` takes `mesh` when its files are in the weights folder, else `fan` when it is
    installed with its weights, else `dlib`."""
    weights_dir: Path | None = None
    """Weights folder of the `mesh` backend's files; None: `$NVSVIDEO_HOME`, else `~/.cache/nvsvideo`."""
    fan_detector: str = "sfd"
    """Face detector used by the `fan` backend (see `fan_backend.FAN_DETECTORS`)."""
    fan_flip: bool = False
    """Average FAN's heatmaps with those of the mirrored crop: slightly steadier, twice the cost."""
    landmarks_file: Path | None = None
    """JSON file of per-frame landmarks or boxes, for the `file` backend (format in `file_backend`)."""
    detect_size: int = 640
    """dlib: faces are detected on the frame reduced by an integer factor to about this longest side
    (landmarks are still fitted at full resolution); 0 detects at full resolution."""
    redetect_every: int = 5
    """dlib: run the full-frame detector on every this-many-th frame; in between, faces are followed from
    their previous landmarks and checked by the detector near them (1 = detect on every frame)."""


def auto_fallback_note(config: LandmarkConfig) -> str | None:
    """What `auto` gives up when the mesh backend's files are missing (it then uses fan or dlib), or None."""
    from nvsvideo.face.backends import mesh_backend

    if config.backend != "auto" or mesh_backend.mesh_ready(resolve_weights_dir(config.weights_dir, os.environ)):
        return None
    return ("the mesh landmark files are missing, so --landmarks auto falls back to fan or dlib (less accurate "
            "cameras and crops; dlib's model excludes commercial use): run `nvsvideo weights fetch mesh`")


def create_backend(config: LandmarkConfig, device: torch.device) -> LandmarkBackend:
    """Build the backend `config` asks for.

    Args:
        config: backend choice and its options.
        device: where the `mesh` and `fan` backends run (dlib and file backends run on the CPU).

    Raises:
        UsageError: unknown backend name, or `file` without a landmarks file.
        WeightsError: `mesh` or `fan` was asked for explicitly but its weights are missing or wrong.
        InputError: the landmarks file cannot be read.
    """
    # Backends import their heavy optional dependencies lazily, so a missing extra fails only when chosen.
    from nvsvideo.face.backends import dlib_backend, fan_backend, file_backend, mesh_backend

    name = config.backend
    if name not in BACKEND_NAMES:
        raise UsageError(f"unknown landmark backend '{name}': choose one of {', '.join(BACKEND_NAMES)}")
    weights_dir = resolve_weights_dir(config.weights_dir, os.environ)
    if name == "auto":
        if mesh_backend.mesh_ready(weights_dir):
            name = "mesh"
        else:
            name = "fan" if fan_backend.fan_ready(config.fan_detector) else "dlib"
    if name == "mesh":
        return mesh_backend.MeshBackend(weights_dir, device)
    if name == "fan":
        return fan_backend.FanBackend(device=device, face_detector=config.fan_detector, flip_input=config.fan_flip)
    if name == "dlib":
        return dlib_backend.DlibBackend(detect_size=config.detect_size, redetect_every=config.redetect_every)
    if config.landmarks_file is None:
        raise UsageError("the 'file' landmark backend needs a landmarks file: pass --landmarks-file PATH")
    return file_backend.FileBackend.from_json(config.landmarks_file)

