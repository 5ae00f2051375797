"""TriPlaneNet v1 tri-plane offset predictor (`triplanenet_encoder.*` of v1 checkpoints)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nvsvideo.models.kernels import itemwise
from nvsvideo.models.triplanenet.irse import STAGE_CHANNELS
from nvsvideo.models.triplanenet.unet import TriPlaneUNet, plane_head, upsampled_channels

#: Output channels of up1..up4 in the official v1 model.
UP_CHANNELS_V1: tuple[int, ...] = (512, 384, 256, 96)


class TriPlaneOffsetsV1(TriPlaneUNet):
    """cat[y0, x - y0] [B,6,R,R] -> tri-plane offsets [B, 96, R, R], added to the EG3D backbone planes."""

    version = "v1"

    def __init__(
        self,
        plane_channels: int = 96,  # Tri-plane channels (3 planes x 32 features).
        up_channels: Sequence[int] = UP_CHANNELS_V1,  # Output channels of up1..up4.
        stage_channels: Sequence[int] = STAGE_CHANNELS,  # Trunk widths.
    ) -> None:
        super().__init__(
            in_channels=6, up_channels=up_channels, upsample="pixel_shuffle", stage_channels=stage_channels
        )
        self.plane_channels = plane_channels
        self.head = nn.PixelShuffle(2)
        self.final_head = plane_head(upsampled_channels("pixel_shuffle", self.up_channels[3], 2), plane_channels)

    @itemwise
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B,6,R,R] = cat[initial render, input - initial render]. Returns: offsets [B,96,R,R]."""
        assert x.ndim == 4 and x.shape[1] == 6, x.shape
        return self.final_head(self.head(self.decode(x)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, plane_channels={self.plane_channels}"
