"""Check weight files against what the official code writes: tensor names and shapes.

The manifests in `manifests/` are facts recorded from the official models' `state_dict()`s; they
let users check a download without the official code. Reading a file for checking goes through the
same safe loaders as real use (restricted unpickler, `torch.load(weights_only=True)`, safetensors).
"""

from __future__ import annotations

import json
import struct
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvsvideo.errors import WeightsError
from nvsvideo.torchfile import load_weights_only
from nvsvideo.weights.registry import (
    KIND_DIRECTION,
    KIND_EG3D,
    KIND_LANDMARKS,
    KIND_MAPPER,
    KIND_POSE,
    KIND_TRIPLANENET,
    KNOWN_WEIGHTS,
    WeightFile,
    available_edits,
    expected_path,
    file_sha256,
    locate,
    user_edit,
)

Shapes = Mapping[str, tuple[int, ...]]

#: TriPlaneNet manifests: variant -> encoder manifest file (the psp encoder and generator are shared).
TRIPLANENET_VARIANTS = {
    "v1": "triplanenet_v1_encoder.tsv",
    "v2": "triplanenet_v2_encoder.tsv",
    "v2-nopixelshuffle": "triplanenet_v2_nopixelshuffle_encoder.tsv",
}

# In-N-Out's LevelsMapper: three groups (spelled "course" in the official code), four 512x512 layers each.
_MAPPER_GROUPS = ("course", "medium", "fine")
_MAPPER_LAYERS = (1, 2, 3, 4)
_W_PLUS_SIZE = 14 * 512


@dataclass(frozen=True)
class TensorSpec:
    """One manifest row."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Verification:
    """Outcome of checking one file: `ok` and a one-line human detail."""

    ok: bool
    detail: str


def read_manifest(filename: str) -> list[TensorSpec]:
    """Rows of a packaged manifest (`name<TAB>[d0,d1,...]<TAB>dtype`, `#` comments)."""
    text = resources.files("nvsvideo.weights").joinpath("manifests", filename).read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, shape, dtype = line.split("\t")
            rows.append(TensorSpec(name, tuple(json.loads(shape)), dtype))
    return rows


def eg3d_manifest() -> list[TensorSpec]:
    """The 177 tensors of the FFHQ 512/128 EG3D `G_ema`, in state-dict order."""
    return read_manifest("eg3d_ffhq512-128.tsv")


def triplanenet_manifest(variant: str) -> list[TensorSpec]:
    """All 1182 tensors of a TriPlaneNet checkpoint's `state_dict`, in order."""
    if variant not in TRIPLANENET_VARIANTS:
        raise WeightsError(f"unknown TriPlaneNet variant '{variant}'; known: {', '.join(TRIPLANENET_VARIANTS)}")
    # The frozen generator is stored as `decoder.` without the training-only label buffer.
    decoder = [TensorSpec(f"decoder.{row.name}", row.shape, row.dtype) for row in eg3d_manifest()[1:]]
    return read_manifest("triplanenet_psp_encoder.tsv") + read_manifest(TRIPLANENET_VARIANTS[variant]) + decoder


def compare_shapes(shapes: Shapes, manifest: Sequence[TensorSpec], optional: frozenset[str] = frozenset()) -> list[str]:
    """Differences between a file's tensors and a manifest, as short phrases (empty when they agree)."""
    expected = {row.name: row.shape for row in manifest}
    missing = [name for name in expected if name not in shapes and name not in optional]
    unexpected = [name for name in shapes if name not in expected]
    wrong = [f"{n} is {list(shapes[n])} not {list(expected[n])}" for n in expected if n in shapes and shapes[n] != expected[n]]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (e.g. {wrong[0]})")
    return problems


