"""The Lanczos resample in its straightforward form, as it was before the CPU speed-up of issue 19: the
whole region converted to float32 at once, the image transposed for the x pass, one matrix product per
block of outputs on the whole intermediate. `nvsvideo.compose.resample` must equal it bit for bit: the
same taps, windows and products, streamed in small pieces instead."""

from __future__ import annotations

import math

import numpy as np
import torch

from nvsvideo.compose.resample import BLOCK, axis_taps, y_first


def reference_band(start: float, stop: float, n_out: int, n_in: int, *, black_outside: bool
                   ) -> tuple[int, int, list[int], torch.Tensor]:
    """(first source index, source pixels read, each block's window start, float32 [blocks, BLOCK, window])."""
    taps, weights = axis_taps(start, stop, n_out, n_in, black_outside=black_outside)
    blocks = math.ceil(n_out / BLOCK)
    pad = ((0, blocks * BLOCK - n_out), (0, 0))
    taps, weights = np.pad(taps.clip(0, n_in - 1), pad, mode="edge"), np.pad(weights, pad)
    lo, hi = taps.reshape(blocks, -1).min(1), taps.reshape(blocks, -1).max(1) + 1
    first, n_read = int(lo.min()), int(hi.max() - lo.min())
    window = int((hi - lo).max())
    lo = np.minimum(lo - first, n_read - window)
    dense = np.zeros((blocks * BLOCK, window))
    rows = np.arange(blocks * BLOCK)[:, None].repeat(taps.shape[1], 1)
    np.add.at(dense, (rows, taps - first - lo[rows // BLOCK]), weights)  # taps clipped onto one pixel add up
    return first, n_read, [int(v) for v in lo], torch.from_numpy(dense.astype(np.float32).reshape(blocks, BLOCK, -1))


def _pass(starts: list[int], weights: torch.Tensor, n_out: int, x: torch.Tensor) -> torch.Tensor:
    """weights times x [n_read, M] along its first axis, rounded to whole levels in [0, 255]: [n_out, M]."""
    window = weights.shape[2]
    out = torch.cat([torch.mm(weights[b], x[start:start + window]) for b, start in enumerate(starts)])
    return out[:n_out].add_(0.5).floor_().clamp_(0.0, 255.0)


def reference_resample(image: torch.Tensor, box: tuple[float, float, float, float], size: tuple[int, int], *,
                       black_outside: bool = True) -> torch.Tensor:
    """`nvsvideo.compose.resample.resample` (float32 [height, width, C]) on the CPU."""
    h, w, c = image.shape
    x0, y0, x1, y1 = box
    cx, nx, sx, wx = reference_band(x0, x1, size[0], w, black_outside=black_outside)
    cy, ny, sy, wy = reference_band(y0, y1, size[1], h, black_outside=black_outside)
    region = image[cy:cy + ny, cx:cx + nx].to(torch.float32)
    if y_first(box, size, (h, w), black_outside=black_outside):
        down = _pass(sy, wy, size[1], region.reshape(ny, -1)).view(size[1], nx, c)
        across = _pass(sx, wx, size[0], down.transpose(0, 1).reshape(nx, -1)).view(size[0], size[1], c)
        return across.transpose(0, 1).contiguous()
    across = _pass(sx, wx, size[0], region.transpose(0, 1).reshape(nx, -1)).view(size[0], ny, c)
    return _pass(sy, wy, size[1], across.transpose(0, 1).reshape(ny, -1)).view(size[1], size[0], c)
