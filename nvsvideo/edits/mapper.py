"""StyleCLIP latent mapper over EG3D's w+, loading In-N-Out's `best_model.pt` checkpoints.

The mapper splits w+ [B, 14, 512] into three layer groups (coarse 0-3, medium 4-7, fine 8-13)
and runs each present group through its own small network; absent groups give zeros:

    x_g   = w[:, layers_g]                                             [B, n_g, 512]
    x_g  <- x_g / sqrt(mean_over_layers(x_g^2) + 1e-8)                 (dim 1: the LAYER axis)
    x_g  <- sqrt(2) * leaky_relu(x_g @ (c * W_k)^T + lr * b_k, 0.2)    k = 1..4
            with lr = 0.01 and c = lr / sqrt(512)
    M(w)  = concat_g x_g                                               [B, 14, 512]
    w'    = w + s * M(w)

The normalisation over the layer axis (not the channels) is what the official code does, so it is
kept to reproduce official checkpoints. `s` is the checkpoint's training `factor_step`; nvsvideo
calls `s * M(w)` the mapper's unit delta, and the user's `--strength` multiplies it.

Checkpoint layout: `{'state_dict': {...}, 'opts': {...}}`, with the mapper under
`mapper.{course,medium,fine}_mapping.mapping.{1..4}.{weight,bias}` ("course" is the official
spelling), index 0 being the parameter-free normalisation, and the whole generator the mapper was
trained with under `decoder.*` (ignored here, but used to recognise StyleGAN2 mappers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nvsvideo.edits.loading import read_torch_file
from nvsvideo.edits.wplus import NUM_WS, W_DIM, check_wplus
from nvsvideo.errors import WeightsError

#: The strength In-N-Out and StyleCLIP train with, used when a checkpoint does not record its own.
DEFAULT_FACTOR_STEP = 0.1

#: Resolution StyleCLIP records (`stylegan_size`) for EG3D's FFHQ generators.
_EG3D_SIZE = 512


@dataclass(frozen=True)
class LayerGroup:
    """One group of w+ layers that has its own mapper network."""

    name: str
    """Our name for the group (coarse, medium, fine)."""
    key: str
    """Attribute / state-dict name of its network, spelled as in official checkpoints."""
    start: int
    """First w+ layer of the group."""
    stop: int
    """One past its last w+ layer."""


LAYER_GROUPS: tuple[LayerGroup, ...] = (
    LayerGroup(name="coarse", key="course_mapping", start=0, stop=4),
    LayerGroup(name="medium", key="medium_mapping", start=4, stop=8),
    LayerGroup(name="fine", key="fine_mapping", start=8, stop=NUM_WS),
)
_GROUP_BY_KEY = {group.key: group for group in LAYER_GROUPS}
_MAPPER_KEY_RE = re.compile(r"^mapper\.(?P<key>\w+_mapping)\.mapping\.(?P<index>\d+)\.(?P<param>weight|bias)$")


def normalize_over_layers(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Scale each channel to unit RMS across the layers of a group.

    Args:
        x: [B, L, C] slice of w+.

    Returns:
        [B, L, C]; every (b, :, c) column has mean square 1 over L.
    """
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


class EqualizedLinear(nn.Module):
    """Linear layer with runtime weight scaling and a scaled leaky ReLU after the bias.

    Stored weights are the trained ones divided by `lr_multiplier` (the equalised learning-rate
    trick), so they are rescaled on every call instead of once at load time, to keep the
    checkpoint's numbers as they are.
    """

    def __init__(
        self,
        in_features: int,       # Input channels.
        out_features: int,      # Output channels.
        lr_multiplier: float,   # Learning-rate multiplier the stored weight and bias were trained under.
        negative_slope: float = 0.2,  # Leaky ReLU slope for negative inputs.
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.lr_multiplier = lr_multiplier
        self.negative_slope = negative_slope
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        # Values come from the checkpoint; zeros keep an unloaded module inert and deterministic.
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: Tensor) -> Tensor:
        """[..., in_features] -> [..., out_features]."""
        assert x.shape[-1] == self.in_features, f"expected {self.in_features} channels, got {x.shape[-1]}"
        y = F.linear(x, self.weight * self.weight_gain) + self.bias * self.lr_multiplier
        return F.leaky_relu(y, self.negative_slope) * math.sqrt(2.0)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"lr_multiplier={self.lr_multiplier}, negative_slope={self.negative_slope}")


