"""LPIPS (Zhang et al. 2018, v0.1, AlexNet trunk) without torchvision, reading the official files.

LPIPS compares unit-normalised AlexNet activations of two images at five depths, weights the squared
differences per channel with learned linear layers, averages them over space and sums the depths.
Two files are needed, both plain state dicts read with `torch.load(weights_only=True)`:
the LPIPS linear layers (`alex.pth` of the `lpips` package, keys `lin{k}.model.1.weight`) and
torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`, keys `features.{i}.weight/bias`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from nvsvideo.errors import WeightsError
from nvsvideo.torchfile import load_weights_only

#: Channels of AlexNet's five ReLU outputs that LPIPS compares.
ALEX_CHANNELS: tuple[int, ...] = (64, 192, 384, 256, 256)
#: Indices in torchvision's `alexnet().features` of those ReLUs.
ALEX_TAPS: tuple[int, ...] = (1, 4, 7, 9, 11)
#: LPIPS v0.1 maps inputs in [-1, 1] to ImageNet's statistics with this shift and scale per RGB channel.
LPIPS_SHIFT: tuple[float, ...] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: tuple[float, ...] = (0.458, 0.448, 0.450)
#: Added to feature norms so an all-zero activation does not divide by zero (LPIPS's value).
NORM_EPS = 1e-10


def scale_input(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] images in [-1, 1] -> the AlexNet input LPIPS v0.1 uses."""
    shift = images.new_tensor(LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = images.new_tensor(LPIPS_SCALE).view(1, 3, 1, 1)
    return (images - shift) / scale


def unit_normalize(features: torch.Tensor) -> torch.Tensor:
    """Divide each pixel's feature vector [B, C, H, W] by its Euclidean norm over C."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + NORM_EPS)


def layer_distance(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """One depth's contribution: spatial mean of Σ_c w_c (â_c - b̂_c)², â and b̂ unit-normalised; [B]."""
    diff = (unit_normalize(a) - unit_normalize(b)).square()
    return (diff * weights.view(1, -1, 1, 1)).sum(dim=1).mean(dim=(1, 2))


def alexnet_features() -> nn.Sequential:
    """torchvision's `alexnet().features` layout (same indices, so its state dict loads by name)."""
    c1, c2, c3, c4, c5 = ALEX_CHANNELS
    return nn.Sequential(
        nn.Conv2d(3, c1, 11, stride=4, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),
        nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(),
    )  # fmt: skip


class LPIPS(nn.Module):
    """LPIPS distance (alex, v0.1) of image pairs in [-1, 1]; 0 for identical images."""

    def __init__(self) -> None:
        super().__init__()
        self.features = alexnet_features()
        # The five linear layers' weights, concatenated (they are 1x1 convolutions without bias).
        self.register_buffer("lin", torch.zeros(sum(ALEX_CHANNELS)))

    def taps(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs of AlexNet for LPIPS-scaled `images`."""
        out = []
        x = scale_input(images)
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in ALEX_TAPS:
                out.append(x)
        return out

    @torch.inference_mode()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """[B] distances of [B, 3, H, W] image pairs."""
        weights = torch.split(self.lin, ALEX_CHANNELS)
        pairs = zip(self.taps(a), self.taps(b), weights, strict=True)
        return torch.stack([layer_distance(fa, fb, w) for fa, fb, w in pairs]).sum(dim=0)


def lpips_state(backbone: Mapping[str, torch.Tensor], linear: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our module's state dict from the two official ones (the classifier of AlexNet is not needed)."""
    state = {k: v for k, v in backbone.items() if k.startswith("features.")}
    try:
        state["lin"] = torch.cat([linear[f"lin{k}.model.1.weight"].flatten() for k in range(len(ALEX_TAPS))])
    except KeyError as err:
        raise WeightsError(f"not an LPIPS alex linear-layer file: no tensor {err.args[0]}") from None
    return state


def load_lpips(backbone_path: Path, linear_path: Path, device: torch.device) -> LPIPS:
    """LPIPS from torchvision's AlexNet file and the lpips package's `alex.pth`, read as data only.

    Raises:
        WeightsError: a file is missing, unreadable, or its tensors have other names or shapes.
    """
    backbone = load_weights_only(backbone_path, what="AlexNet")
    linear = load_weights_only(linear_path, what="LPIPS linear-layer")
    for path, obj in ((backbone_path, backbone), (linear_path, linear)):
        if not isinstance(obj, dict):
            raise WeightsError(f"{path} is not a state dict")
    model = LPIPS()
    try:
        model.load_state_dict(lpips_state(backbone, linear))
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(f"{backbone_path} and {linear_path} do not hold LPIPS alex weights ({detail})") from None
    return model.eval().to(device)
