"""Wiring shared by the pipelines: finding and loading the models a command needs."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from nvsvideo.errors import InputError, UsageError, WeightsError
from nvsvideo.models.eg3d.checkpoint import build_generator, load_eg3d
from nvsvideo.models.eg3d.generator import TriPlaneGenerator
from nvsvideo.models.triplanenet.checkpoint import load_triplanenet
from nvsvideo.models.triplanenet.model import TriPlaneNet
from nvsvideo.weights import require_weight, resolve_weights_dir
from nvsvideo.weights.registry import DEFAULT_TRIPLANENET

#: The EG3D checkpoint used when none is named: the rebalanced FFHQ model renders side views best.
DEFAULT_EG3D = "eg3d-ffhqrebalanced512-128"
#: Memo of the model files' sha256 in the weights folder (see `nvsvideo.cache.fingerprint`).
FINGERPRINT_MEMO = ".fingerprints.json"


def resolve_eg3d_file(explicit: Path | None, weights_dir: Path | None,
                      env: Mapping[str, str] | None = None) -> Path:
    """The EG3D file to use: `explicit` if given (must exist), else the default from the weights folder.

    Raises:
        InputError: an explicit path that does not exist.
        WeightsError: no explicit path and the default checkpoint is not installed (says where to put it).
    """
    env = os.environ if env is None else env
    if explicit is not None:
        if not explicit.is_file():
            raise InputError(f"EG3D file {explicit} does not exist")
        return explicit
    return require_weight(DEFAULT_EG3D, resolve_weights_dir(weights_dir, env), env)


def fingerprint_memo(weights_dir: Path | None, env: Mapping[str, str] | None = None) -> Path | None:
    """Where model fingerprints are remembered: in the weights folder when it exists (it is never created
    for this, e.g. when every file is given with --triplanenet/--eg3d and no folder was set up), else None.

    One memo serves model files anywhere: entries are keyed by the file's own path and stat.
    """
    folder = resolve_weights_dir(weights_dir, os.environ if env is None else env)
    return folder / FINGERPRINT_MEMO if folder.is_dir() else None


def load_generator(path: Path, device: torch.device) -> TriPlaneGenerator:
    """Load an EG3D checkpoint (official .pkl, our .safetensors, or a TriPlaneNet .pt) onto `device`."""
    return build_generator(load_eg3d(path), device)


def resolve_triplanenet_file(version: str | None, explicit: Path | None, weights_dir: Path | None,
                             env: Mapping[str, str] | None = None) -> Path:
    """The TriPlaneNet checkpoint: `explicit` if given, else `triplanenet-<version>` (default v2) from the weights folder."""
    env = os.environ if env is None else env
    if version not in (None, "v1", "v2"):
        raise UsageError(f"unknown TriPlaneNet version {version!r}: use v1 or v2")
    if explicit is not None:
        if not explicit.is_file():
            raise InputError(f"TriPlaneNet file {explicit} does not exist")
        return explicit
    return require_weight(f"triplanenet-{version or DEFAULT_TRIPLANENET}", resolve_weights_dir(weights_dir, env), env)


def load_inverter(version: str | None, triplanenet: Path | None, eg3d: Path | None, weights_dir: Path | None,
                  device: torch.device) -> tuple[TriPlaneNet, list[Path]]:
    """The TriPlaneNet model (with its own or an explicit EG3D generator) and the files it came from.

    Args:
        version: v1 or v2 as asked for with --model; None takes the file's own version.

    Raises:
        WeightsError: the file's version differs from the one asked for: running the other silently
            would make results that do not match what the user asked for.
    """
    path = resolve_triplanenet_file(version, triplanenet, weights_dir)
    model = load_triplanenet(path, device, eg3d_path=eg3d)
    if version is not None and model.version != version:
        raise WeightsError(f"{path} is a TriPlaneNet {model.version} checkpoint, but --model {version} was asked "
                           f"for; pass a {version} file, or leave out --model to use the file's version")
    return model, [path] + ([eg3d] if eg3d is not None else [])
