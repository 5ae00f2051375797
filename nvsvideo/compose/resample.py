"""Lanczos-3 resampling of a rectangle of an image as two banded matrix products, on any torch device.

The crop out of the frame, the paste-back patch and the layout resizes all resample an axis-aligned
rectangle, so each axis is one matrix of filter weights and the image is multiplied by them, one axis
after the other. The matrices are banded: an output pixel reads only the few source pixels under its
filter. They are cut into blocks of `BLOCK` output pixels, each with the source window it reads, and
applied as matrix products (per block on views on the CPU, gathered into one batched product on a GPU:
`nvsvideo.models.kernels`): dense-matrix speed at a few times the minimal work, not the source width times.

The weights are Pillow's (`ImagingResample`), so results match `Image.resize(..., LANCZOS, box=...)`
within one 8-bit level nearly everywhere: the same taps, window, normalisation and whole-level
intermediate, outside-the-image pixels black; float32 sums instead of Pillow's fixed point (a tie
rounded the other way in the intermediate can reach two levels, a few pixels per million). The pass order
matters where an intermediate overshoots [0, 255] (sharp edges, the black outside the frame), so it
follows Pillow's choice as far as it is known (`y_first`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from nvsvideo.models.kernels import kernels_for

#: Lobes of the Lanczos window (Pillow's LANCZOS filter).
LANCZOS_LOBES = 3
#: Share of the usable CPUs the compositing ops of one pipeline thread use on the CPU (`compositing_threads`).
CPU_SHARE = 4
#: Output pixels per block of a banded matrix: smaller blocks read fewer unused source pixels, larger
#: ones make fewer, larger products; 16 measured fastest for 1080p face crops on 2 cores.
BLOCK = 16


def compositing_threads(usable_cpus: int) -> int:
    """Torch threads for the crop and compositing ops on the CPU: a quarter of the usable CPUs, at least one.

    They run in the pipeline's decode thread (crops) and model thread (compositing, between model calls),
    beside the model, the other stages and the codecs' own threads: with more threads, OpenMP teams wait on
    each other's cores, and on a loaded 2-core machine a 2-thread crop measured 8 to 12x slower than a
    1-thread one.
    """
    return max(1, usable_cpus // CPU_SHARE)


@contextlib.contextmanager
def cpu_threads(device: torch.device) -> Iterator[None]:
    """Run the enclosed torch ops with `compositing_threads` threads when on the CPU.

    torch's thread count is OpenMP's, kept per calling thread: the other stages keep theirs.
    """
    from nvsvideo.video.reader import codec_threads

    before = torch.get_num_threads()
    wanted = compositing_threads(codec_threads())
    if device.type != "cpu" or wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's Lanczos-3 kernel: sinc(x)·sinc(x/3) on [-3, 3), 0 elsewhere (float64, any shape)."""
    return np.where((x >= -LANCZOS_LOBES) & (x < LANCZOS_LOBES), np.sinc(x) * np.sinc(x / LANCZOS_LOBES), 0.0)


