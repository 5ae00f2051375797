"""Resolve the `--device` option into a torch device, failing loudly rather than falling back."""

from __future__ import annotations

import torch

from nvsvideo.errors import DeviceError
from nvsvideo.validate import check_device


def resolve_device(spec: str = "auto") -> torch.device:
    """Turn `auto|cpu|cuda[:N]|mps` into a `torch.device`.

    `auto` picks CUDA, then MPS, then CPU. An explicitly requested GPU that is missing raises
    `DeviceError` instead of silently running on the CPU (which would be 100x slower).
    """
    spec = spec.strip().lower()
    check_device(spec)
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise DeviceError("device 'mps' was requested but Apple's MPS backend is not available here")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise DeviceError(f"device '{spec}' was requested but this PyTorch build sees no CUDA GPU "
                          f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    index = int(spec.split(":")[1]) if ":" in spec else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device '{spec}' was requested but only {count} CUDA device(s) exist")
    return torch.device("cuda", index)
