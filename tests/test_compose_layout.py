"""Output layouts (crop, paste, compare) and tensor <-> frame conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvsvideo.compose.layout import (
    COMPARE_LABELS,
    OutputMode,
    compose_frame,
    from_uint8_frames,
    letterbox,
    output_shape,
    resize_square,
    side_by_side,
    to_uint8_frames,
)
from nvsvideo.face.crop import CropSquare, crop_transform_from_square

FRAME_HW = (120, 160)
SIZE = 64


@pytest.fixture()
def frame() -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8))


def solid(color: tuple[int, int, int], size: int = SIZE) -> torch.Tensor:
    return torch.tensor(color, dtype=torch.uint8).expand(size, size, 3).contiguous()


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
    assert with_face.dtype == without.dtype == torch.uint8


def test_paste_without_a_face_passes_the_frame_through(frame):
    original = frame.clone()
    out = compose_frame(OutputMode.PASTE, frame, None, None, size=SIZE)
    assert out is frame and torch.equal(out, original)


def test_paste_puts_the_render_inside_the_crop_footprint_only(frame):
    tf = crop_transform_from_square(CropSquare(cx=80, cy=60, side=70), output_size=SIZE)
    original = frame.clone()
    out = compose_frame(OutputMode.PASTE, frame, tf, solid((0, 255, 0)), size=SIZE)
    assert out is frame  # composed in place
    assert out[60, 80].tolist() == [0, 255, 0]  # the crop's centre
    assert torch.equal(out[:20], original[:20]) and torch.equal(out[:, :40], original[:, :40])


def test_compare_panels_and_labels(frame):
    tf = crop_transform_from_square(CropSquare(cx=80, cy=60, side=70), output_size=SIZE)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    kwargs = {"input_crop": solid(colors[0]), "reconstruction": solid(colors[1])}
    plain = compose_frame(OutputMode.COMPARE, frame, tf, solid(colors[2]), size=SIZE, labels=False, **kwargs)
    assert torch.equal(plain, torch.cat([solid(c) for c in colors], dim=1))
    captioned = compose_frame(OutputMode.COMPARE, frame, tf, solid(colors[2]), size=SIZE, **kwargs)
    top = captioned[:SIZE // 3] != plain[:SIZE // 3]
    assert top[:, :SIZE].any() and top[:, SIZE:2 * SIZE].any() and top[:, 2 * SIZE:].any()
    assert torch.equal(captioned[SIZE // 2:], plain[SIZE // 2:])
    with pytest.raises(ValueError):
        compose_frame(OutputMode.COMPARE, frame, tf, solid(colors[2]), size=SIZE)


def test_face_and_render_must_come_together(frame):
    with pytest.raises(ValueError):
        compose_frame(OutputMode.CROP, frame, None, solid((1, 2, 3)), size=SIZE)


def test_letterbox_keeps_the_whole_frame_centred():
    frame = torch.full((50, 100, 3), 200, dtype=torch.uint8)
    out = letterbox(frame, 64, 64)
    assert out.shape == (64, 64, 3)
    assert bool((out[:16] == 0).all()) and bool((out[-16:] == 0).all()) and bool((out[17:47] == 200).all())


def test_side_by_side_rejects_mismatched_panels():
    with pytest.raises(AssertionError):
        side_by_side([solid((0, 0, 0)), solid((0, 0, 0), 32)])


def test_captions_are_the_text_drawn_over_the_strip():
    # What the captions looked like drawn straight onto the strip with Pillow: the overlay must equal it.
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(5)
    panels = [torch.from_numpy(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)) for _ in range(3)]
    image = Image.fromarray(torch.cat(panels, dim=1).numpy())
    draw = ImageDraw.Draw(image)
    font, margin = ImageFont.load_default(size=10), 2
    for i, text in enumerate(COMPARE_LABELS):
        left, top, right, bottom = draw.textbbox((i * 96 + 2 * margin, 2 * margin), text, font=font)
        draw.rectangle((left - margin, top - margin, right + margin, bottom + margin), fill=(0, 0, 0))
        draw.text((i * 96 + 2 * margin, 2 * margin), text, fill=(255, 255, 255), font=font)
    np.testing.assert_array_equal(side_by_side(panels, COMPARE_LABELS).numpy(), np.asarray(image))


def test_letterbox_and_resize_match_pillow_within_one_level(frame):
    from PIL import Image

    out = letterbox(frame, 64, 64).numpy()
    pil = np.asarray(Image.fromarray(frame.numpy()).resize((64, 48), Image.Resampling.LANCZOS))
    assert np.abs(out[8:56].astype(int) - pil).max() <= 1
    square = frame[:96, :96].contiguous()
    pil = np.asarray(Image.fromarray(square.numpy()).resize((40, 40), Image.Resampling.LANCZOS))
    assert np.abs(resize_square(square, 40).numpy().astype(int) - pil).max() <= 1
    assert resize_square(square, 96) is square
