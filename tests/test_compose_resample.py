"""Lanczos resampling as banded matrix products (issue 19): hand-checked taps, Pillow's results within one
level, the torch crop and paste-back against the Pillow-based ones they replace, on CPU and GPU.

Float32 sums round an intermediate pixel the other way from Pillow's fixed point at near-ties now and
then; the second pass can carry that one level to two, at a few pixels per million (`within_one`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nvsvideo.compose.resample import (
    BLOCK,
    axis_band,
    axis_taps,
    image_tensor,
    lanczos,
    pass_last,
    pass_rows,
    resample,
)
from nvsvideo.face.crop import CropSquare, apply_crop, crop_box, crop_transform_from_square, paste_back

sys.path.insert(0, str(Path(__file__).parent))
from pil_compose import pil_crop, pil_paste_back, pil_resample  # noqa: E402
from resample_reference import reference_band, reference_resample  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def within_one(got: np.ndarray, want: np.ndarray) -> None:
    """Every pixel within 2 levels, all but a few per million within 1, nearly all equal."""
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 2
    assert (diff > 1).mean() < 1e-5
    assert (diff == 0).mean() > 0.99


def test_lanczos_kernel_values():
    x = np.array([0.0, 0.5, 1.0, 2.0, -3.0, 3.0])
    # sinc(1/2)·sinc(1/6) = (2/pi)·(6/pi)·sin(pi/6) = 6/pi²; zero at the other integers; [-3, 3).
    np.testing.assert_allclose(lanczos(x), [1.0, 6 / np.pi**2, 0.0, 0.0, 0.0, 0.0], atol=1e-15)


def test_taps_of_an_aligned_copy_pick_one_pixel():
    taps, weights = axis_taps(2.0, 7.0, 5, 10)
    picked = taps[np.arange(5), weights.argmax(1)]
    np.testing.assert_array_equal(picked, [2, 3, 4, 5, 6])
    np.testing.assert_allclose(weights.max(1), 1.0)
    np.testing.assert_allclose(np.abs(weights).sum(1), 1.0, atol=1e-12)


def test_halving_reads_twelve_taps_centred_between_two_pixels():
    taps, weights = axis_taps(0.0, 20.0, 10, 20, black_outside=False)
    # Output 5 is centred on 11.0 (corner coordinates); reach 3·2 = 6: pixels floor(5.5) = 5 to 16, at
    # (i - 11 + 1/2) / 2 = -2.75 .. 2.75 filter units, symmetric about pixel 10.5.
    row = weights[5]
    np.testing.assert_array_equal(taps[5][row != 0], np.arange(5, 17))
    np.testing.assert_allclose(row[row != 0], row[row != 0][::-1], atol=1e-15)
    assert row.sum() == pytest.approx(1.0)


def test_black_outside_drops_weights_without_renormalising():
    _, black = axis_taps(-2.0, 3.0, 5, 10)
    _, cut = axis_taps(-2.0, 3.0, 5, 10, black_outside=False)
    assert black[0].sum() < 0.5 and cut[0].sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("start", "stop", "n_out"), [(3.3, 250.7, 37), (-20.0, 140.5, 300), (0.0, 64.0, 64)])
def test_both_passes_round_the_dense_product(start, stop, n_out):
    n_in = 200
    taps, weights = axis_taps(start, stop, n_out, n_in)
    dense = np.zeros((n_out, n_in))
    for k in range(n_out):
        inside = (taps[k] >= 0) & (taps[k] < n_in)
        dense[k, taps[k][inside]] += weights[k][inside]
    x = np.random.default_rng(0).integers(0, 256, (n_in, 7, 3)).astype(np.float64)
    want = np.floor(np.einsum("ki,icd->kcd", dense, x) + 0.5).clip(0, 255)
    tie = np.abs(np.einsum("ki,icd->kcd", dense, x) % 1 - 0.5) < 1e-3  # float32 sums may round a near-tie either way
    band = axis_band(start, stop, n_out, n_in, torch.device("cpu"))
    assert band.weights.shape[1] == BLOCK
    source = torch.from_numpy(x[band.first:band.first + band.n_read]).to(torch.uint8)
    rows = torch.empty((n_out, 7, 3))
    pass_rows(band, source, rows)
    last = torch.empty((7, 3, n_out), dtype=torch.uint8)  # along the last axis, of a permuted source
    pass_last(band, source.permute(1, 2, 0), last)
    for got in (rows.numpy(), last.permute(2, 0, 1).numpy()):
        assert np.all((got == want) | tie) and np.abs(got - want).max() <= 1


def test_bands_equal_the_straightforward_ones():
    rng = np.random.default_rng(1)
    for _ in range(100):
        n_in, n_out = (int(v) for v in rng.integers(1, 300, 2))
        start, span = rng.uniform(-50, n_in), rng.uniform(0.5, 3 * n_in)
        band = axis_band(start, start + span, n_out, n_in, torch.device("cpu"))
        first, n_read, starts, weights = reference_band(start, start + span, n_out, n_in, black_outside=True)
        assert (band.first, band.n_read, list(band.starts)) == (first, n_read, starts)
        assert torch.equal(band.weights, weights)


def _random_resample_case(rng: np.random.Generator) -> tuple[torch.Tensor, tuple, tuple[int, int], bool]:
    """A random image (uint8 or float, 1 or 3 channels, noise or smooth) and a random crop or whole resize."""
    h, w = (int(v) for v in rng.integers(4, 160, 2))
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))
    image = torch.from_numpy(smooth.copy() if rng.random() < 0.5 else rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if rng.random() < 0.25:
        image = image[..., :1]
    if rng.random() < 0.25:
        image = image.float()
    size = (int(rng.integers(6, 200)), int(rng.integers(6, 200)))
    if rng.random() < 0.3:
        return image, (0.0, 0.0, float(w), float(h)), size, False
    x0, y0, side = rng.uniform(-40, w), rng.uniform(-40, h), rng.uniform(2, 2.5 * max(h, w))
    return image, (x0, y0, x0 + side * rng.uniform(0.6, 1.5), y0 + side), size, True


def same_levels(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal but for rare whole-level ties rounded the other way. Streamed in small pieces, the products are the
    reference's, summed in the same order on the CPUs measured (bit for bit on 1,300 random cases); another
    CPU's BLAS kernels may sum a transposed operand in another order, which moves a tie by one level."""
    diff = (got.to(torch.float32) - want.to(torch.float32)).abs()
    return bool(diff.max() <= 1 and (diff > 0).float().mean() <= 1e-3)


