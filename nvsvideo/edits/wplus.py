"""EG3D's extended latent space w+: 14 style vectors of 512 channels per frame.

Layers 0-12 drive the tri-plane backbone; layer 13 is the single w the super-resolution
network reads, so anything that moves layer 13 also moves colour and fine texture.
"""

from __future__ import annotations

from torch import Tensor

NUM_WS = 14
W_DIM = 512


def check_wplus(ws: Tensor, name: str = "ws") -> None:
    """Raise `ValueError` unless `ws` is a batch of EG3D w+ codes.

    Args:
        ws: latents, expected [T, 14, 512].
        name: what to call the tensor in the message.
    """
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (NUM_WS, W_DIM):
        raise ValueError(f"{name} must have shape [T, {NUM_WS}, {W_DIM}], got {list(ws.shape)}")
