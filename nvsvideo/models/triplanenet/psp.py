"""pSp GradualStyleEncoder: IR-SE-50 features -> feature pyramid -> one w vector per style.

TriPlaneNet's latent encoder (`psp_encoder.*`). It predicts w+ *offsets*; the model adds EG3D's
average latent to get the codes fed to the generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.models.kernels import itemwise
from nvsvideo.models.triplanenet.irse import STAGE_CHANNELS, IRSE50Trunk, stage_end

#: Styles 0..COARSE_END-1 read the 16x16 map, COARSE_END..MIDDLE_END-1 the 32x32 map, the rest 64x64.
COARSE_END = 3
MIDDLE_END = 7


def upsample_add(x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """FPN merge: bilinear upsampling (align_corners=True, as trained) of `x` to `lateral`'s size, plus it.

    Args:
        x: [B, C, h, w] coarser map.
        lateral: [B, C, H, W] finer map.
    Returns:
        [B, C, H, W].
    """
    return F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class EqualLinear(nn.Module):
    """Linear layer with the weight stored unscaled and multiplied by lr_multiplier / sqrt(in) at run time."""

    def __init__(
        self,
        in_features: int,  # Input features.
        out_features: int,  # Output features.
        lr_multiplier: float = 1.0,  # Learning-rate multiplier folded into the runtime scales.
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.lr_multiplier = lr_multiplier
        # Unit-variance storage: the runtime gain gives the layer a fan-in-scaled weight. Not drawn on the
        # meta device (how checkpoints are loaded): meta randn and scalar ops run torch's Python refs, whose
        # first use imports about 500 modules (torch._dynamo among them), 1-4 s of start-up.
        weight = torch.empty(out_features, in_features)
        if not weight.is_meta:
            weight = torch.randn(out_features, in_features).div_(lr_multiplier)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_multiplier)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, lr_multiplier={self.lr_multiplier}"


class GradualStyleBlock(nn.Module):
    """Stride-2 3x3 convs with LeakyReLU(0.01) down to 1x1, then an EqualLinear to one w vector."""

    def __init__(
        self,
        channels: int,  # Width of the input map and the convs.
        out_features: int,  # Output vector size (w_dim).
        spatial: int,  # Input resolution the block was built for; log2(spatial) convs reach 1x1.
    ) -> None:
        super().__init__()
        self.channels = channels
        self.out_features = out_features
        self.spatial = spatial
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(channels, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == self.channels, x.shape
        x = self.convs(x)
        return self.linear(x.flatten(1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, out_features={self.out_features}, spatial={self.spatial}"


class GradualStyleEncoder(IRSE50Trunk):
    """Image [B,3,256,256] in [-1,1] -> w+ offsets [B, num_styles, w_dim]."""

    def __init__(
        self,
        num_styles: int = 14,  # Number of w vectors (EG3D's backbone has 14).
        w_dim: int = 512,  # Size of each w vector.
        stage_channels: Sequence[int] = STAGE_CHANNELS,  # Trunk widths (the official ones by default).
        head_channels: int = 512,  # Width of the feature pyramid and of the style heads.
        resolution: int = 256,  # Input resolution the heads are built for.
    ) -> None:
        super().__init__(in_channels=3, stage_channels=stage_channels)
        self.num_styles = num_styles
        self.w_dim = w_dim
        self.head_channels = head_channels
        self.resolution = resolution
        self.taps = (stage_end(1), stage_end(2), stage_end(3))
        # The deepest trunk map is 1/16 of the input; the pyramid doubles it twice.
        coarse = resolution // 16
        spatial = [coarse if k < COARSE_END else 2 * coarse if k < MIDDLE_END else 4 * coarse for k in range(num_styles)]
        self.styles = nn.ModuleList(GradualStyleBlock(head_channels, w_dim, s) for s in spatial)
        self.latlayer1 = nn.Conv2d(self.stage_channels[2], head_channels, kernel_size=1)
        self.latlayer2 = nn.Conv2d(self.stage_channels[1], head_channels, kernel_size=1)
        assert self.stage_channels[3] == head_channels, "the coarse styles read the last trunk stage directly"

    @itemwise
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x [B,3,R,R], R = resolution. Returns: w+ offsets [B, num_styles, w_dim]."""
        assert x.shape[1:] == (3, self.resolution, self.resolution), x.shape
        c1, c2, c3 = self.features(x, self.taps)
        p2 = upsample_add(c3, self.latlayer1(c2))
        p1 = upsample_add(p2, self.latlayer2(c1))
        inputs = [c3] * COARSE_END + [p2] * (MIDDLE_END - COARSE_END) + [p1] * (self.num_styles - MIDDLE_END)
        return torch.stack([style(feat) for style, feat in zip(self.styles, inputs, strict=True)], dim=1)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, num_styles={self.num_styles}, w_dim={self.w_dim}, "
            f"head_channels={self.head_channels}, resolution={self.resolution}"
        )
