"""IR-SE-50 trunk shared by TriPlaneNet's two encoders.

The trunk is the face-recognition ResNet "IR-SE-50" (improved residual units with squeeze-and-excitation):
a 3x3 stem and 24 bottleneck units in four stages of (3, 4, 14, 3) units, the first unit of each stage
halving the resolution. Both TriPlaneNet encoders subclass `IRSE50Trunk`, so the stem and the units sit
directly under the encoder as `input_layer.*` and `body.<unit>.*`, the names of the official checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Units per stage of IR-SE-50 (the "50" counts 2 convs per unit plus stem and head of the classifier).
UNITS_PER_STAGE: tuple[int, ...] = (3, 4, 14, 3)
#: Output channels per stage of the official trunk.
STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512)


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> bottleneck MLP (1x1 convs, no bias) -> sigmoid -> scale."""

    def __init__(
        self,
        channels: int,  # Input and output channels.
        reduction: int = 16,  # Bottleneck width divisor.
    ) -> None:
        super().__init__()
        self.channels = channels
        self.reduction = reduction
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(gate))))
        return x * gate

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: BN -> conv3x3 -> PReLU -> conv3x3 (stride) -> BN -> SE, plus a shortcut."""

    def __init__(
        self,
        in_channels: int,  # Input channels.
        out_channels: int,  # Output channels.
        stride: int,  # Spatial stride of the unit (1 or 2), applied by the second conv and the shortcut.
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        if in_channels == out_channels:
            # Equal widths: the shortcut only subsamples (a 1x1 max-pool is plain striding).
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            SqueezeExcite(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, stride={self.stride}"


class IRSE50Trunk(nn.Module):
    """Stem + 24 IR-SE units; subclasses read intermediate unit outputs through `features`."""

    def __init__(
        self,
        in_channels: int,  # Input image channels (3 for pSp, 6 or 9 for the tri-plane predictors).
        stage_channels: Sequence[int] = STAGE_CHANNELS,  # Output channels of the four stages.
    ) -> None:
        super().__init__()
        assert len(stage_channels) == len(UNITS_PER_STAGE)
        self.in_channels = in_channels
        self.stage_channels = tuple(stage_channels)
        stem_channels = self.stage_channels[0]
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, stem_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.PReLU(stem_channels),
        )
        units: list[nn.Module] = []
        width = stem_channels
        for num_units, out_channels in zip(UNITS_PER_STAGE, self.stage_channels, strict=True):
            for k in range(num_units):
                units.append(BottleneckIRSE(width, out_channels, stride=2 if k == 0 else 1))
                width = out_channels
        self.body = nn.Sequential(*units)

    def features(self, x: torch.Tensor, taps: Sequence[int]) -> list[torch.Tensor]:
        """Run the stem and the units up to the last tap.

        Args:
            x: [B, in_channels, H, W] input.
            taps: increasing unit indices (0..23) whose outputs are returned.
        Returns:
            One tensor per tap, [B, C_stage, H / 2^(stage+1), W / 2^(stage+1)].
        """
        assert x.ndim == 4 and x.shape[1] == self.in_channels, x.shape
        wanted = set(taps)
        out: list[torch.Tensor] = []
        x = self.input_layer(x)
        for index, unit in enumerate(self.body[: max(taps) + 1]):
            x = unit(x)
            if index in wanted:
                out.append(x)
        return out

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, stage_channels={self.stage_channels}"


def stage_end(stage: int) -> int:
    """Index of the last unit of `stage` (0-based), e.g. 2, 6, 20, 23 for IR-SE-50."""
    return sum(UNITS_PER_STAGE[: stage + 1]) - 1
