"""Deep3DFaceRecon's reconstruction network: a ResNet-50 trunk and seven 1x1-conv heads (257 coefficients).

The trunk has torchvision's ResNet-50 layout and parameter names (stem `conv1`/`bn1`, stages `layer1`..`layer4`
of 3, 4, 6, 3 bottlenecks, the stride on each stage's first 3x3 conv, `downsample.0/1` shortcuts), written
here because torchvision is not a dependency. The classifier is absent (the official `use_last_fc=False`):
after global average pooling, seven 1x1 convolutions predict the coefficient groups, concatenated in the
official order (identity, expression, texture, angles, lighting, (tx, ty), tz).
"""

from __future__ import annotations

import torch
from torch import nn

#: Bottlenecks per stage of ResNet-50.
BLOCKS_PER_STAGE: tuple[int, ...] = (3, 4, 6, 3)
#: Inner width of each stage's bottlenecks; their output is four times wider.
STAGE_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
EXPANSION = 4
#: Coefficients per head, in the order of `final_layers` and of the output vector.
HEAD_SIZES: tuple[int, ...] = (80, 64, 80, 3, 27, 2, 1)
#: Column ranges of the named coefficient groups in the 257-vector (`split_coeff`).
COEFF_SLICES: dict[str, slice] = {
    "id": slice(0, 80),
    "exp": slice(80, 144),
    "tex": slice(144, 224),
    "angle": slice(224, 227),
    "gamma": slice(227, 254),
    "trans": slice(254, 257),
}
NUM_COEFFS = sum(HEAD_SIZES)
#: Side of the square input crop.
INPUT_SIZE = 224


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride) -> 1x1 expand, each with BatchNorm, plus the (projected) shortcut."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        width: int,  # Inner channels; the output has EXPANSION * width.
        stride: int,  # Spatial stride of the 3x3 conv and of the shortcut projection.
    ) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.in_channels, self.width, self.stride = in_channels, width, stride
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + shortcut)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, width={self.width}, stride={self.stride}"


class ResNet50Trunk(nn.Module):
    """ResNet-50 up to the global average pool: [B, 3, H, W] -> [B, 2048, 1, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, STAGE_WIDTHS[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = STAGE_WIDTHS[0]
        for stage, (blocks, width) in enumerate(zip(BLOCKS_PER_STAGE, STAGE_WIDTHS, strict=True)):
            layers = []
            for k in range(blocks):
                # Stage 1 keeps the resolution (the max-pool already halved it); the others halve it once.
                layers.append(Bottleneck(channels, width, stride=2 if k == 0 and stage > 0 else 1))
                channels = width * EXPANSION
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(len(BLOCKS_PER_STAGE)):
            x = getattr(self, f"layer{stage + 1}")(x)
        return self.avgpool(x)


class ReconNet(nn.Module):
    """Deep3DFaceRecon's `net_recon`: RGB crop in [0, 1] -> 257 face-model coefficients."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50Trunk()
        self.final_layers = nn.ModuleList(
            nn.Conv2d(self.backbone.out_channels, size, kernel_size=1) for size in HEAD_SIZES
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float [B, 3, 224, 224] RGB in [0, 1] (no mean/std normalisation). Returns [B, 257]."""
        assert x.ndim == 4 and x.shape[1] == 3, x.shape
        features = self.backbone(x)
        return torch.cat([head(features) for head in self.final_layers], dim=1).flatten(1)