@pytest.mark.parametrize("seed", range(4))
def test_resample_equals_the_straightforward_reference(seed):
    """Streamed in small pieces, the same products in the same order, either kernel (`same_levels`)."""
    import dataclasses

    from nvsvideo.models.kernels import CPU_KERNELS, use_kernels

    rng = np.random.default_rng(seed)
    for _ in range(15):
        image, box, size, black_outside = _random_resample_case(rng)
        want = reference_resample(image, box, size, black_outside=black_outside)
        assert same_levels(resample(image, box, size, black_outside=black_outside), want)
        assert same_levels(resample(image, box, size, black_outside=black_outside, dtype=torch.uint8),
                           want.to(torch.uint8))
        with use_kernels(dataclasses.replace(CPU_KERNELS, resample="gathered")):
            assert same_levels(resample(image, box, size, black_outside=black_outside), want)


@pytest.fixture(scope="module")
def frame_1080p(fixtures_dir) -> np.ndarray:
    """A real face frame upscaled to 1080p."""
    from nvsvideo.video import VideoReader

    frame = next(iter(VideoReader(fixtures_dir / "single_face.mp4", batch_size=1))).frames[0]
    return np.asarray(Image.fromarray(frame).resize((1920, 1080), Image.Resampling.BICUBIC))


