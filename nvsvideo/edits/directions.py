"""Linear latent directions (InterFaceGAN style) for EG3D: `w' = w + alpha * d`.

Directions found in the wild come in several shapes; all are normalised to d [14, 512]:

    [512], [1, 512]              one w direction, the same on every layer (InterFaceGAN boundaries)
    [14, 512], [1, 14, 512]      per-layer w+ direction (GOAE's `ws_edit/*.npy`)
    [7168], [1, 7168]            flattened w+ (PREIM3D's `interfacegan_directions/*.pt`)

Magnitudes are kept as stored: their scales differ between sources (GOAE builds the magnitude
in, PREIM3D's are used with alpha around 10), so `--strength` means "alpha" for the file at hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from nvsvideo.edits.loading import read_numpy_file, read_torch_file
from nvsvideo.edits.wplus import NUM_WS, W_DIM, check_wplus
from nvsvideo.errors import WeightsError

#: w+ depth of the 2D StyleGAN2-FFHQ-1024 generator, whose directions do not fit EG3D.
_STYLEGAN2_NUM_WS = 18
_ACCEPTED_SHAPES = "[512], [1,512], [14,512], [1,14,512], [7168] or [1,7168]"


def direction_from_tensor(direction: Tensor, *, source: str) -> Tensor:
    """Normalise a direction of any accepted shape to one w+ direction.

    Args:
        direction: a tensor of one of the module docstring's shapes.
        source: the file, for messages.

    Returns:
        float32 [14, 512] on the CPU.

    Raises:
        WeightsError: unknown shape, a StyleGAN2 (18-layer) direction, or non-finite values.
    """
    shape = tuple(direction.shape)
    # A leading batch axis of one is how most tools save a single direction.
    core = shape[1:] if len(shape) > 1 and shape[0] == 1 else shape
    if core == (W_DIM,):
        result = direction.reshape(1, W_DIM).expand(NUM_WS, W_DIM)
    elif core in ((NUM_WS, W_DIM), (NUM_WS * W_DIM,)):
        result = direction.reshape(NUM_WS, W_DIM)
    elif core in ((_STYLEGAN2_NUM_WS, W_DIM), (_STYLEGAN2_NUM_WS * W_DIM,)):
        raise WeightsError(
            f"{source} is an 18-layer direction for the 2D StyleGAN2 generator, not for EG3D's 14 layers; "
            "use a direction computed for EG3D"
        )
    else:
        raise WeightsError(f"{source} holds a tensor of shape {list(shape)}; a latent direction must be {_ACCEPTED_SHAPES}")
    if not direction.is_floating_point():
        raise WeightsError(f"{source} holds {direction.dtype} values; a latent direction must be floating point")
    result = result.to(dtype=torch.float32, device="cpu").contiguous()
    if not bool(torch.isfinite(result).all()):
        raise WeightsError(f"{source} has non-finite values (NaN or infinity)")
    return result


def load_direction(path: Path) -> Tensor:
    """Read a direction from `.npy` or a `.pt` holding one tensor.

    Returns:
        float32 [14, 512] on the CPU.

    Raises:
        WeightsError: unreadable, unsafe, wrong content or shape.
    """
    source = str(path)
    if path.suffix.lower() == ".npy":
        array = read_numpy_file(path, what="direction")
        if not isinstance(array, np.ndarray):
            raise WeightsError(f"{source} is not a single .npy array")
        return direction_from_tensor(torch.from_numpy(array), source=source)
    content = read_torch_file(path, what="direction")
    if not isinstance(content, Tensor):
        raise WeightsError(f"{source} holds a {type(content).__name__}; a direction file must hold one tensor")
    return direction_from_tensor(content, source=source)


class LinearDirection(nn.Module):
    """A fixed w+ direction; its unit delta is the direction itself on every frame."""

    kind: ClassVar[str] = "direction"

    def __init__(
        self,
        direction: Tensor,  # [14, 512] w+ direction, as returned by `load_direction`.
    ) -> None:
        super().__init__()
        assert tuple(direction.shape) == (NUM_WS, W_DIM), list(direction.shape)
        self.register_buffer("direction", direction.detach().clone())

    def unit_delta(self, ws: Tensor) -> Tensor:
        """The change strength 1 makes: d broadcast to [B, 14, 512]."""
        check_wplus(ws)
        return self.direction.to(ws.dtype).expand_as(ws)

    def extra_repr(self) -> str:
        norms = self.direction.norm(dim=1)
        return f"layer_norm_min={float(norms.min()):.4g}, layer_norm_max={float(norms.max()):.4g}"

