"""Out-of-domain preservation: invertibility mask, temporal smoother, view fade and blend."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nvsvideo.cameras.eg3d import intrinsics, lookat_cam2world, make_label, rot_z
from nvsvideo.compose.ood import (
    KeepOodOptions,
    MaskSmoother,
    OodKeeper,
    OodMaskConfig,
    blend_ood,
    fade_weight,
    gaussian_blur,
    merge_coarse_to_fine,
    ood_mask,
    shift_image,
    view_angle_deg,
)

SIZE = 128
#: A "microphone": a saturated square in the input that the reconstruction does not have.
PATCH = (slice(40, 76), slice(50, 80))


def textured_scene(seed: int, size: int = SIZE + 8) -> torch.Tensor:
    """[1, 3, size, size] in [-1, 1]: smooth shading plus 4-px texture, like skin and background."""
    g = torch.Generator().manual_seed(seed)
    shading = F.interpolate(torch.rand(1, 3, 6, 6, generator=g) * 1.6 - 0.8, size=(size, size), mode="bicubic",
                            align_corners=False)
    texture = F.interpolate(torch.rand(1, 3, size // 4, size // 4, generator=g) * 0.6 - 0.3, size=(size, size),
                            mode="bilinear", align_corners=False)
    return (shading + texture).clamp(-1.0, 1.0)


def crop_pair(dy: int, dx: int, noise: float = 0.02, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Input x and a reconstruction y showing the same scene `dy, dx` pixels off, plus noise."""
    scene = textured_scene(seed)
    x = scene[..., 4:4 + SIZE, 4:4 + SIZE]
    y = scene[..., 4 + dy:4 + dy + SIZE, 4 + dx:4 + dx + SIZE]
    g = torch.Generator().manual_seed(seed + 100)
    return x.clone(), (y + noise * torch.randn(y.shape, generator=g)).clamp(-1.0, 1.0)


@pytest.mark.parametrize("shift", [(0, 0), (1, -2), (-2, 2)])
def test_mask_is_near_zero_where_the_reconstruction_matches(shift):
    x, y = crop_pair(*shift)
    mask = ood_mask(x, y)
    assert mask.shape == (1, 1, SIZE, SIZE)
    assert mask.mean() < 0.04 and mask.max() < 0.2


def test_alignment_is_what_tolerates_misregistration():
    # Sharp 8-px blocks (silhouettes, hair against background): a 2-px offset alone is a large raw error.
    g = torch.Generator().manual_seed(0)
    blocks = F.interpolate(torch.rand(1, 3, 17, 17, generator=g) * 2 - 1, size=(SIZE + 8, SIZE + 8), mode="nearest")
    x, y = blocks[..., 4:4 + SIZE, 4:4 + SIZE], blocks[..., 6:6 + SIZE, 2:2 + SIZE]
    assert ood_mask(x, y, OodMaskConfig(max_shift_px=0)).mean() > 0.5
    aligned = ood_mask(x, y)
    assert aligned.mean() < 0.1 and aligned.max() < 0.3


def test_mask_covers_a_foreign_object_with_soft_edges():
    x, y = crop_pair(1, 1)
    x[:, :, PATCH[0], PATCH[1]] = torch.tensor([0.9, -0.9, -0.3]).view(1, 3, 1, 1)
    mask = ood_mask(x, y)[0, 0]
    assert mask[46:70, 56:74].min() > 0.95
    far = torch.ones_like(mask, dtype=torch.bool)
    far[40 - 20:76 + 20, 50 - 20:80 + 20] = False
    assert mask[far].max() < 0.15
    row = mask[58]
    assert (row[1:] - row[:-1]).abs().max() < 0.25, "the edge must be feathered, not a step"
    assert ((row > 0.1) & (row < 0.9)).sum() >= 6


def test_isolated_specks_are_not_kept():
    x, y = crop_pair(0, 0)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(8, SIZE - 8, (2, 30), generator=g)
    x[0, :, idx[0], idx[1]] = 1.0
    assert ood_mask(x, y).max() < 0.2