def axis_taps(start: float, stop: float, n_out: int, n_in: int, *, black_outside: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
    """Filter taps of one axis: source span [start, stop) (pixel corners) resampled to `n_out` pixels.

    Output pixel k is centred on c = start + (k + 1/2)·scale, scale = (stop - start) / n_out; it reads
    the source pixels i with floor(c - r + 1/2) <= i < floor(c + r + 1/2), r = 3·max(scale, 1), weighted
    by lanczos((i - c + 1/2) / max(scale, 1)) and normalised to sum 1. Pixels outside [0, n_in) are
    black (`black_outside`: their weights are zeroed), or do not exist (their weights are dropped before
    normalising, as Pillow resizes a whole image).

    Returns:
        (int64 [n_out, T] source indices, float64 [n_out, T] their weights); unused taps weigh 0.
    """
    assert stop > start and n_out >= 1 and n_in >= 1, (start, stop, n_out, n_in)
    scale = (stop - start) / n_out
    stretch = max(scale, 1.0)
    reach = LANCZOS_LOBES * stretch
    centre = start + (np.arange(n_out) + 0.5) * scale
    first = np.floor(centre - reach + 0.5).astype(np.int64)
    end = np.floor(centre + reach + 0.5).astype(np.int64)
    taps = first[:, None] + np.arange(int((end - first).max()))[None]
    weights = np.where(taps < end[:, None], lanczos((taps - centre[:, None] + 0.5) / stretch), 0.0)
    inside = (taps >= 0) & (taps < n_in)
    if not black_outside:
        weights = np.where(inside, weights, 0.0)
    weights /= weights.sum(1, keepdims=True)
    return taps, np.where(inside, weights, 0.0)


@dataclass(frozen=True)
class BandedWeights:
    """One axis's weights cut into blocks of `BLOCK` outputs, each with the contiguous source window it reads."""

    first: int
    """Source index the windows are counted from."""
    n_read: int
    """Source pixels from `first` on that some output reads."""
    n_out: int
    """Output pixels."""
    weights: torch.Tensor
    """float32 [blocks, BLOCK, window]; rows past `n_out` are zero."""
    starts: tuple[int, ...]
    """Each block's first source row, relative to `first`."""


def axis_band(start: float, stop: float, n_out: int, n_in: int, device: torch.device, *,
              black_outside: bool = True) -> BandedWeights:
    """`axis_taps` as `BandedWeights` on `device`."""
    taps, weights = axis_taps(start, stop, n_out, n_in, black_outside=black_outside)
    blocks = math.ceil(n_out / BLOCK)
    pad = ((0, blocks * BLOCK - n_out), (0, 0))
    # Taps outside the source weigh 0: clipping them into it keeps every window inside the source.
    taps, weights = np.pad(taps.clip(0, n_in - 1), pad, mode="edge"), np.pad(weights, pad)
    per_block = taps.reshape(blocks, -1)
    lo, hi = per_block.min(1), per_block.max(1) + 1
    first, n_read = int(lo.min()), int(hi.max() - lo.min())
    window = int((hi - lo).max())
    lo = np.minimum(lo - first, n_read - window)
    block_of_row = np.repeat(np.arange(blocks), BLOCK)
    columns = taps - first - lo[block_of_row, None]
    # bincount adds the weights of taps clipped onto one source pixel instead of keeping only one of them.
    flat = (np.arange(blocks * BLOCK)[:, None] * window + columns).reshape(-1)
    dense = np.bincount(flat, weights.reshape(-1), minlength=blocks * BLOCK * window)
    return BandedWeights(first=first, n_read=n_read, n_out=n_out,
                         weights=torch.from_numpy(dense.astype(np.float32).reshape(blocks, BLOCK, window)).to(device),
                         starts=tuple(int(v) for v in lo))


def apply_banded(band: BandedWeights, x: torch.Tensor) -> torch.Tensor:
    """The weights times x along x's first axis. x: float32 [band.n_read, M]; returns [band.n_out, M].

    The variant is `kernels_for(x.device).resample`; both compute the same products.
    """
    blocks, _, window = band.weights.shape
    if kernels_for(x.device).resample == "gathered":
        rows = torch.tensor(band.starts, device=x.device)[:, None] + torch.arange(window, device=x.device)
        windows = x.index_select(0, rows.reshape(-1)).view(blocks, window, x.shape[1])
        return torch.bmm(band.weights, windows).view(blocks * BLOCK, x.shape[1])[:band.n_out]
    out = x.new_empty((blocks * BLOCK, x.shape[1]))
    for b, start in enumerate(band.starts):
        torch.mm(band.weights[b], x[start:start + window], out=out[b * BLOCK:(b + 1) * BLOCK])
    return out[:band.n_out]


def resample(image: torch.Tensor, box: tuple[float, float, float, float], size: tuple[int, int], *,
             black_outside: bool = True) -> torch.Tensor:
    """Lanczos-resample the rectangle `box` of an image to `size`.

    Only the source pixels under the filters are read, so the cost does not depend on the image size.

    Args:
        image: [H, W, C] uint8 or float, on any device.
        box: (x0, y0, x1, y1) in pixel-corner coordinates; may leave the image.
        size: output (width, height).
        black_outside: the image is surrounded by black (a crop that leaves the frame); else filters
            are cut at the image's edges and renormalised (a whole-image resize, as Pillow's).

    Returns:
        float32 [height, width, C] on the image's device: whole levels in [0, 255], as Pillow's.
    """
    assert image.ndim == 3, image.shape
    h, w, c = image.shape
    x0, y0, x1, y1 = box
    columns = axis_band(x0, x1, size[0], w, image.device, black_outside=black_outside)
    rows = axis_band(y0, y1, size[1], h, image.device, black_outside=black_outside)
    region = image[rows.first:rows.first + rows.n_read, columns.first:columns.first + columns.n_read]
    region = region.to(torch.float32)
    # The intermediate is rounded to whole levels as Pillow's 8-bit one is. A pass runs along the matrix
    # rows, so the x pass reads the image transposed (converted first: transposing floats is faster).
    if y_first(box, size, (h, w), black_outside=black_outside):
        down = _pass(rows, region.reshape(rows.n_read, -1)).view(size[1], columns.n_read, c)
        return _pass(columns, down.transpose(0, 1).reshape(columns.n_read, -1)).view(size[0], size[1], c).transpose(0, 1)
    across = _pass(columns, region.transpose(0, 1).reshape(columns.n_read, -1)).view(size[0], rows.n_read, c)
    return _pass(rows, across.transpose(0, 1).reshape(rows.n_read, -1)).view(size[1], size[0], c)


def y_first(box: tuple[float, float, float, float], size: tuple[int, int], image_hw: tuple[int, int], *,
            black_outside: bool) -> bool:
    """Whether Pillow resamples along y first, as far as probing Pillow 13 found: it picks the cheaper order.

    This cost model matched its choice on whole images of many shapes and on most random rectangles (not
    all: a few strong downscales run x first against it). Its cost of x first: the rows the y filters read times the output width times the x filter's taps, plus
    the y pass; of y first: the output height times the width of the image it is handed times the y taps,
    plus the x pass; x first on a tie. It is handed the whole image in a whole-image resize, and in a
    crop that may leave the frame the window the crop cut: the rectangle's whole-pixel bounds widened by
    the filter's reach and one pixel on every side.
    """
    x0, y0, x1, y1 = box
    scale_x, scale_y = (x1 - x0) / size[0], (y1 - y0) / size[1]
    reach_y = LANCZOS_LOBES * max(scale_y, 1.0)
    taps_x = 2 * math.ceil(LANCZOS_LOBES * max(scale_x, 1.0)) + 1
    taps_y = 2 * math.ceil(reach_y) + 1
    first = math.floor(y0 + 0.5 * scale_y - reach_y + 0.5)
    last = math.floor(y0 + (size[1] - 0.5) * scale_y + reach_y + 0.5)
    if black_outside:
        margin = math.ceil(LANCZOS_LOBES * max(1.0, scale_x, scale_y)) + 1
        rows, width = last - first, math.ceil(x1) - math.floor(x0) + 2 * margin
    else:
        rows, width = min(last, image_hw[0]) - max(first, 0), image_hw[1]
    x_cost = rows * size[0] * taps_x + size[1] * size[0] * taps_y
    y_cost = size[1] * width * taps_y + size[1] * size[0] * taps_x
    return y_cost < x_cost


def _pass(band: BandedWeights, x: torch.Tensor) -> torch.Tensor:
    """One resampling pass, rounded to whole levels in [0, 255]."""
    return apply_banded(band, x).add_(0.5).floor_().clamp_(0.0, 255.0)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """`resample`'s output (whole levels in [0, 255] already) as a contiguous uint8 tensor."""
    return image.to(torch.uint8).contiguous()


def image_tensor(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A numpy image as a tensor on `device`; on the CPU it shares the array's memory (no copy).

    A read-only array (a Pillow or broadcast view) is shared too, for reading: torch would only warn.
    """
    if not array.flags.writeable:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(array).to(device)
    return torch.from_numpy(array).to(device)
