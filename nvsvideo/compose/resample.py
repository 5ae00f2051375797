"""Lanczos-3 resampling of a rectangle of an image as two banded matrix products, on any torch device.

The crop out of the frame, the paste-back patch and the layout resizes all resample an axis-aligned
rectangle, so each axis is one matrix of filter weights and the image is multiplied by them, one axis
after the other. The matrices are banded: an output pixel reads only the few source pixels under its
filter. They are cut into blocks of `BLOCK` output pixels, each with the source window it reads, and
applied as matrix products (one per block on the CPU, gathered into one batched product on a GPU:
`nvsvideo.models.kernels`): dense-matrix speed at a few times the minimal work, not the source width times.

Both passes read the image where it lies, without transposing it: the y pass multiplies the weights by
rows of pixels (`pass_rows`), the x pass multiplies rows of one channel by the transposed weights
(`pass_last`), so the intermediate is kept as rows of (y, channel) with x contiguous, in uint8 (its whole
levels fit exactly). On the CPU the source is converted to float32 a few blocks' windows at a time: no
temporary is larger than a megabyte or two, where whole-image float copies were fresh memory on every
call and their page faults cost as much as the arithmetic. Each block keeps its window, so every output
pixel is the same float32 sum of the same products, and the BLAS adds them in the same order whatever the
operands' layout: the results are bit-identical to the straightforward form (whole-image copies and
transposes, `tests/resample_reference.py`; tested on random rectangles).

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
    # Taps outside the source weigh 0: clipping them into it keeps every window inside the source. Taps
    # rise along a row and from row to row, so a block reads from its first row's first tap to its last
    # row's last one.
    taps = taps.clip(0, n_in - 1)
    lo = taps[::BLOCK, 0]
    hi = taps[BLOCK - 1::BLOCK, -1] + 1
    if len(hi) < blocks:
        hi = np.append(hi, taps[-1, -1] + 1)
    first, n_read = int(lo[0]), int(hi[-1] - lo[0])
    window = int((hi - lo).max())
    lo = np.minimum(lo - first, n_read - window)
    rows = np.arange(n_out)
    columns = taps - (first + lo[rows // BLOCK, None])
    # bincount adds the weights of taps clipped onto one source pixel instead of keeping only one of them.
    flat = (rows[:, None] * window + columns).reshape(-1)
    dense = np.bincount(flat, weights.reshape(-1), minlength=blocks * BLOCK * window)
    return BandedWeights(first=first, n_read=n_read, n_out=n_out,
                         weights=torch.from_numpy(dense.astype(np.float32).reshape(blocks, BLOCK, window)).to(device),
                         starts=tuple(lo.tolist()))


#: Blocks whose source windows are converted to float32 at once, and whose sums are rounded at once: fewer,
#: larger small ops, and temporaries of one to two megabytes for a 1080p face (measured fastest of 2, 4, 8).
GROUP = 8


def _round_into(sums: torch.Tensor, dst: torch.Tensor) -> None:
    """dst = the sums rounded to whole levels in [0, 255]; dst float or uint8 of the sums' shape, sums overwritten."""
    sums.add_(0.5)
    if dst.dtype != torch.uint8:
        dst.copy_(sums.floor_().clamp_(0.0, 255.0))
        return
    # Conversion to an integer truncates, which is the floor on [0, 255]. torch converts float32 to uint8
    # in a scalar loop: through int16 over contiguous memory it measured 2.4x faster. Where dst interleaves
    # the channels (a whole block of rows of the result), a float copy in dst's order comes first (its
    # loop is faster on 3-element runs); into other strided windows neither helps.
    sums.clamp_(0.0, 255.0)
    if dst.stride(-1) == 1:
        dst.copy_(sums.to(torch.int16))
    elif dst.stride(-2) == 1 and dst.shape[-2] <= 4 and _dense(dst):
        staged = torch.empty_like(dst, dtype=torch.float32)
        dst.copy_(staged.copy_(sums).to(torch.int16))
    else:
        dst.copy_(sums)


def _dense(x: torch.Tensor) -> bool:
    """Whether x's elements fill its memory span without gaps (`empty_like` then keeps its strides)."""
    return 1 + sum((n - 1) * s for n, s in zip(x.shape, x.stride(), strict=True)) == x.numel()


def _window_index(band: BandedWeights, device: torch.device) -> torch.Tensor:
    """The source indices each block reads, block after block: int64 [blocks * window]."""
    window = band.weights.shape[2]
    starts = torch.tensor(band.starts, device=device)
    return (starts[:, None] + torch.arange(window, device=device)).view(-1)


def _groups(band: BandedWeights) -> Iterator[tuple[int, int, int, int]]:
    """(first block, end block, first source index, end source index) of each run of `GROUP` blocks."""
    blocks, _, window = band.weights.shape
    for g in range(0, blocks, GROUP):
        end = min(g + GROUP, blocks)
        yield g, end, band.starts[g], max(band.starts[g:end]) + window


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """x as a contiguous float32 tensor (x itself when it is one)."""
    return x.to(torch.float32, memory_format=torch.contiguous_format).contiguous()