def test_mask_is_batched_per_sample():
    x, y = crop_pair(0, 1)
    x2 = x.clone()
    x2[:, :, PATCH[0], PATCH[1]] = 1.0
    both = ood_mask(torch.cat([x, x2]), torch.cat([y, y]))
    assert torch.allclose(both[0], ood_mask(x, y)[0], atol=1e-5)
    assert both[0].max() < 0.2 and both[1].max() > 0.95


def test_coarse_level_gates_the_fine_level():
    fine = torch.rand(1, 1, 16, 16)
    assert merge_coarse_to_fine(torch.zeros(1, 1, 8, 8), fine).abs().max() == 0
    assert torch.allclose(merge_coarse_to_fine(torch.ones(1, 1, 8, 8), fine), fine)


def test_shift_and_blur_helpers():
    image = torch.arange(36.0).view(1, 1, 6, 6)
    padded = F.pad(image, (2, 2, 2, 2), mode="replicate")
    assert torch.equal(shift_image(padded, 2, 1, 0, (6, 6))[..., :5, :], image[..., 1:, :])
    half = shift_image(padded, 2, 0, 0.5, (6, 6))
    assert torch.allclose(half[..., :5], image[..., :5] + 0.5)
    blurred = gaussian_blur(image, 1.0)
    assert torch.allclose(blurred.mean(), image.mean(), atol=0.5) and blurred.shape == image.shape
    constant = torch.full((1, 1, 9, 9), 0.7)
    assert torch.allclose(gaussian_blur(constant, 2.0), constant)


def flickering_masks(frames: int = 24) -> torch.Tensor:
    """[T, 1, 32, 32]: a steady square plus a region that blinks on and off every frame."""
    masks = torch.zeros(frames, 1, 32, 32)
    masks[:, :, 4:12, 4:12] = 1.0
    masks[0::2, :, 20:28, 20:28] = 1.0
    return masks


def temporal_variation(masks: torch.Tensor) -> float:
    return float((masks[1:] - masks[:-1]).abs().mean())


def test_smoother_reduces_flicker_and_keeps_steady_regions():
    raw = flickering_masks()
    smooth = MaskSmoother()(raw)
    assert temporal_variation(smooth) < 0.3 * temporal_variation(raw)
    assert torch.allclose(smooth[:, :, 4:12, 4:12], torch.ones(1))
    assert smooth[-6:, :, 20:28, 20:28].min() > 0.6, "a blinking region settles high (the input is kept)"


def test_smoother_rises_fast_and_falls_slowly():
    masks = torch.zeros(8, 1, 4, 4)
    masks[1:4] = 1.0
    out = MaskSmoother(rise_frames=1.0, fall_frames=4.0)(masks)[:, 0, 0, 0].tolist()
    assert out[1] == pytest.approx(1 - np.exp(-1), abs=1e-6)
    assert out[4] == pytest.approx(out[3] * np.exp(-1 / 4), abs=1e-6)
    assert out[4] > 0.7 and all(a > b for a, b in zip(out[4:-1], out[5:], strict=True))


def test_smoother_streams_in_chunks_and_resets():
    raw = flickering_masks(12)
    whole = MaskSmoother()(raw)
    streaming = MaskSmoother()
    chunks = torch.cat([streaming(raw[i:i + 5]) for i in range(0, 12, 5)])
    assert torch.allclose(whole, chunks)
    streaming.reset()
    assert torch.equal(streaming(raw[3:4]), raw[3:4])
    assert torch.equal(MaskSmoother(rise_frames=0, fall_frames=0)(raw), raw)


def labels(yaw_deg, pitch_deg=0.0, pivot=(0.0, 0.0, 0.0)) -> np.ndarray:
    return make_label(lookat_cam2world(np.asarray(yaw_deg, float), pitch_deg, pivot=pivot), intrinsics())


