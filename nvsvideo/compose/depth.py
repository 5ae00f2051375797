"""Depth maps to colour video frames (`rerender --depth`), without matplotlib.

The depth EG3D renders is the expected distance along each ray from the camera centre, in world
units, between the ray bounds (2.25 and 3.3 for FFHQ). Normalising each frame by its own min/max
would make the colours pump as the head moves; we map a fixed near/far range instead (the ray
bounds by default), so one colour means one distance in every frame. Near is bright (yellow),
far is dark (purple); the empty background, which EG3D pushes to the far bound, is dark.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Ray bounds of the FFHQ checkpoints (`rendering_kwargs` ray_start / ray_end).
FFHQ_RAY_START = 2.25
FFHQ_RAY_END = 3.3

#: Viridis at eleven evenly spaced points (sRGB 0-255); linear interpolation between them stays
#: within a few levels of the full 256-entry table.
_VIRIDIS_ANCHORS = np.array([
    [68, 1, 84], [72, 36, 117], [65, 68, 135], [53, 95, 141], [42, 120, 142], [33, 145, 140],
    [34, 168, 132], [68, 191, 112], [122, 209, 81], [189, 223, 38], [253, 231, 37],
], dtype=np.float64)


def colormap_table(anchors: np.ndarray = _VIRIDIS_ANCHORS, entries: int = 256) -> np.ndarray:
    """A lookup table interpolated linearly between evenly spaced anchor colours.

    Args:
        anchors: [K, 3] colours, K >= 2, from the low to the high end.
        entries: table length.

    Returns:
        uint8 [entries, 3].
    """
    positions = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, entries)
    table = np.stack([np.interp(t, positions, anchors[:, c]) for c in range(3)], axis=-1)
    return np.rint(table).astype(np.uint8)


def colorize_depth(
    depth: torch.Tensor,
    near: float = FFHQ_RAY_START,
    far: float = FFHQ_RAY_END,
    size: int | None = None,
    table: np.ndarray | None = None,
) -> np.ndarray:
    """Colour-map depth with a fixed range, so colours do not flicker between frames.

    Args:
        depth: [B, 1, N, N] ray distances.
        near: distance drawn brightest; nearer values clamp to it.
        far: distance drawn darkest; farther values (and NaN) clamp to it.
        size: output side; the depth is resized (bilinear) before colouring; None keeps N.
        table: uint8 [L, 3] colour table from dark to bright; viridis when None.

    Returns:
        uint8 [B, size, size, 3] RGB frames.
    """
    assert depth.ndim == 4 and depth.shape[1] == 1, depth.shape
    if not far > near:
        raise ValueError(f"the depth range needs far > near, got near={near}, far={far}")
    lut = torch.from_numpy(colormap_table() if table is None else table)
    d = depth.detach().float()
    if size is not None and size != d.shape[-1]:
        d = F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False)
    closeness = ((far - d.nan_to_num(nan=far)) / (far - near)).clamp(0.0, 1.0)
    index = (closeness * (len(lut) - 1)).round().long()[:, 0].cpu()
    return lut[index].numpy()


def depth_to_rgb(depth: torch.Tensor, rendering_kwargs: Mapping[str, Any] | None = None,
                 size: int | None = None) -> np.ndarray:
    """`colorize_depth` over the generator's own ray bounds (FFHQ's 2.25-3.3 when not given).

    Args:
        depth: [B, 1, N, N] ray distances.
        rendering_kwargs: the checkpoint's rendering options (ray_start, ray_end are read).
        size: output side; None keeps N.

    Returns:
        uint8 [B, size, size, 3].
    """
    kwargs = rendering_kwargs or {}
    return colorize_depth(depth, near=float(kwargs.get("ray_start", FFHQ_RAY_START)),
                          far=float(kwargs.get("ray_end", FFHQ_RAY_END)), size=size)