def quick_check(path: Path) -> str | None:
    """A cheap look at the file's first bytes: None if it looks like a model file, else the problem."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if size == 0:
        return "the file is empty"
    if head.lstrip().startswith((b"<", b"{")) and path.suffix != ".safetensors":
        return "the file is a web page or text, not weights (a failed download?)"
    if path.suffix == ".safetensors":
        header_len = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else size
        return None if 8 + header_len <= size and head[8:9] == b"{" else "not a valid safetensors file"
    if head.startswith((b"PK\x03\x04", b"\x80", b"\x93NUMPY")):
        return None
    return "not a pickle, PyTorch, NumPy or safetensors file"


def _torch_object(path: Path) -> Any:
    """`torch.load(weights_only=True)`; zip archives are memory-mapped so big encoders stay cheap to check."""

    return load_weights_only(path, mmap=zipfile.is_zipfile(path))


def _shapes(tensors: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in tensors.items() if isinstance(t, torch.Tensor)}


def _verdict(problems: list[str], what: str, count: int) -> Verification:
    if problems:
        return Verification(False, f"does not match the {what}: " + "; ".join(problems))
    return Verification(True, f"{count} tensors match the {what}")


def verify_eg3d(path: Path) -> Verification:
    """An EG3D generator file (`.pkl`, `.safetensors` or a `.pt` holding one) against the FFHQ 512/128 manifest."""
    from nvsvideo.models.eg3d.checkpoint import TRAINING_ONLY_BUFFERS, load_eg3d

    shapes = _shapes(load_eg3d(path).state_dict)
    return _verdict(compare_shapes(shapes, eg3d_manifest(), TRAINING_ONLY_BUFFERS), "EG3D FFHQ 512/128 manifest", len(shapes))


def verify_triplanenet(state_dict: Mapping[str, Any], variant: str = "") -> Verification:
    """A TriPlaneNet `state_dict` against the manifest of `variant`, or of whichever variant fits."""
    shapes = _shapes(state_dict)
    has_generator = any(name.startswith("decoder.") for name in shapes)
    # v2 loads with strict=False, so a v2 file without the generator is legitimate.
    optional = frozenset() if has_generator else frozenset(r.name for r in triplanenet_manifest("v1") if r.name.startswith("decoder."))
    candidates = [v for v in TRIPLANENET_VARIANTS if v.startswith(variant)] if variant else list(TRIPLANENET_VARIANTS)
    results = {v: compare_shapes(shapes, triplanenet_manifest(v), optional) for v in candidates}
    fits = [v for v, problems in results.items() if not problems]
    note = "" if has_generator else " (no EG3D generator inside: an EG3D .pkl is needed too)"
    if fits:
        return Verification(True, f"{len(shapes)} tensors match the TriPlaneNet {fits[0]} manifest{note}")
    closest = min(results, key=lambda v: len(results[v]))
    return _verdict(results[closest], f"TriPlaneNet {closest} manifest", len(shapes))


def verify_mapper(obj: Any) -> Verification:
    """An In-N-Out StyleCLIP mapper checkpoint: complete 512x512 groups, made for EG3D (512 px)."""
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        return Verification(False, "not a mapper checkpoint (no 'state_dict')")
    shapes = {k: v for k, v in _shapes(obj["state_dict"]).items() if k.startswith("mapper.")}
    groups = [g for g in _MAPPER_GROUPS if any(k.startswith(f"mapper.{g}_mapping.") for k in shapes)]
    manifest = [
        TensorSpec(f"mapper.{g}_mapping.mapping.{i}.{p}", (512, 512) if p == "weight" else (512,), "float32")
        for g in groups
        for i in _MAPPER_LAYERS
        for p in ("weight", "bias")
    ]
    opts = obj.get("opts") if isinstance(obj.get("opts"), dict) else {}
    if not groups:
        return Verification(False, "no mapper tensors ('mapper.*') in the file")
    if opts.get("stylegan_size", 512) != 512:
        return Verification(False, f"made for a {opts['stylegan_size']} px StyleGAN2, not for EG3D")
    return _verdict(compare_shapes(shapes, manifest), f"StyleCLIP mapper layout ({', '.join(groups)})", len(shapes))


def verify_direction(obj: Any) -> Verification:
    """A linear w+ edit direction: one float tensor of 14x512 values."""
    if not isinstance(obj, torch.Tensor) or not obj.is_floating_point() or obj.numel() != _W_PLUS_SIZE:
        found = f"shape {list(obj.shape)}" if isinstance(obj, torch.Tensor) else type(obj).__name__
        return Verification(False, f"not a w+ direction of 14x512 values ({found})")
    return Verification(True, f"w+ direction of shape {list(obj.shape)}")


def verify_deep3d(obj: Any) -> Verification:
    """A Deep3DFaceRecon checkpoint: `net_recon` with the official ResNet-50 names and shapes, float16 or float32."""
    from nvsvideo.models.deep3d import layout_problems

    problems = layout_problems(obj)
    count = len(obj["net_recon"]) if not problems else 0
    return _verdict(problems, "Deep3DFaceRecon network", count)


def verify_state_dict(obj: Any) -> Verification:
    """A plain state dict (no manifest known, e.g. face-alignment's FAN): non-empty and tensors only."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return Verification(False, "not a state dict of tensors")
    return Verification(True, f"state dict of {len(obj)} tensors (no manifest to compare names with)")


def verify_array(path: Path) -> Verification:
    """A plain NumPy array (e.g. detector anchors), read without unpickling."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        return Verification(False, f"not a plain NumPy array ({err})")
    return Verification(True, f"array {array.dtype} {list(array.shape)}")


def detect_kind(obj: Any) -> str:
    """Guess what a `.pt`/`.pth` file is from its content."""
    inner = obj.get("state_dict") if isinstance(obj, dict) else None
    if isinstance(inner, dict) and any(str(k).startswith("psp_encoder.") for k in inner):
        return KIND_TRIPLANENET
    if isinstance(inner, dict) and any(str(k).startswith("mapper.") for k in inner):
        return KIND_MAPPER
    if isinstance(obj, torch.Tensor):
        return KIND_DIRECTION
    if isinstance(obj, dict) and "G_ema" in obj:
        return KIND_EG3D
    if isinstance(obj, dict) and "net_recon" in obj:
        return KIND_POSE
    return KIND_LANDMARKS


def verify_file(path: str | Path, kind: str | None = None, variant: str = "") -> Verification:
    """Check one weight file; `kind` (a registry kind) is guessed from the file when not given.

    Unreadable or unsafe files give a failed `Verification` rather than an exception.
    """
    path = Path(path)
    if not path.is_file():
        return Verification(False, "missing")
    problem = quick_check(path)
    if problem:
        return Verification(False, problem)
    try:
        if kind == KIND_EG3D or path.suffix in (".pkl", ".safetensors"):
            return verify_eg3d(path)
        if path.suffix == ".npy" and kind != KIND_DIRECTION:
            return verify_array(path)
        obj = _torch_object(path)
        kind = kind or detect_kind(obj)
        if kind == KIND_EG3D:
            return verify_eg3d(path)
        if kind == KIND_TRIPLANENET:
            return verify_triplanenet(obj.get("state_dict", {}) if isinstance(obj, dict) else {}, variant)
        if kind == KIND_MAPPER:
            return verify_mapper(obj)
        if kind == KIND_DIRECTION:
            return verify_direction(obj)
        if kind == KIND_POSE:
            return verify_deep3d(obj)
        return verify_state_dict(obj)
    except WeightsError as err:
        return Verification(False, str(err))


def verify_entry(entry: WeightFile, weights_dir: Path, env: Mapping[str, str]) -> tuple[Path | None, Verification]:
    """Find and check a registry entry's file."""
    path = locate(entry, weights_dir, env)
    if path is None:
        return None, Verification(False, "missing")
    return path, verify_file(path, entry.kind, entry.variant)


@dataclass(frozen=True)
class WeightStatus:
    """A registry entry and what was found: `status` is present, missing or invalid."""

    entry: WeightFile
    path: Path
    status: str
    detail: str

    def to_dict(self) -> dict[str, str | bool]:
        return {
            "name": self.entry.name,
            "kind": self.entry.kind,
            "status": self.status,
            "path": str(self.path),
            "url": self.entry.url,
            "direct_download": self.entry.direct,
            "source": self.entry.source,
            "purpose": self.entry.purpose,
            "detail": self.detail,
        }


def weights_status(weights_dir: Path, env: Mapping[str, str], *, deep: bool = False) -> list[WeightStatus]:
    """Status of every known file, then of edit files found that the registry does not know.

    Edit files are found as `edit --direction` finds them (`available_edits`: any case, `.pt`/`.pth`/`.npy`,
    In-N-Out folders), so the listing and the command always agree. Each is a cheap header check, or a full
    `verify_file` when `deep`.
    """
    edits = available_edits(weights_dir)
    entries = [(entry, _edit_file(entry, edits) if entry.kind in (KIND_DIRECTION, KIND_MAPPER)
                else locate(entry, weights_dir, env)) for entry in KNOWN_WEIGHTS]
    known = {entry.name for entry in KNOWN_WEIGHTS}
    entries += [(user_edit(name, files[0]), files[0]) for name, files in edits.items() if name not in known]
    rows = []
    for entry, found in entries:
        if found is None:
            rows.append(WeightStatus(entry, expected_path(entry, weights_dir, env), "missing", ""))
            continue
        if entry.sha256:
            # One exact file is right (the mesh models): its hash says all, deep or not.
            problem = None if file_sha256(found) == entry.sha256 else "sha256 differs from the expected file"
            detail = problem or "sha256 matches"
        elif deep:
            result = verify_file(found, entry.kind, entry.variant)
            problem = None if result.ok else result.detail
            detail = result.detail
        else:
            problem = quick_check(found)
            detail = problem or ""
        rows.append(WeightStatus(entry, found, "invalid" if problem else "present", detail))
    return rows


def _edit_file(entry: WeightFile, edits: Mapping[str, list[Path]]) -> Path | None:
    """The file `edit --direction` would take for a registry edit entry (the first of several)."""
    files = edits.get(entry.name)
    return files[0] if files else None
