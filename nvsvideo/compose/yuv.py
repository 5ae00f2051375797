"""Decoded 4:2:0 pictures as torch planes, and RGB -> YCbCr by a video's matrix and range.

`rerender --output paste` composes in the decoded planes themselves: the render is converted to YCbCr
and blended into them where the feather mask is not zero, so every other sample goes to the encoder as
the decoder gave it (exact by construction, and no whole-frame RGB <-> YUV conversion on the way out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nvsvideo.video.colour import FULL, LUMA_WEIGHTS, Colour


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


def rgb_to_ycbcr420(rgb: torch.Tensor, colour: Colour) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB levels [H, W, 3] (float, even H and W) -> unrounded Y [H, W], Cb and Cr [H/2, W/2] levels.

    `colour`'s matrix (H.273 luma weights) and range (limited: Y 16-235, chroma 16-240; full: 0-255).
    Each chroma sample is that of its 2x2 block's mean colour, the 4:2:0 encoder's choice (swscale's too).
    """
    kr, kb = LUMA_WEIGHTS[colour.matrix]
    weights = torch.tensor([kr, 1.0 - kr - kb, kb], dtype=rgb.dtype, device=rgb.device)
    luma_scale, chroma_scale, black = (255.0, 255.0, 0.0) if colour.range == FULL else (219.0, 224.0, 16.0)
    # Four strided sums: a mean over the interleaved block axes is ten times slower on the CPU.
    block = (rgb[0::2, 0::2] + rgb[1::2, 0::2]).add_(rgb[0::2, 1::2]).add_(rgb[1::2, 1::2]).mul_(0.25)
    block_luma = block @ weights
    scale = chroma_scale / 255.0
    cb = (block[..., 2] - block_luma).mul_(scale / (2.0 * (1.0 - kb))).add_(128.0)
    cr = (block[..., 0] - block_luma).mul_(scale / (2.0 * (1.0 - kr))).add_(128.0)
    return (rgb @ weights).mul_(luma_scale / 255.0).add_(black), cb, cr


def round_levels(levels: torch.Tensor) -> torch.Tensor:
    """Float levels -> uint8, rounded half up and clamped to [0, 255]."""
    return levels.add(0.5).floor_().clamp_(0.0, 255.0).to(torch.uint8)

