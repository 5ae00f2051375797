"""A `rerender` whose model stage is a pass-through: each input crop comes back as its render, nothing is
inverted. What is left is everything the host does around a model (decode, align, crop, compose, encode):
the end-to-end check of the compositing (tests) and the host ceiling (`bench/host.py`). Test double only;
the package never ships it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from nvsvideo.compose.layout import OutputMode
from nvsvideo.compose.resample import image_tensor
from nvsvideo.console import Reporter
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.pipelines import rerender
from nvsvideo.pipelines.align import AlignConfig
from nvsvideo.pipelines.invert import InvertConfig

from tiny_models import tiny_triplanenet


def pass_through_render(model: Any, faces: Any, config: Any, invert_config: Any, keeper: Any, device: torch.device,
                        fps: float) -> dict[int, tuple]:
    """`render_faces`' stand-in: each input crop is its own render, on the device as a render is."""
    return {face.index: (image_tensor(face.crop, device), face.crop, None, np.zeros((1, 1, 3), np.uint8))
            for face in faces}


def nothing_to_invert(model: Any, faces: list, *args: Any) -> tuple[list, list]:
    """`invert_missing`'s stand-in: no inversion, nothing stored."""
    return faces, []


def pillow_functions(pil: ModuleType) -> dict[str, Callable[..., Any]]:
    """`crop_face` and the paste layout of `compose_frame` as they were before issue 19 (tests/pil_compose.py),
    in the pipeline's tensor interface, composing RGB frames."""

    def crop_face(frame: torch.Tensor, tf: Any) -> torch.Tensor:
        return torch.from_numpy(pil.pil_crop(frame.numpy(), tf))

    def compose_frame(mode: OutputMode, frame: torch.Tensor, transform: Any, novel: Any, **kwargs: Any) -> torch.Tensor:
        assert mode is OutputMode.PASTE, mode
        if transform is not None:
            frame.copy_(torch.from_numpy(pil.pil_paste_back(frame.numpy(), novel.numpy(), transform)))
        return frame

    def yuv_kept(info: Any) -> bool:
        return False  # it cut and composed RGB frames, which the writer converted to 4:2:0

    return {"crop_face": crop_face, "compose_frame": compose_frame, "yuv_kept": yuv_kept}


@contextlib.contextmanager
def patched(module: ModuleType, replacements: dict[str, Any]) -> Iterator[None]:
    """Attributes of `module` replaced while the context is open."""
    saved = {name: getattr(module, name) for name in replacements}
    for name, value in replacements.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def run_pass_through(video: Path, output: Path, cache_dir: Path, backend: LandmarkBackend,
                     config: rerender.RerenderConfig, functions: dict[str, Callable[..., Any]] | None = None,
                     align_config: AlignConfig | None = None) -> dict[str, Any]:
    """`run_rerender` with the pass-through model (CPU), optionally with other crop/compose functions."""
    with patched(rerender, {"render_faces": pass_through_render, "invert_missing": nothing_to_invert,
                            **(functions or {})}):
        return rerender.run_rerender(video, output, cache_dir, tiny_triplanenet("v2"), {}, backend,
                                     align_config or AlignConfig(), InvertConfig(), config,
                                     device=torch.device("cpu"), reporter=Reporter(quiet=True))
