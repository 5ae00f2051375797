"""Composing in decoded 4:2:0 pictures (issue 19): the colour conversion, the planes, the paste-back, and the
reader and writer that carry the pictures through `rerender --output paste`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from nvsvideo.compose.yuv import i420_planes, rgb_to_ycbcr, rgb_to_ycbcr420, round_levels
from nvsvideo.face.crop import CropSquare, crop_face, crop_transform_from_square, paste_face_, paste_face_yuv_
from nvsvideo.models.kernels import CPU_KERNELS, GPU_KERNELS, use_kernels
from nvsvideo.video import VideoReader, VideoWriter, probe
from nvsvideo.video.colour import BT709, FULL, Colour
from nvsvideo.video.reader import yuv_kept

BT601_FULL = Colour(matrix=6, range=FULL, primaries=6, transfer=6)


def levels(rgb: list[int], colour: Colour) -> list[int]:
    """(Y, Cb, Cr) of one colour filling a 2x2 block."""
    image = torch.tensor(rgb, dtype=torch.float32).expand(2, 2, 3).contiguous()
    return [int(round_levels(p).flatten()[0]) for p in rgb_to_ycbcr420(image, colour)]


def test_rgb_to_ycbcr_matches_hand_computed_levels() -> None:
    # BT.709 limited: Y = 16 + 219·(0.2126 R + 0.7152 G + 0.0722 B)/255, Cr = 128 + 224·(R - Y')/(2·0.7874)/255.
    assert levels([255, 255, 255], BT709) == [235, 128, 128]
    assert levels([0, 0, 0], BT709) == [16, 128, 128]
    assert levels([255, 0, 0], BT709) == [63, 102, 240]  # 62.56, 128 - 25.66, 128 + 112
    # BT.601 full: Y = 0.299 R + 0.587 G + 0.114 B; Cb = 128 + (B - Y)/1.772.
    assert levels([0, 0, 255], BT601_FULL) == [29, 255, 107]  # 29.07, 255.5 clamped, 107.3
    # A 2x2 block's chroma is that of its mean colour; luma stays per pixel.
    image = torch.tensor([[[255.0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]]])
    y, cb, cr = (round_levels(p) for p in rgb_to_ycbcr420(image, BT709))
    assert y.tolist() == [[63, 16], [16, 16]] and cr.item() == 156 and cb.item() == 122  # 128 + 28, 128 - 6.4


def test_i420_planes_are_views_of_ffmpegs_packed_layout() -> None:
    rng = np.random.default_rng(0)
    frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), format="rgb24")
    packed = frame.reformat(format="yuv420p").to_ndarray()
    picture = torch.from_numpy(packed)
    planes = i420_planes(picture, BT709)
    yuv = frame.reformat(format="yuv420p")
    for plane, ours in zip(yuv.planes, (planes.y, planes.u, planes.v), strict=True):
        theirs = np.frombuffer(plane, np.uint8).reshape(plane.height, -1)[:, :plane.width]
        np.testing.assert_array_equal(ours.numpy(), theirs)
    planes.y[0, 0] = 7  # views: writing a plane writes the picture
    assert picture[0, 0] == 7


def smooth_image(rng: np.random.Generator, height: int, width: int) -> torch.Tensor:
    """uint8 [H, W, 3] random content varying over about six pixels, as a frame's or a render's does."""
    coarse = torch.from_numpy(rng.integers(0, 256, (height // 6, width // 6, 3))).permute(2, 0, 1)[None].float()
    image = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    return image[0].permute(1, 2, 0).round().to(torch.uint8).contiguous()


def picture_of(rgb: np.ndarray, colour: Colour) -> torch.Tensor:
    """A packed yuv420p picture of an RGB image, each chroma sample taken at its own site (H.264's default:
    on the even columns, halfway between two rows) from the per-pixel conversion."""
    y, cb, cr = rgb_to_ycbcr(torch.from_numpy(rgb).float(), colour)
    cb, cr = ((c[0::2, 0::2] + c[1::2, 0::2]) / 2 for c in (cb, cr))
    return torch.cat([round_levels(p).reshape(-1) for p in (y, cb, cr)]).view(-1, rgb.shape[1])


@pytest.mark.parametrize("colour", [BT709, BT601_FULL])
def test_paste_into_a_picture_keeps_what_the_mask_leaves_and_matches_the_rgb_paste(colour: Colour) -> None:
    rng = np.random.default_rng(1)
    height, width = 90, 120
    frame = smooth_image(rng, height, width).numpy()
    render = smooth_image(rng, 64, 64)
    # A square that leaves the frame on the left and starts on an odd row and column.
    tf = crop_transform_from_square(CropSquare(cx=20.3, cy=45.7, side=61.0), output_size=64)
    picture = picture_of(frame, colour)
    pasted = picture.clone()
    paste_face_yuv_(i420_planes(pasted, colour), render, tf)
    changed = (pasted != picture).numpy()
    y_rows = slice(0, height)
    # Outside the square (x < 20.3 + 30.5 + 2, y within 45.7 -/+ 30.5 + 2): every sample as it was.
    luma_changed = np.argwhere(changed[y_rows])
    assert luma_changed[:, 1].max() < 53 and 13 <= luma_changed[:, 0].min() and luma_changed[:, 0].max() < 79
    # Against `paste_face_` in RGB, converted afterwards: the same but for where the 8-bit intermediates of the
    # resampling round differently (in RGB there, in YCbCr here), which the steep random content here (up to
    # 40 levels a pixel) makes reach a few levels in chroma. Measured: luma max 2, 99.98 % within one level;
    # chroma max 4, 97 %.
    rgb = torch.from_numpy(frame.copy())
    paste_face_(rgb, render, tf)
    diff = (pasted.int() - picture_of(rgb.numpy(), colour).int()).abs()
    luma, chroma = diff[y_rows], diff[height:]
    assert luma.max() <= 2 and (luma <= 1).float().mean() > 0.999
    assert chroma.max() <= 5 and (chroma <= 1).float().mean() > 0.95


def test_a_paste_outside_the_picture_changes_nothing() -> None:
    picture = torch.full((12, 8), 100, dtype=torch.uint8)
    tf = crop_transform_from_square(CropSquare(cx=-40.0, cy=4.0, side=10.0), output_size=16)
    paste_face_yuv_(i420_planes(picture, BT709), torch.zeros((16, 16, 3), dtype=torch.uint8), tf)
    assert (picture == 100).all()


def test_reader_keeps_pictures_and_writer_encodes_them_as_they_are(fixtures_dir: Path, tmp_path: Path) -> None:
    clip = fixtures_dir / "single_face.mp4"
    info = probe(clip)
    assert yuv_kept(info)
    reader = VideoReader(clip, batch_size=4, info=info, span=None, keep_yuv=True)
    batches = [batch for _, batch in zip(range(2), reader, strict=False)]
    with av.open(str(clip)) as container:
        decoded = [f.to_ndarray() for _, f in zip(range(8), container.decode(video=0), strict=False)]
    np.testing.assert_array_equal(np.concatenate([b.yuv for b in batches]), np.stack(decoded))
    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base, crf=0,
                     colour=info.colour) as writer:
        for batch in batches:
            writer.write_yuv(batch.yuv, batch.pts)
    with av.open(str(out)) as container:
        back = [f for f in container.decode(video=0)]
    np.testing.assert_array_equal(np.stack([f.to_ndarray() for f in back]), np.stack(decoded))
    assert (back[0].colorspace, back[0].color_range) == (info.colour.matrix, info.colour.range)


def test_only_even_unturned_8bit_420_pictures_are_kept(fixtures_dir: Path) -> None:
    info = probe(fixtures_dir / "single_face.mp4")
    assert not yuv_kept(replace(info, pix_fmt="yuv420p10le"))
    assert not yuv_kept(replace(info, pix_fmt="yuv444p"))
    assert not yuv_kept(replace(info, rotation=90))
    assert not yuv_kept(replace(info, width=info.width - 1))
    with pytest.raises(ValueError, match="cannot be kept"):
        VideoReader(fixtures_dir / "single_face.mp4", info=replace(info, rotation=90), keep_yuv=True)


def test_crop_of_a_picture_matches_the_crop_of_its_decoded_frame(fixtures_dir: Path) -> None:
    clip = fixtures_dir / "single_face.mp4"
    info = probe(clip)
    batch = next(iter(VideoReader(clip, batch_size=1, info=info, keep_yuv=True)))
    frame, planes = torch.from_numpy(batch.frames[0]), i420_planes(torch.from_numpy(batch.yuv[0]), info.colour)
    # The face (dlib's box of the first frame: a 300 px crop, upscaled to 512), then a square leaving the frame at
    # its top left. Chroma is resampled from its own samples here, after the decoder's bilinear interpolation
    # there: measured on the face 72 % of the values equal, 97.5 % within one level, 99.8 % within two (at most
    # 15, at strong colour edges); off the frame's edge 98 % within one. No shift on average.
    for square in (CropSquare(cx=293.0, cy=205.0, side=300.0), CropSquare(cx=20.5, cy=10.5, side=200.0)):
        tf = crop_transform_from_square(square)
        ours, decoded = crop_face(planes, tf).int(), crop_face(frame, tf).int()
        diff = (ours - decoded).abs()
        assert (diff <= 1).float().mean() > 0.97 and (diff <= 2).float().mean() > 0.985
        assert (ours - decoded).float().mean(dim=(0, 1)).abs().max() < 0.1
    # Outside the picture is black, as in RGB: the crop's top left corner lies 80 px beyond the frame.
    assert (ours[:150, :150] == 0).all()


def test_picture_crop_and_paste_take_the_gpu_kernels(fixtures_dir: Path) -> None:
    """The GPU's resampling variant (`use_kernels`, run here on the CPU) gives the same crop and paste."""
    clip = fixtures_dir / "single_face.mp4"
    info = probe(clip)
    batch = next(iter(VideoReader(clip, batch_size=1, info=info, keep_yuv=True, rgb=False)))
    assert batch.frames is None
    picture = torch.from_numpy(batch.yuv[0])
    tf = crop_transform_from_square(CropSquare(cx=293.0, cy=205.0, side=300.0))
    results = []
    for kernels in (CPU_KERNELS, GPU_KERNELS):
        with use_kernels(kernels):
            crop = crop_face(i420_planes(picture, info.colour), tf)
            pasted = picture.clone()
            paste_face_yuv_(i420_planes(pasted, info.colour), crop.flip(1).contiguous(), tf)
        results.append((crop.int(), pasted.int()))
    (crop_a, pasted_a), (crop_b, pasted_b) = results
    # Float sums in another order may round a whole-level intermediate the other way: rarely, by one.
    assert (crop_a - crop_b).abs().max() <= 1 and (pasted_a - pasted_b).abs().max() <= 1
    assert (crop_a != crop_b).float().mean() < 1e-3 and (pasted_a != pasted_b).float().mean() < 1e-3
