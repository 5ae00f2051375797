"""Deep3DFaceRecon_pytorch checkpoints (`epoch_20.pth`), read as data only.

The official file is `torch.save({'net_recon': state_dict})`: torchvision ResNet-50 names under `backbone.`
(no `fc`), then `final_layers.0..6`. It is float32; float16 copies (half the size) are accepted too and
widened to float32, which is exact. Names and shapes must match the network exactly (the official loader is
strict too): a file of another network would otherwise give plausible-looking but meaningless cameras.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nvsvideo.errors import WeightsError
from nvsvideo.models.deep3d.network import ReconNet
from nvsvideo.torchfile import load_weights_only

#: The key of the network's state dict in the official checkpoint.
STATE_KEY = "net_recon"


def layout_problems(obj: Any) -> list[str]:
    """How a loaded checkpoint differs from the official layout, as short phrases (empty when it matches)."""
    from nvsvideo.weights.verify import TensorSpec, compare_shapes

    state = obj.get(STATE_KEY) if isinstance(obj, Mapping) else None
    if not isinstance(state, Mapping):
        return [f"no '{STATE_KEY}' state dict (not a Deep3DFaceRecon checkpoint)"]
    expected = [TensorSpec(name, tuple(t.shape), str(t.dtype)) for name, t in _reference_state().items()]
    shapes = {name: tuple(t.shape) for name, t in state.items() if isinstance(t, torch.Tensor)}
    problems = compare_shapes(shapes, expected)
    if len(shapes) != len(state):
        problems.append("entries that are not tensors")
    floats = {t.dtype for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point()}
    if floats - {torch.float16, torch.float32}:
        problems.append(f"tensors of type {sorted(str(d) for d in floats)} (float16 or float32 expected)")
    return problems


def load_recon_net(path: Path, device: torch.device | str = "cpu", hint: str = "") -> ReconNet:
    """The reconstruction network with the weights of `path`, in eval mode on `device`.

    Args:
        path: an official `epoch_20.pth` (float32) or a float16 copy of it.
        device: where the network runs.
        hint: appended to error messages (where to get the right file).

    Raises:
        WeightsError: missing, unreadable, unsafe, or not the official layout.
    """
    suffix = f"; {hint}" if hint else ""
    try:
        obj = load_weights_only(path, what="Deep3DFaceRecon checkpoint")
    except WeightsError as err:
        raise type(err)(f"{err}{suffix}") from None
    problems = layout_problems(obj)
    if problems:
        raise WeightsError(f"Deep3DFaceRecon checkpoint {path} does not match the official network: "
                           f"{'; '.join(problems)}{suffix}")
    net = ReconNet()
    state = {name: t.float() if t.is_floating_point() else t for name, t in obj[STATE_KEY].items()}
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device)


def _reference_state() -> dict[str, torch.Tensor]:
    """The network's parameters and buffers, built without allocating (for names and shapes)."""
    with torch.device("meta"):
        return ReconNet().state_dict()