def pass_rows(band: BandedWeights, src: torch.Tensor, dst: torch.Tensor) -> None:
    """One pass along the first axis, rounded to whole levels: dst[i] = sum_j w[i, j] src[j].

    src: [band.n_read, ...], any dtype and strides; dst: [band.n_out, ...], float or uint8, any strides.
    The variant is `kernels_for(src.device).resample`; both compute the same products.
    """
    blocks, _, window = band.weights.shape
    trailing = src.shape[1:]
    if kernels_for(src.device).resample == "gathered":
        windows = _as_float(src.index_select(0, _window_index(band, src.device))).view(blocks, window, -1)
        _round_into(torch.bmm(band.weights, windows).view(blocks * BLOCK, *trailing)[:band.n_out], dst)
        return
    weights = band.weights.unbind(0)
    # The windows are converted a run of blocks at a time into small temporaries: a float copy of the
    # whole source is fresh memory on every call, and its page faults cost more than the arithmetic.
    sums = torch.empty((GROUP * BLOCK, math.prod(trailing)), dtype=torch.float32, device=src.device)
    sums_of_block = sums.split(BLOCK)
    for g, end, lo, hi in _groups(band):
        rows = _as_float(src[lo:hi]).view(hi - lo, -1)
        for b in range(g, end):
            torch.mm(weights[b], rows.narrow(0, band.starts[b] - lo, window), out=sums_of_block[b - g])
        n = min(end * BLOCK, band.n_out) - g * BLOCK
        _round_into(sums[:n].view(n, *trailing), dst[g * BLOCK:g * BLOCK + n])


def pass_last(band: BandedWeights, src: torch.Tensor, dst: torch.Tensor) -> None:
    """One pass along the last axis, rounded to whole levels: dst[..., i] = sum_j w[i, j] src[..., j].

    src: [..., band.n_read], any dtype and strides; dst: [..., band.n_out], float or uint8, any strides.
    The variant is `kernels_for(src.device).resample`; both compute the same products.
    """
    blocks, _, window = band.weights.shape
    leading = src.shape[:-1]
    if kernels_for(src.device).resample == "gathered":
        columns = _as_float(src.index_select(-1, _window_index(band, src.device))).view(-1, blocks, window)
        sums = torch.bmm(columns.transpose(0, 1), band.weights.transpose(1, 2))
        _round_into(sums.transpose(0, 1).reshape(*leading, blocks * BLOCK)[..., :band.n_out], dst)
        return
    if src.stride(-1) != 1:
        # One copy that makes the rows contiguous beats a strided conversion per window (5x slower).
        src = src.contiguous()
    # The blocks transposed and contiguous: measured faster than transposed views.
    weights = band.weights.transpose(1, 2).contiguous().unbind(0)
    sums = torch.empty((math.prod(leading), GROUP * BLOCK), dtype=torch.float32, device=src.device)
    sums_of_block = sums.split(BLOCK, 1)
    for g, end, lo, hi in _groups(band):
        columns = _as_float(src[..., lo:hi]).view(-1, hi - lo)
        for b in range(g, end):
            torch.mm(columns.narrow(1, band.starts[b] - lo, window), weights[b], out=sums_of_block[b - g])
        n = min(end * BLOCK, band.n_out) - g * BLOCK
        _round_into(sums[:, :n].view(*leading, n), dst[..., g * BLOCK:g * BLOCK + n])


def resample(image: torch.Tensor, box: tuple[float, float, float, float], size: tuple[int, int], *,
             black_outside: bool = True, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Lanczos-resample the rectangle `box` of an image to `size`.

    Only the source pixels under the filters are read, so the cost does not depend on the image size.

    Args:
        image: [H, W, C] uint8 or float, on any device.
        box: (x0, y0, x1, y1) in pixel-corner coordinates; may leave the image.
        size: output (width, height).
        black_outside: the image is surrounded by black (a crop that leaves the frame); else filters
            are cut at the image's edges and renormalised (a whole-image resize, as Pillow's).
        dtype: of the result, float32 or uint8.

    Returns:
        [height, width, C] of `dtype` on the image's device: whole levels in [0, 255], as Pillow's.
    """
    assert image.ndim == 3, image.shape
    h, w, c = image.shape
    x0, y0, x1, y1 = box
    columns = axis_band(x0, x1, size[0], w, image.device, black_outside=black_outside)
    rows = axis_band(y0, y1, size[1], h, image.device, black_outside=black_outside)
    region = image[rows.first:rows.first + rows.n_read, columns.first:columns.first + columns.n_read]
    out = torch.empty((size[1], size[0], c), dtype=dtype, device=image.device)
    # The intermediate holds whole levels in [0, 255] (rounded as Pillow's 8-bit one), so uint8 keeps it
    # exactly. Its rows run (y, channel) with x contiguous: what the x pass reads as a matrix.
    if y_first(box, size, (h, w), black_outside=black_outside):
        mid = torch.empty((size[1], c, columns.n_read), dtype=torch.uint8, device=image.device)
        pass_rows(rows, region, mid.permute(0, 2, 1))
        pass_last(columns, mid, out.permute(0, 2, 1))
    else:
        mid = torch.empty((rows.n_read, c, size[0]), dtype=torch.uint8, device=image.device)
        pass_last(columns, region.permute(0, 2, 1), mid)
        pass_rows(rows, mid, out.permute(0, 2, 1))
    return out


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


def image_tensor(array: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """A numpy image as a tensor on `device`; on the CPU it shares the array's memory (no copy).

    A read-only array (a Pillow or broadcast view) is shared too, for reading: torch would only warn.
    """
    if not array.flags.writeable:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(array).to(device)
    return torch.from_numpy(array).to(device)
