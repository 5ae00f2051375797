"""Depth colour mapping with a fixed range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvsvideo.compose.depth import FFHQ_RAY_END, FFHQ_RAY_START, colorize_depth, colormap_table, depth_to_rgb


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_near_is_bright_far_is_dark_and_nan_is_far():
    depth = torch.tensor([FFHQ_RAY_START - 1, FFHQ_RAY_START, FFHQ_RAY_END, FFHQ_RAY_END + 1, float("nan")])
    out = colorize_depth(depth.view(1, 1, 1, 5))
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    row = out[0, 0]
    assert np.array_equal(row[0], row[1]) and np.array_equal(row[2], row[3]) and np.array_equal(row[3], row[4])
    assert luma(row[1]) > luma(row[2]) + 100


def test_colours_get_darker_with_distance():
    depth = torch.linspace(FFHQ_RAY_START, FFHQ_RAY_END, 64).view(1, 1, 8, 8)
    lightness = luma(colorize_depth(depth)).reshape(-1)
    assert np.all(np.diff(lightness) <= 0.5)


def test_the_same_depth_keeps_its_colour_across_frames():
    # Two frames with very different depth spreads share a pixel at 2.7: a per-frame min/max
    # normalisation would colour it differently, the fixed range must not.
    a = torch.full((1, 1, 4, 4), 2.7)
    a[..., 0, 0], a[..., 3, 3] = 2.6, 2.8
    b = torch.full((1, 1, 4, 4), 2.7)
    b[..., 0, 0], b[..., 3, 3] = 2.3, 3.2
    frames = colorize_depth(torch.cat([a, b]))
    assert np.array_equal(frames[0, 1, 1], frames[1, 1, 1])
    assert not np.array_equal(frames[0, 0, 0], frames[1, 0, 0])


def test_resize_and_rendering_kwargs():
    depth = torch.linspace(2.5, 3.0, 16).view(1, 1, 4, 4)
    assert colorize_depth(depth, size=8).shape == (1, 8, 8, 3)
    assert np.array_equal(depth_to_rgb(depth), colorize_depth(depth))
    narrow = depth_to_rgb(depth, {"ray_start": 2.5, "ray_end": 3.0})
    assert np.array_equal(narrow[0, 0, 0], colormap_table()[-1]) and np.array_equal(narrow[0, 3, 3], colormap_table()[0])
    with pytest.raises(ValueError):
        colorize_depth(depth, near=3.0, far=2.0)


def test_colormap_table_interpolates_its_anchors():
    table = colormap_table(np.array([[0, 0, 0], [255, 255, 255]], float), entries=5)
    assert table[:, 0].tolist() == [0, 64, 128, 191, 255]
    viridis = colormap_table()
    assert viridis.shape == (256, 3) and viridis[0].tolist() == [68, 1, 84] and viridis[-1].tolist() == [253, 231, 37]