class LayerAxisNorm(nn.Module):
    """Parameter-free normalisation over the layer axis (index 0 of each official group network)."""

    def forward(self, x: Tensor) -> Tensor:
        return normalize_over_layers(x)


class GroupMapper(nn.Module):
    """The network of one layer group: normalisation, then `depth` equalised linear layers."""

    def __init__(
        self,
        num_layers: int,             # w+ layers in the group (4, 4 or 6 for EG3D).
        channels: int = W_DIM,       # Channels of each w.
        depth: int = 4,              # Number of linear layers.
        lr_multiplier: float = 0.01, # Learning-rate multiplier of every linear layer.
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.channels = channels
        layers: list[nn.Module] = [LayerAxisNorm()]
        layers += [EqualizedLinear(channels, channels, lr_multiplier=lr_multiplier) for _ in range(depth)]
        # Named `mapping` with the normalisation at index 0 so state-dict keys match the official ones.
        self.mapping = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """[B, num_layers, channels] -> [B, num_layers, channels]."""
        assert x.ndim == 3 and tuple(x.shape[1:]) == (self.num_layers, self.channels), list(x.shape)
        return self.mapping(x)

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}, channels={self.channels}"


class LatentMapper(nn.Module):
    """StyleCLIP levels mapper for EG3D w+: `forward` is M(w), `unit_delta` is s * M(w)."""

    kind: ClassVar[str] = "mapper"

    def __init__(
        self,
        groups: Iterable[str],                     # Names of the groups with a network (see LAYER_GROUPS).
        factor_step: float = DEFAULT_FACTOR_STEP,  # Scale s of M(w) that strength 1 means.
        description: str = "",                     # The text prompt it was trained for, if known.
    ) -> None:
        super().__init__()
        wanted = set(groups)
        unknown = wanted - {group.name for group in LAYER_GROUPS}
        assert not unknown, f"unknown layer groups {sorted(unknown)}"
        self.groups = tuple(group.name for group in LAYER_GROUPS if group.name in wanted)
        self.factor_step = factor_step
        self.description = description
        for group in LAYER_GROUPS:
            if group.name in wanted:
                self.add_module(group.key, GroupMapper(num_layers=group.stop - group.start))

    def forward(self, ws: Tensor) -> Tensor:
        """M(w): [B, 14, 512] -> [B, 14, 512], zeros on the layers of absent groups."""
        check_wplus(ws)
        parts = []
        for group in LAYER_GROUPS:
            x = ws[:, group.start:group.stop]
            parts.append(self.get_submodule(group.key)(x) if group.name in self.groups else torch.zeros_like(x))
        return torch.cat(parts, dim=1)

    def unit_delta(self, ws: Tensor) -> Tensor:
        """The change strength 1 makes: s * M(w), [B, 14, 512]."""
        return self.factor_step * self(ws)

    def extra_repr(self) -> str:
        return f"groups={self.groups}, factor_step={self.factor_step}, description={self.description!r}"


def detect_groups(keys: Iterable[str], *, source: str) -> tuple[str, ...]:
    """Which layer groups a checkpoint has, read from its `mapper.*` key names.

    Args:
        keys: state-dict keys (other prefixes such as `decoder.` are ignored).
        source: the file, for messages.

    Returns:
        Group names in layer order, e.g. ("coarse", "medium") for a mapper without fine layers.

    Raises:
        WeightsError: no mapper keys, or keys of another mapper kind (single or style-space).
    """
    found: set[str] = set()
    for key in keys:
        if not key.startswith("mapper."):
            continue
        match = _MAPPER_KEY_RE.match(key)
        if match is None or match["key"] not in _GROUP_BY_KEY:
            raise WeightsError(
                f"{source} holds mapper key '{key}', which is not part of a StyleCLIP levels mapper "
                "(course/medium/fine_mapping); only levels mappers are supported"
            )
        found.add(_GROUP_BY_KEY[match["key"]].name)
    if not found:
        raise WeightsError(f"{source} holds no 'mapper.*' weights, so it is not a StyleCLIP mapper checkpoint")
    return tuple(group.name for group in LAYER_GROUPS if group.name in found)


