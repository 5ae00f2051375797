"""U-Net decoder shared by the v1 and v2 tri-plane predictors.

An IR-SE-50 trunk encodes the predictor input to 1/16 resolution; four `UpBlock`s climb back to 1/2,
each concatenating a trunk skip (first) with the upsampled deeper features (second) and mixing them
with a `DoubleConv`. The version-specific heads (subclasses) go from 1/2 to full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from nvsvideo.models.triplanenet.irse import STAGE_CHANNELS, IRSE50Trunk, stage_end

Upsample = Literal["pixel_shuffle", "nearest"]


def make_upsampler(mode: Upsample, scale: int) -> nn.Module:
    """x`scale` upsampling: PixelShuffle (divides channels by scale^2) or nearest (keeps channels)."""
    if scale == 1:
        return nn.Identity()
    if mode == "pixel_shuffle":
        return nn.PixelShuffle(scale)
    return nn.Upsample(scale_factor=scale, mode="nearest")


def upsampled_channels(mode: Upsample, channels: int, scale: int) -> int:
    """Channels after `make_upsampler(mode, scale)` applied to `channels` channels."""
    if mode == "pixel_shuffle":
        assert channels % (scale * scale) == 0, (channels, scale)
        return channels // (scale * scale)
    return channels


class DoubleConv(nn.Module):
    """BN -> conv3x3 -> PReLU -> conv3x3 -> PReLU -> PReLU.

    The two consecutive PReLUs are in the trained model (both have weights), so they are kept.
    """

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.double_conv = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.PReLU(out_channels),
            nn.PReLU(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


class UpBlock(nn.Module):
    """Upsample the deep input, concatenate [skip, upsampled], DoubleConv."""

    def __init__(
        self,
        deep_channels: int,  # Channels of the deeper input before upsampling.
        skip_channels: int,  # Channels of the trunk skip connection.
        out_channels: int,  # Output channels.
        upsample: Upsample,  # How the deeper input is upsampled.
        scale: int,  # Upsampling factor (1 for the bottom block).
    ) -> None:
        super().__init__()
        self.deep_channels = deep_channels
        self.skip_channels = skip_channels
        self.up = make_upsampler(upsample, scale)
        self.conv = DoubleConv(skip_channels + upsampled_channels(upsample, deep_channels, scale), out_channels)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        assert deep.shape[1] == self.deep_channels and skip.shape[1] == self.skip_channels, (deep.shape, skip.shape)
        return self.conv(torch.cat([skip, self.up(deep)], dim=1))

    def extra_repr(self) -> str:
        return f"deep_channels={self.deep_channels}, skip_channels={self.skip_channels}"


class TriPlaneUNet(IRSE50Trunk):
    """IR-SE-50 trunk + up1..up4; `decode` returns [B, up_channels[-1], R/2, R/2] features."""

    def __init__(
        self,
        in_channels: int,  # Predictor input channels (6 for v1, 9 for v2).
        up_channels: Sequence[int],  # Output channels of up1..up4.
        upsample: Upsample,  # Upsampling inside the U-Net.
        stage_channels: Sequence[int] = STAGE_CHANNELS,  # Trunk widths.
    ) -> None:
        super().__init__(in_channels=in_channels, stage_channels=stage_channels)
        assert len(up_channels) == 4
        self.up_channels = tuple(up_channels)
        self.upsample = upsample
        # Skips: end of stages 0, 1, 2, the first unit of stage 3; the deepest input is the trunk output.
        self.taps = (stage_end(0), stage_end(1), stage_end(2), stage_end(2) + 1, stage_end(3))
        s0, s1, s2, s3 = self.stage_channels
        self.up1 = UpBlock(s3, s3, up_channels[0], upsample, scale=1)
        self.up2 = UpBlock(up_channels[0], s2, up_channels[1], upsample, scale=2)
        self.up3 = UpBlock(up_channels[1], s1, up_channels[2], upsample, scale=2)
        self.up4 = UpBlock(up_channels[2], s0, up_channels[3], upsample, scale=2)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B, in_channels, R, R]. Returns: [B, up_channels[3], R/2, R/2]."""
        c0, c1, c2, c3, deepest = self.features(x, self.taps)
        y = self.up1(deepest, c3)
        y = self.up2(y, c2)
        y = self.up3(y, c1)
        return self.up4(y, c0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, up_channels={self.up_channels}, upsample={self.upsample!r}"


def plane_head(in_channels: int, plane_channels: int) -> nn.Sequential:
    """conv3x3 -> PReLU -> conv3x3 -> PReLU -> conv1x1, all with bias, ending at `plane_channels`."""
    return nn.Sequential(
        nn.Conv2d(in_channels, plane_channels, kernel_size=3, padding=1),
        nn.PReLU(plane_channels),
        nn.Conv2d(plane_channels, plane_channels, kernel_size=3, padding=1),
        nn.PReLU(plane_channels),
        nn.Conv2d(plane_channels, plane_channels, kernel_size=1),
    )
