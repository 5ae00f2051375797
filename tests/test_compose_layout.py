"""Output layouts (crop, paste, compare) and tensor <-> frame conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvsvideo.compose.layout import (
    OutputMode,
    compose_frame,
    from_uint8_frames,
    letterbox,
    output_shape,
    side_by_side,
    to_uint8_frames,
)
from nvsvideo.face.crop import CropSquare, crop_transform_from_square

FRAME_HW = (120, 160)
SIZE = 64


@pytest.fixture()
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)


def solid(color: tuple[int, int, int], size: int = SIZE) -> np.ndarray:
    return np.broadcast_to(np.array(color, np.uint8), (size, size, 3)).copy()


def test_uint8_round_trip_is_exact():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    images = from_uint8_frames(frames)
    assert images.shape == (2, 3, 5, 7) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert np.array_equal(to_uint8_frames(images), frames)
    assert from_uint8_frames(frames[0]).shape == (1, 3, 5, 7)


def test_to_uint8_clamps_and_maps_the_ends():
    images = torch.tensor([-3.0, -1.0, 0.0, 1.0, 2.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    out = to_uint8_frames(images)
    assert out.shape == (1, 1, 5, 3) and out.dtype == np.uint8
    assert out[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize(("mode", "shape"), [(OutputMode.CROP, (SIZE, SIZE)), (OutputMode.PASTE, FRAME_HW),
                                             (OutputMode.COMPARE, (SIZE, 3 * SIZE))])
def test_every_mode_has_its_announced_shape_with_and_without_a_face(frame, mode, shape):
    assert output_shape(mode, FRAME_HW, SIZE) == shape
    tf = crop_transform_from_square(CropSquare(cx=80, cy=60, side=70), output_size=SIZE)
    panels = {"input_crop": solid((10, 20, 30)), "reconstruction": solid((40, 50, 60), 2 * SIZE)}
    with_face = compose_frame(mode, frame, tf, solid((200, 0, 0), 32), size=SIZE, **panels)
    without = compose_frame(mode, frame, None, None, size=SIZE)
    assert with_face.shape == without.shape == (*shape, 3)
    assert with_face.dtype == without.dtype == np.uint8


def test_paste_without_a_face_passes_the_frame_through(frame):
    original = frame.copy()
    out = compose_frame(OutputMode.PASTE, frame, None, None, size=SIZE)
    assert out is frame and np.array_equal(out, original)


def test_paste_puts_the_render_inside_the_crop_footprint_only(frame):
    tf = crop_transform_from_square(CropSquare(cx=80, cy=60, side=70), output_size=SIZE)
    out = compose_frame(OutputMode.PASTE, frame, tf, solid((0, 255, 0)), size=SIZE)
    assert np.array_equal(out[60, 80], [0, 255, 0])  # the crop's centre
    assert np.array_equal(out[:20], frame[:20]) and np.array_equal(out[:, :40], frame[:, :40])


def test_compare_panels_and_labels(frame):
    tf = crop_transform_from_square(CropSquare(cx=80, cy=60, side=70), output_size=SIZE)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    kwargs = {"input_crop": solid(colors[0]), "reconstruction": solid(colors[1])}
    plain = compose_frame(OutputMode.COMPARE, frame, tf, solid(colors[2]), size=SIZE, labels=False, **kwargs)
    assert np.array_equal(plain, np.concatenate([solid(c) for c in colors], axis=1))
    captioned = compose_frame(OutputMode.COMPARE, frame, tf, solid(colors[2]), size=SIZE, **kwargs)
    top = captioned[:SIZE // 3] != plain[:SIZE // 3]
    assert top[:, :SIZE].any() and top[:, SIZE:2 * SIZE].any() and top[:, 2 * SIZE:].any()
    assert np.array_equal(captioned[SIZE // 2:], plain[SIZE // 2:])
    with pytest.raises(ValueError):
        compose_frame(OutputMode.COMPARE, frame, tf, solid(colors[2]), size=SIZE)


def test_face_and_render_must_come_together(frame):
    with pytest.raises(ValueError):
        compose_frame(OutputMode.CROP, frame, None, solid((1, 2, 3)), size=SIZE)


def test_letterbox_keeps_the_whole_frame_centred():
    frame = np.full((50, 100, 3), 200, np.uint8)
    out = letterbox(frame, 64, 64)
    assert out.shape == (64, 64, 3)
    assert np.all(out[:16] == 0) and np.all(out[-16:] == 0) and np.all(out[17:47] == 200)


def test_side_by_side_rejects_mismatched_panels():
    with pytest.raises(AssertionError):
        side_by_side([solid((0, 0, 0)), solid((0, 0, 0), 32)])