@pytest.mark.parametrize("seed", range(6))
def test_resample_matches_pillow_within_one_level(seed):
    # A smooth random image: on noise, intermediates overshoot [0, 255] everywhere, and where they do the
    # pass order matters; Pillow 13's own choice of order is only approximated by `y_first`.
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (15, 20, 3), dtype=np.uint8))
    image = np.asarray(small.resize((120, 90), Image.Resampling.BICUBIC))
    x0, y0 = rng.uniform(-30, 80, 2)
    side = rng.uniform(10, 150)
    size = tuple(int(v) for v in rng.integers(8, 100, 2))
    box = (x0, y0, x0 + side * rng.uniform(0.7, 1.3), y0 + side)
    got = resample(image_tensor(image), box, size, dtype=torch.uint8).numpy().astype(int)
    want = pil_resample(image, box, size)
    assert np.abs(got - want).max() <= 1
    assert (got == want).mean() > 0.95  # the same maths: only float vs fixed-point ties differ


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("side", [150.0, 640.0, 1300.0])  # upsampled, downsampled, leaving the frame
def test_crop_and_paste_match_the_pillow_versions_within_one_level(frame_1080p, device, side):
    tf = crop_transform_from_square(CropSquare(cx=1010.3, cy=420.8, side=side))
    frame = torch.from_numpy(frame_1080p.copy()).to(device)
    from nvsvideo.face.crop import crop_face, paste_face_

    crop = crop_face(frame, tf)
    assert crop.device.type == device and crop.dtype == torch.uint8
    want = pil_crop(frame_1080p, tf)
    within_one(crop.cpu().numpy(), want)
    render = np.ascontiguousarray(want[:, ::-1])  # any other image as the "render"
    pasted = paste_face_(frame, torch.from_numpy(render).to(device), tf).cpu().numpy()
    within_one(pasted, pil_paste_back(frame_1080p, render, tf))


@pytest.mark.parametrize("side", [150.0, 808.0, 1300.0])  # upsampled, the bench's face, leaving the frame
def test_1080p_crop_and_paste_patch_equal_the_reference(frame_1080p, side):
    from nvsvideo.face.crop import crop_face

    tf = crop_transform_from_square(CropSquare(cx=1010.3, cy=420.8, side=side))
    frame = torch.from_numpy(frame_1080p.copy())
    crop = crop_face(frame, tf)
    assert same_levels(crop, reference_resample(frame, crop_box(tf), (512, 512)).to(torch.uint8))
    box, size = (-3.7, 10.2, 530.1, 515.0), (round(side * 1.04), round(side * 0.95))  # a paste-back patch
    assert same_levels(resample(crop, box, size), reference_resample(crop, box, size))


def test_numpy_wrappers_leave_their_inputs_alone(frame_1080p):
    tf = crop_transform_from_square(CropSquare(cx=899.5, cy=499.5, side=600.0))
    before = frame_1080p.copy()
    crop = apply_crop(frame_1080p, tf)
    out = paste_back(frame_1080p, crop[::-1], tf)
    np.testing.assert_array_equal(frame_1080p, before)
    assert out is not frame_1080p and not np.array_equal(out, before)
    # Centre 899.5 (pixel centres) = corner 900: the square spans corners 600 .. 1200.
    assert crop_box(tf) == pytest.approx((600.0, 200.0, 1200.0, 800.0))


@pytest.mark.parametrize("centre", [(960.0, 540.0), (60.0, 40.0)])  # inside the frame; leaving it at a corner
def test_paste_copies_the_unfeathered_interior_and_blends_only_the_band(centre):
    """The paste-back equals one feathered blend of the whole footprint, level for level: the interior, where
    the weight is 1, is the render itself, so it is copied rather than blended."""
    from nvsvideo.face.crop import _corner_map, feather_weights, paste_face_

    gen = torch.Generator().manual_seed(3)
    frame = torch.randint(0, 256, (1080, 1920, 3), generator=gen, dtype=torch.uint8)
    render = torch.randint(0, 256, (512, 512, 3), generator=gen, dtype=torch.uint8)
    tf = crop_transform_from_square(CropSquare(*centre, 500.0), 512)
    sx, sy, bx, by = _corner_map(tf)
    x0, x1 = max(int(np.ceil(-bx / sx)), 0), min(int(np.floor((512 - bx) / sx)), 1920)
    y0, y1 = max(int(np.ceil(-by / sy)), 0), min(int(np.floor((512 - by) / sy)), 1080)
    patch = resample(render, (sx * x0 + bx, sy * y0 + by, sx * x1 + bx, sy * y1 + by), (x1 - x0, y1 - y0))
    wx = torch.from_numpy(feather_weights(sx * (np.arange(x0, x1) + 0.5) + bx, 512, 0.1))
    wy = torch.from_numpy(feather_weights(sy * (np.arange(y0, y1) + 0.5) + by, 512, 0.1))
    expected = frame.clone()
    region = expected[y0:y1, x0:x1]
    region.copy_(region.to(torch.float32).lerp_(patch, wy[:, None, None] * wx[None, :, None]).add_(0.5))
    assert torch.equal(paste_face_(frame, render, tf), expected)
