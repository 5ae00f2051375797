"""`--precision fp32|auto`: which parts of the models may run in reduced precision.

`auto` follows the official code: EG3D's super-resolution blocks run in float16 on CUDA (everything
else, and everything on the CPU and MPS, in float32). `fp32` keeps them in float32 on CUDA too.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import torch

from nvsvideo.errors import UsageError
from nvsvideo.models.triplanenet.model import TriPlaneNet

Precision = Literal["fp32", "auto"]

#: `--precision` values: 'auto' runs the super-resolution in fp16 on CUDA as the official code does.
PRECISIONS: tuple[Precision, ...] = ("fp32", "auto")


def parse_precision(value: str) -> Precision:
    """'auto' or 'fp32' (any case).

    Raises:
        UsageError: anything else.
    """
    text = value.strip().lower()
    if text not in PRECISIONS:
        raise UsageError(f"--precision takes auto or fp32, not {value!r}")
    return text  # type: ignore[return-value]


def sr_force_fp32(precision: Precision) -> bool:
    """The `force_fp32` argument of rendering for a precision choice ('fp32' keeps the SR in float32 on CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision == "fp32"


def effective_precision(forced_fp32: bool, device: torch.device) -> str:
    """What actually runs, as recorded with results that depend on it: 'fp32', or 'fp16-superresolution'
    (the official mixed precision, on CUDA only)."""
    return "fp32" if forced_fp32 or device.type != "cuda" else "fp16-superresolution"


def set_precision(model: TriPlaneNet, precision: Precision) -> None:
    """Make every EG3D call of `model` (its inversion renders) run at `precision`."""
    model.render_options = replace(model.render_options, force_fp32=sr_force_fp32(precision))