@pytest.mark.parametrize(("delta", "expected"), [(0.0, 1.0), (4.0, 1.0), (12.5, 0.5), (20.0, 0.0), (45.0, 0.0)])
def test_fade_weight_at_near_mid_and_far_angles(delta, expected):
    # With the pivot at the origin a yaw difference is exactly the rotation between the cameras.
    assert fade_weight(labels(10.0), labels(10.0 + delta)) == pytest.approx(expected, abs=1e-6)


def test_fade_weight_is_batched_monotone_and_counts_roll():
    yaws = np.linspace(0.0, 30.0, 31)
    weights = fade_weight(labels(np.zeros_like(yaws), 5.0, (0.0, 0.0, 0.2)), labels(yaws, 5.0, (0.0, 0.0, 0.2)))
    assert weights.shape == (31,) and weights[0] == 1.0 and weights[-1] == 0.0
    assert np.all(np.diff(weights) <= 1e-12)
    cam = lookat_cam2world(0.0, 0.0)
    rolled = cam.copy()
    rolled[:3, :3] = cam[:3, :3] @ rot_z(np.radians(12.5))
    rolled_label = make_label(rolled, intrinsics())
    assert view_angle_deg(make_label(cam, intrinsics()), rolled_label) == pytest.approx(12.5)
    with pytest.raises(ValueError):
        fade_weight(labels(0.0), labels(1.0), full_deg=20.0, zero_deg=5.0)


def test_blend_follows_mask_and_view_weight():
    g = torch.Generator().manual_seed(0)
    novel, source = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, :4] = 1.0
    out = blend_ood(novel, source, mask, np.array([1.0, 0.25]))
    assert torch.equal(out[0, :, :4], source[0, :, :4]) and torch.equal(out[:, :, 4:], novel[:, :, 4:])
    assert torch.allclose(out[1, :, :4], novel[1, :, :4] + 0.25 * (source[1, :, :4] - novel[1, :, :4]))
    assert torch.equal(blend_ood(novel, source, mask, 0.0), novel)


def test_blend_resizes_the_input_side_to_the_render():
    novel = torch.zeros(1, 3, 16, 16)
    out = blend_ood(novel, torch.ones(1, 3, 32, 32), torch.ones(1, 1, 32, 32), 1.0)
    assert out.shape == (1, 3, 16, 16) and torch.allclose(out, torch.ones(1))


def test_keeper_chains_mask_smoother_and_blend():
    x, y = crop_pair(1, 0)
    x[:, :, PATCH[0], PATCH[1]] = 1.0
    novel = torch.zeros(2, 3, SIZE, SIZE)
    inputs, recons = torch.cat([x, x]), torch.cat([y, y])
    keeper = OodKeeper(KeepOodOptions(rise_frames=0.0))
    weights = keeper.view_weights(labels(np.array([0.0, 0.0])), labels(np.array([0.0, 12.5])))
    assert weights.tolist() == pytest.approx([1.0, 0.5])
    out, mask = keeper(novel, inputs, recons, weights)
    expected = ood_mask(inputs, recons)
    assert torch.allclose(mask, expected)
    assert torch.allclose(out, blend_ood(novel, inputs, expected, weights))


def test_keeper_skips_far_views_and_drops_its_state():
    x, y = crop_pair(0, 0)
    with_object = x.clone()
    with_object[:, :, PATCH[0], PATCH[1]] = 1.0
    keeper = OodKeeper()
    keeper(torch.zeros_like(x), with_object, y, np.ones(1))
    novel = torch.rand(1, 3, SIZE, SIZE)
    out, mask = keeper(novel, x, None, np.zeros(1))
    assert out is novel and mask is None
    _, mask = keeper(novel, x, y, np.ones(1))
    assert torch.allclose(mask, ood_mask(x, y)), "the object seen before the skip must not linger"
    with pytest.raises(ValueError):
        keeper(novel, x, None, np.full(1, 0.5))
