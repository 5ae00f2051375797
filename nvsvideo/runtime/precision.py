"""`--precision fp32|auto`: which parts of the models may run in reduced precision.

`auto` follows the official code: EG3D's super-resolution blocks run in float16 on CUDA (everything
else, and everything on the CPU and MPS, in float32). `fp32` keeps them in float32 on CUDA too.
The choices and their `force_fp32` mapping live with the kernels (`nvsvideo.models.kernels`).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from nvsvideo.errors import UsageError
from nvsvideo.models.kernels import PRECISIONS, Precision, sr_force_fp32
from nvsvideo.models.triplanenet.model import TriPlaneNet


def parse_precision(value: str) -> Precision:
    """'auto' or 'fp32' (any case).

    Raises:
        UsageError: anything else.
    """
    text = value.strip().lower()
    if text not in PRECISIONS:
        raise UsageError(f"--precision takes auto or fp32, not {value!r}")
    return text  # type: ignore[return-value]


def effective_precision(forced_fp32: bool, device: torch.device) -> str:
    """What actually runs, as recorded with results that depend on it: 'fp32', or 'fp16-superresolution'
    (the official mixed precision, on CUDA only)."""
    return "fp32" if forced_fp32 or device.type != "cuda" else "fp16-superresolution"


def set_precision(model: TriPlaneNet, precision: Precision) -> None:
    """Make every EG3D call of `model` (its inversion renders) run at `precision`."""
    model.render_options = replace(model.render_options, force_fp32=sr_force_fp32(precision))
