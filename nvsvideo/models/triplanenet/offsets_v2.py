"""TriPlaneNet v2 tri-plane predictor (`triplanenet_encoder.*` of v2 checkpoints).

Unlike v1 it also reads the mirror view and the initial planes, and returns the final planes
(initial planes + a predicted residual). Two variants exist, selected by the training option
`use_pixelshuffle`; they differ in how the U-Net upsamples and hence in their layer widths.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from nvsvideo.models.kernels import itemwise
from nvsvideo.models.triplanenet.irse import STAGE_CHANNELS
from nvsvideo.models.triplanenet.unet import (
    TriPlaneUNet,
    Upsample,
    make_upsampler,
    plane_head,
    upsampled_channels,
)

#: Output channels of up1..up4 of the official variants.
UP_CHANNELS_V2: dict[str, tuple[int, ...]] = {
    "pixel_shuffle": (512, 384, 256, 96),
    "nearest": (512, 256, 128, 64),
}


class TriPlanePredictorV2(TriPlaneUNet):
    """(cat[y0, x - y0, x_m - y0_m] [B,9,R,R], planes0 [B,96,R,R]) -> planes [B,96,R,R]."""

    version = "v2"

    def __init__(
        self,
        upsample: Upsample = "pixel_shuffle",  # U-Net upsampling: the two official variants.
        plane_channels: int = 96,  # Tri-plane channels (3 planes x 32 features).
        up_channels: Sequence[int] | None = None,  # Output channels of up1..up4; None = the official ones.
        stage_channels: Sequence[int] = STAGE_CHANNELS,  # Trunk widths.
    ) -> None:
        super().__init__(
            in_channels=9,
            up_channels=UP_CHANNELS_V2[upsample] if up_channels is None else up_channels,
            upsample=upsample,
            stage_channels=stage_channels,
        )
        self.plane_channels = plane_channels
        self.up5 = make_upsampler(upsample, 2)
        # The head sees the initial planes first, then the decoder features.
        head_in = plane_channels + upsampled_channels(upsample, self.up_channels[3], 2)
        self.final_head_two = plane_head(head_in, plane_channels)

    @itemwise
    def forward(self, x: torch.Tensor, planes0: torch.Tensor) -> torch.Tensor:
        """Args:
            x: [B,9,R,R] = cat[initial render, input - initial render, mirrored input - initial mirror render].
            planes0: [B,96,R,R] initial planes (EG3D backbone output for the pSp codes).
        Returns:
            planes [B,96,R,R] = planes0 + predicted residual.
        """
        assert x.ndim == 4 and x.shape[1] == 9, x.shape
        assert planes0.shape == (x.shape[0], self.plane_channels, *x.shape[2:]), planes0.shape
        features = self.up5(self.decode(x))
        return planes0 + self.final_head_two(torch.cat([planes0, features], dim=1))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, plane_channels={self.plane_channels}"
