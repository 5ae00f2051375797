"""Formula weights of the TriPlaneNet parity fixtures (`shared/interop/parity/triplanenet_*`).

The fixtures store no encoder weights: every tensor is a hashed sine of its name, defined in the
fixture README ("Formula rule"). This module implements that rule from the text and reads the
state-dict manifests (`shared/interop/triplanenet_*_state_dict.tsv`).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: Manifest file per variant, relative to shared/interop.
MANIFESTS = {
    "v1": "triplanenet_v1_state_dict.tsv",
    "v2-pixelshuffle": "triplanenet_v2_state_dict.tsv",
    "v2-nearest": "triplanenet_v2_nopixelshuffle_state_dict.tsv",
}


@dataclass(frozen=True)
class ManifestEntry:
    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "param" or "buffer"


@dataclass(frozen=True)
class FormulaConstants:
    a_conv: float = 2.0
    a_lin: float = 3.0
    b: float = 0.1
    p: int = 10007
    phase_offset: float = 0.0


def read_manifest(path: Path) -> list[ManifestEntry]:
    """Rows of a state-dict manifest, in state-dict order ('#' lines are comments)."""
    entries = []
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, shape, dtype, kind = line.split("\t")
        dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
        entries.append(ManifestEntry(name, dims, dtype, kind))
    return entries


def hashed_uniform(name: str, numel: int, constants: FormulaConstants) -> np.ndarray:
    """u in [-1, 1) for the flat elements of tensor `name` (float64, [numel])."""
    phase = 2.0 * math.pi * (zlib.crc32(name.encode("utf-8")) % constants.p) / constants.p + constants.phase_offset
    y = 43758.5453 * np.sin(12.9898 * np.arange(numel, dtype=np.float64) + phase)
    return 2.0 * (y - np.floor(y)) - 1.0


def formula_kind(name: str, shape: tuple[int, ...], names: set[str]) -> str:
    """The README's tensor kind: which rule of the formula table applies."""
    stem, leaf = name.rsplit(".", 1)
    is_bn = f"{stem}.running_mean" in names
    if leaf == "num_batches_tracked":
        return "bn_count"
    if leaf == "running_mean":
        return "bn_mean"
    if leaf == "running_var":
        return "bn_var"
    if leaf == "weight":
        if is_bn:
            return "bn_weight"
        return {1: "prelu_weight", 2: "linear_weight", 4: "conv_weight"}[len(shape)]
    if leaf == "bias":
        return "bn_bias" if is_bn else "bias"
    raise ValueError(f"no formula rule for {name}")


def formula_tensor(name: str, shape: tuple[int, ...], kind: str, constants: FormulaConstants) -> torch.Tensor:
    """The fixture value of one tensor."""
    if kind == "bn_count":
        return torch.zeros((), dtype=torch.int64)
    u = hashed_uniform(name, math.prod(shape), constants)
    if kind == "bn_mean":
        v = constants.b * u
    elif kind == "bn_var":
        v = 1.0 + 0.5 * np.abs(u)
    elif kind == "bn_weight":
        v = 1.0 + constants.b * u
    elif kind in ("bn_bias", "bias"):
        v = constants.b * u
    elif kind == "prelu_weight":
        v = 0.25 + 0.05 * u
    elif kind == "conv_weight":
        v = constants.a_conv * u / math.sqrt(math.prod(shape[1:]))
    elif kind == "linear_weight":
        v = constants.a_lin * u
    else:
        raise ValueError(kind)
    return torch.from_numpy(v.astype(np.float32)).reshape(shape)


def formula_state_dict(
    entries: list[ManifestEntry], prefix: str, constants: FormulaConstants
) -> dict[str, torch.Tensor]:
    """Formula values of every manifest tensor under `prefix` (e.g. 'psp_encoder.'), prefix kept."""
    names = {e.name for e in entries}
    return {
        e.name: formula_tensor(e.name, e.shape, formula_kind(e.name, e.shape, names), constants)
        for e in entries
        if e.name.startswith(prefix)
    }
