"""Decoded 4:2:0 pictures as torch planes: RGB <-> YCbCr by a video's matrix and range, and crops of them.

Faces are cut from the decoded pictures (`crop_picture`), and `rerender --output paste` composes in their
planes (`nvsvideo.face.crop.paste_face_yuv_`): the render is converted to YCbCr and blended into them where
the feather mask is not zero, so every other sample goes to the encoder as the decoder gave it (exact by
construction), and no frame is converted to RGB and back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from nvsvideo.compose.resample import LANCZOS_LOBES, resample
from nvsvideo.video.colour import FULL, LUMA_WEIGHTS, Colour

#: The chroma level of no colour (black, greys, white), in either range.
CHROMA_ZERO = 128.0


@dataclass(frozen=True, eq=False)
class YuvPlanes:
    """Views of one 8-bit 4:2:0 picture (on any device): luma [H, W], chroma [H/2, W/2] each."""

    y: torch.Tensor
    u: torch.Tensor
    """Cb."""
    v: torch.Tensor
    """Cr."""
    colour: Colour
    """The matrix and range the samples are in."""


def i420_planes(picture: torch.Tensor, colour: Colour) -> YuvPlanes:
    """The planes of a picture in FFmpeg's packed yuv420p layout, uint8 [H·3/2, W] (Y, then Cb, then Cr), as views."""
    rows, width = picture.shape
    height = rows * 2 // 3
    assert rows == height * 3 // 2 and height % 2 == 0 and width % 2 == 0, picture.shape
    flat = picture.reshape(-1)
    luma, chroma = height * width, height * width // 4
    return YuvPlanes(y=flat[:luma].view(height, width),
                     u=flat[luma:luma + chroma].view(height // 2, width // 2),
                     v=flat[luma + chroma:].view(height // 2, width // 2), colour=colour)


def rgb_to_ycbcr(rgb: torch.Tensor, colour: Colour) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB levels [H, W, 3] (float) -> unrounded Y, Cb, Cr levels [H, W] each, pixel by pixel.

    `colour`'s matrix (H.273 luma weights) and range (limited: Y 16-235, chroma 16-240; full: 0-255).
    """
    kr, kb = LUMA_WEIGHTS[colour.matrix]
    weights = torch.tensor([kr, 1.0 - kr - kb, kb], dtype=rgb.dtype, device=rgb.device)
    luma_scale, chroma_scale, black = _range(colour)
    luma = rgb @ weights
    scale = chroma_scale / 255.0
    cb = (rgb[..., 2] - luma).mul_(scale / (2.0 * (1.0 - kb))).add_(CHROMA_ZERO)
    cr = (rgb[..., 0] - luma).mul_(scale / (2.0 * (1.0 - kr))).add_(CHROMA_ZERO)
    return luma.mul_(luma_scale / 255.0).add_(black), cb, cr


def rgb_to_ycbcr420(rgb: torch.Tensor, colour: Colour) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`rgb_to_ycbcr` with each chroma sample that of its 2x2 block's mean colour: Y [H, W], Cb and Cr [H/2, W/2]
    (even H and W), the 4:2:0 encoder's choice (swscale's too)."""
    luma, cb, cr = rgb_to_ycbcr(rgb, colour)
    return luma, _block_mean(cb), _block_mean(cr)


def _block_mean(plane: torch.Tensor) -> torch.Tensor:
    """Means of the 2x2 blocks of [H, W]: four strided sums (a mean over interleaved axes is ten times slower)."""
    return (plane[0::2, 0::2] + plane[1::2, 0::2]).add_(plane[0::2, 1::2]).add_(plane[1::2, 1::2]).mul_(0.25)


def _range(colour: Colour) -> tuple[float, float, float]:
    """(luma span, chroma span, black level): limited range 219, 224, 16; full range 255, 255, 0."""
    return (255.0, 255.0, 0.0) if colour.range == FULL else (219.0, 224.0, 16.0)


def black_level(colour: Colour) -> float:
    """Luma of black in `colour`'s range."""
    return _range(colour)[2]


def round_levels(levels: torch.Tensor) -> torch.Tensor:
    """Float levels -> uint8, rounded half up and clamped to [0, 255] (the conversion truncates: the floor there)."""
    return levels.add(0.5).clamp_(0.0, 255.0).to(torch.uint8)


def crop_picture(planes: YuvPlanes, box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    """The square crop `box` of a 4:2:0 picture as RGB: uint8 [size, size, 3], outside the picture black.

    Each plane is resampled (Lanczos, `resample`) from its own samples at their own sites (H.273 chroma
    location 0, the H.264 default: chroma on the even columns, halfway between two rows), then the crop is
    converted to RGB at its own resolution. Resampling chroma from where it was sampled avoids
    interpolating it to every pixel first, and no RGB frame is needed: a 1080p face costs about what its
    crop of an RGB frame costs, without the frame's conversion (8 ms). Against cropping the decoder's RGB
    frame: 97.5 % of values within a level, more only at strong colour edges (`tests/test_compose_yuv.py`).

    Args:
        planes: the picture.
        box: (x0, y0, x1, y1) in the frame's pixel-corner coordinates; may leave the picture.
        size: side of the crop.
    """
    x0, y0, x1, y1 = box
    luma = resample_planes([planes.y], box, (size, size), black_level(planes.colour))[..., 0]
    # Chroma sample (i, j) is centred on the frame's pixel-corner point (2j + 1/2, 2i + 1), its own (j + 1/2, i + 1/2).
    chroma = resample_planes([planes.u, planes.v], (x0 / 2 + 0.25, y0 / 2, x1 / 2 + 0.25, y1 / 2), (size, size),
                             CHROMA_ZERO)
    return ycbcr_to_rgb8(luma, chroma[..., 0], chroma[..., 1], planes.colour)


def resample_planes(planes: list[torch.Tensor], box: tuple[float, float, float, float], size: tuple[int, int],
                    background: float) -> torch.Tensor:
    """`resample` of same-sized planes [h, w] taken together as channels, the outside of the planes being
    `background` (padded in where the filters reach past the edges): float32 levels [height, width, C] of
    `size` = (width, height)."""
    height, width = planes[0].shape
    x0, y0, x1, y1 = box
    # Every source pixel any filter tap can reach (`axis_taps`), plus one.
    reach_x = LANCZOS_LOBES * max((x1 - x0) / size[0], 1.0) + 1
    reach_y = LANCZOS_LOBES * max((y1 - y0) / size[1], 1.0) + 1
    left, right = math.floor(x0 - reach_x), math.ceil(x1 + reach_x)
    top, bottom = math.floor(y0 - reach_y), math.ceil(y1 + reach_y)
    inside = (slice(max(top, 0), min(bottom, height)), slice(max(left, 0), min(right, width)))
    if top >= 0 and left >= 0 and bottom <= height and right <= width:
        window = planes[0][inside][..., None] if len(planes) == 1 else torch.stack([p[inside] for p in planes], -1)
    else:
        # One fill and one copy per plane (not a stack, then a pad).
        window = torch.full((bottom - top, right - left, len(planes)), background, dtype=planes[0].dtype,
                            device=planes[0].device)
        rows = slice(inside[0].start - top, inside[0].stop - top)
        columns = slice(inside[1].start - left, inside[1].stop - left)
        for channel, plane in enumerate(planes):
            window[rows, columns, channel] = plane[inside]
    return resample(window, (x0 - left, y0 - top, x1 - left, y1 - top), size)


def ycbcr_to_rgb8(luma: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor, colour: Colour) -> torch.Tensor:
    """Float levels of Y, Cb, Cr [H, W] -> uint8 RGB [H, W, 3] by `colour`'s matrix and range, rounded half up
    and clamped (the inverse of `rgb_to_ycbcr`)."""
    kr, kb = LUMA_WEIGHTS[colour.matrix]
    kg = 1.0 - kr - kb
    luma_scale, chroma_scale, black = _range(colour)
    to_r, to_b = 2.0 * (1.0 - kr) * 255.0 / chroma_scale, 2.0 * (1.0 - kb) * 255.0 / chroma_scale
    y = (luma - black).mul_(255.0 / luma_scale)
    cb, cr = cb - CHROMA_ZERO, cr - CHROMA_ZERO
    # Written channel by channel into one image: stacking three planes costs more than the arithmetic.
    rgb = torch.empty((*y.shape, 3), dtype=torch.float32, device=y.device)
    torch.add(y, cr, alpha=to_r, out=rgb[..., 0])
    torch.add(y, cb, alpha=to_b, out=rgb[..., 2])
    # G from Y = kr·R + kg·G + kb·B.
    torch.add(y, cb, alpha=-kb * to_b / kg, out=rgb[..., 1]).add_(cr, alpha=-kr * to_r / kg)
    return round_levels(rgb)