def check_made_for_eg3d(keys: Iterable[str], opts: Mapping[str, object], *, source: str) -> None:
    """Refuse mappers trained for a 2D StyleGAN2 (18-layer w+), whose tensors have identical shapes.

    The evidence is the training options (`stylegan_size`, `stylegan_weights`, `mapper_type`) and
    the generator stored under `decoder.*` (EG3D's has `backbone` and `superresolution` parts).
    A file with no options and no generator cannot be told apart and is accepted.

    Raises:
        WeightsError: naming the evidence found.
    """
    reasons = []
    size = opts.get("stylegan_size")
    if size is not None and size != _EG3D_SIZE:
        reasons.append(f"its options say stylegan_size={size}")
    generator_name = Path(str(opts.get("stylegan_weights") or "")).name
    if "stylegan" in generator_name.lower():
        reasons.append(f"its options name the generator '{generator_name}'")
    mapper_type = opts.get("mapper_type", "LevelsMapper")
    if mapper_type != "LevelsMapper":
        reasons.append(f"its options say mapper_type='{mapper_type}'")
    decoder_keys = [key for key in keys if key.startswith("decoder.")]
    if decoder_keys and not any(key.startswith(("decoder.backbone.", "decoder.superresolution.")) for key in decoder_keys):
        reasons.append("the generator stored with it is not EG3D")
    if reasons:
        raise WeightsError(
            f"{source} is not a mapper for EG3D ({'; '.join(reasons)}): StyleCLIP's 2D StyleGAN2 mappers "
            "have the same tensor shapes but mean nothing for EG3D's 14 layers; use an EG3D mapper such as In-N-Out's"
        )


def mapper_from_checkpoint(checkpoint: object, *, source: str) -> LatentMapper:
    """Build a `LatentMapper` from a loaded checkpoint (official dict, or a bare state dict).

    Args:
        checkpoint: what `read_torch_file` returned.
        source: the file, for messages.

    Raises:
        WeightsError: not a mapper, not for EG3D, or incomplete / mis-shaped groups.
    """
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{source} holds a {type(checkpoint).__name__}, not a mapper checkpoint dictionary")
    state = checkpoint.get("state_dict", checkpoint)
    opts = checkpoint.get("opts") or {}
    if not isinstance(state, Mapping) or not isinstance(opts, Mapping):
        raise WeightsError(f"{source} does not have the StyleCLIP layout {{'state_dict': ..., 'opts': ...}}")
    check_made_for_eg3d(state.keys(), opts, source=source)
    groups = detect_groups(state.keys(), source=source)
    factor_step = opts.get("factor_step", DEFAULT_FACTOR_STEP)
    if not isinstance(factor_step, (int, float)) or not math.isfinite(factor_step):
        raise WeightsError(f"{source} records an unusable factor_step {factor_step!r}")
    mapper = LatentMapper(groups=groups, factor_step=float(factor_step), description=str(opts.get("description", "")))
    mapper_state = {key.removeprefix("mapper."): value for key, value in state.items() if key.startswith("mapper.")}
    try:
        mapper.load_state_dict(mapper_state, strict=True)
    except RuntimeError as err:
        raise WeightsError(f"{source} has incomplete or mis-shaped mapper weights for groups {groups}: {err}") from err
    if not all(bool(torch.isfinite(p).all()) for p in mapper.parameters()):
        raise WeightsError(f"{source} has non-finite mapper weights")
    return mapper.requires_grad_(False).eval()


def load_mapper(path: Path) -> LatentMapper:
    """Load an EG3D StyleCLIP mapper (In-N-Out `best_model.pt` layout) on the CPU.

    Raises:
        WeightsError: unsafe, unreadable, not a levels mapper, or not for EG3D.
    """
    return mapper_from_checkpoint(read_torch_file(path, what="mapper"), source=str(path))
