"""Edits on cached inversions: which files, how strong, when, and what happens to the offsets.

An edit is a latent delta (a StyleCLIP mapper or a linear direction), a strength and an optional
ramp over time. Several edits combine additively, each delta computed on the *unedited* codes:

    w'_t = w_t + sum_k strength_k * ramp_k(t) * delta_k(w_t)

with delta_k(w) = s_k * M_k(w) for a mapper (s_k its training factor_step) and d_k for a
direction. The order of the edits therefore does not matter, and a frame where every strength is
zero keeps its codes bit-for-bit. Edits only read the cached inversion (w+ and tri-plane offsets),
so editing again with other settings never re-inverts the video.

Tri-plane offsets under an edit (`OffsetPolicy`): TriPlaneNet's offsets are the difference between
the encoder's planes and the planes EG3D makes from the unedited w+. They hold what the latent code
cannot express: out-of-distribution content such as accessories, occluders, hair strands, exact
texture. By default (`keep`) they are added unchanged to the planes of the edited codes, as
In-N-Out composites its unedited out-of-distribution field with the edited face: the edit changes
what w+ controls and leaves the rest as it was filmed. The cost is that content the edit should
remove and which lives in the offsets (real glasses when editing them away) survives. `drop`
fades the offsets out wherever an edit is active, giving a pure EG3D render of the edited codes.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import torch
from torch import Tensor

from nvsvideo.edits.directions import LinearDirection, direction_from_tensor, load_direction
from nvsvideo.edits.loading import read_torch_file
from nvsvideo.edits.mapper import LatentMapper, mapper_from_checkpoint
from nvsvideo.edits.ramp import Ramp, parse_ramp
from nvsvideo.edits.wplus import check_wplus
from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.weights.registry import (
    EDIT_FOLDERS,
    EDIT_SUFFIXES,
    IN_N_OUT_CHECKPOINT,
    available_edits,
    edit_name,
)

#: File suffixes an edit can have.

T = TypeVar("T")


class LatentDelta(Protocol):
    """What an edit adds to w+ at strength 1 (implemented by LatentMapper and LinearDirection)."""

    kind: ClassVar[str]

    def unit_delta(self, ws: Tensor) -> Tensor:
        """[B, 14, 512] codes -> [B, 14, 512] change at strength 1."""
        ...


class OffsetPolicy(str, enum.Enum):
    """What happens to TriPlaneNet's tri-plane offsets when the codes are edited (module docstring)."""

    KEEP = "keep"
    """Add the offsets unchanged: out-of-distribution content stays as filmed (default, In-N-Out style)."""
    DROP = "drop"
    """Fade the offsets out in proportion to how engaged the edits are: a pure EG3D render when fully on."""


@dataclass(frozen=True)
class EditSpec:
    """An edit as the user asked for it, before any file is read."""

    target: str
    """A name of a file in the weights folder's `directions/` or `mappers/`, or a path (`resolve_edit`)."""
    strength: float = 1.0
    """Multiplier of the unit delta (for directions: alpha; for mappers: a multiple of factor_step)."""
    ramp: Ramp | None = None
    """Strength multiplier over time; None means constant."""


@dataclass(frozen=True, eq=False)
class Edit:
    """A loaded edit, ready to apply to cached codes."""

    name: str
    """What the user called it (name or path), for messages and summaries."""
    delta: LatentDelta
    """The latent delta (a LatentMapper or LinearDirection), on the device the codes will be on."""
    strength: float = 1.0
    """Multiplier of the unit delta."""
    ramp: Ramp | None = None
    """Strength multiplier over time; None means constant."""

    def strengths(self, times_seconds: Tensor, fps: float | None = None) -> Tensor:
        """Strength at each frame, [T] float32 (strength * ramp(t))."""
        if self.ramp is None:
            return torch.full(times_seconds.shape, self.strength, dtype=torch.float32, device=times_seconds.device)
        return self.strength * self.ramp.at(times_seconds, fps=fps)

    def summary(self) -> dict[str, object]:
        """Plain values for `--json` output and logs."""
        return {
            "name": self.name,
            "kind": self.delta.kind,
            "strength": self.strength,
            "ramp": None if self.ramp is None else self.ramp.spec,
        }

    def engagement(self, times_seconds: Tensor, fps: float | None = None) -> Tensor:
        """How far the edit is turned on at each frame, [T] in [0, 1]: |strength(t)| / max |strength|."""
        peak = abs(self.strength) * (self.ramp.peak if self.ramp is not None else 1.0)
        if peak == 0.0:
            return torch.zeros(times_seconds.shape, dtype=torch.float32, device=times_seconds.device)
        return (self.strengths(times_seconds, fps=fps).abs() / peak).clamp(0.0, 1.0)


def _one_per_edit(option: str, values: Sequence[T], count: int, default: T) -> list[T]:
    """`values` spread over `count` edits: none (default for all), one shared by all, or one each."""
    if not values:
        return [default] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) == count:
        return list(values)
    raise UsageError(
        f"give {option} once (shared by every --direction) or once per --direction ({count}), not {len(values)} times"
    )


def parse_edit_specs(
    targets: Sequence[str],
    strengths: Sequence[float] = (),
    ramps: Sequence[str] = (),
    offsets: str = "keep",
) -> list[EditSpec]:
    """Pair repeated `--direction`, `--strength` and `--strength-ramp` options into edits.

    Each of `strengths` and `ramps` may be empty (strength 1, no ramp), hold one value shared by
    every edit, or hold one value per target, paired in order. `offsets` is `--edit-offsets`.

    Raises:
        UsageError: counts that do not pair up, strengths, ramps or `--edit-offsets drop` without a target,
            a non-finite strength, or a malformed ramp.
    """
    if not targets and (strengths or ramps):
        raise UsageError("--strength and --strength-ramp need a --direction to apply to")
    if not targets and offsets == OffsetPolicy.DROP.value:
        raise UsageError("--edit-offsets drop fades the tri-plane offsets where an edit is on, and there is no "
                         "--direction; add one, or leave --edit-offsets out")
    if not all(math.isfinite(strength) for strength in strengths):
        raise UsageError(f"--strength must be a finite number, got {list(strengths)}")
    count = len(targets)
    ramp_specs = _one_per_edit("--strength-ramp", list(ramps), count, default=None)
    return [
        EditSpec(target=target, strength=float(strength), ramp=None if spec is None else parse_ramp(spec))
        for target, strength, spec in zip(
            targets, _one_per_edit("--strength", list(strengths), count, default=1.0), ramp_specs, strict=True
        )
    ]


def edit_name_matches(typed: str, known: Sequence[str]) -> list[str]:
    """The registry names among `known` that a user's `--direction` text means.

    Case and `_`/`-` do not matter, an edit suffix may be given, and the kind prefix may be left out:
    `Smiling`, `smiling.pt` and `direction-smiling` all mean `direction-smiling`; without the prefix
    the name also matches a mapper of the same name.
    """
    stem = typed[: -len(Path(typed).suffix)] if Path(typed).suffix.lower() in EDIT_SUFFIXES else typed
    key = stem.lower().replace("_", "-")
    wanted = {key, *(edit_name(kind, key) for kind in EDIT_FOLDERS)}
    return [name for name in known if name in wanted]


def resolve_edit(name_or_path: str, weights_dir: Path) -> Path:
    """The file an edit refers to: an existing path as given, else a name looked up in the weights folder.

    An existing file must have an edit suffix; an existing In-N-Out result folder means its mapper.
    Text with a folder separator is always a path. Anything else is a name (`edit_name_matches`) among
    `available_edits(weights_dir)`.

    Raises:
        WeightsError: a file of another kind, a missing path, an unknown name (listing the names found),
            or a name that matches several files.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix.lower() not in EDIT_SUFFIXES:
            raise WeightsError(f"{path} is not an edit file nvsvideo can read (expected a direction or StyleCLIP "
                               f"mapper in {'/'.join(EDIT_SUFFIXES)}, or an In-N-Out result folder)")
        return path
    if (path / IN_N_OUT_CHECKPOINT).is_file():
        return path / IN_N_OUT_CHECKPOINT
    if any(sep in name_or_path for sep in {"/", os.sep}):
        if path.is_dir():
            raise WeightsError(f"{path} is a folder without {IN_N_OUT_CHECKPOINT}, so not an In-N-Out result "
                               "folder; pass the edit file itself")
        raise WeightsError(f"edit file {path} does not exist; check the path")
    known = available_edits(weights_dir)
    names = edit_name_matches(name_or_path, list(known))
    matches = [(name, file) for name in names for file in known[name]]
    if len(matches) == 1:
        return matches[0][1]
    if matches:
        listed = ", ".join(f"{name}: {file}" for name, file in matches)
        raise WeightsError(f"edit '{name_or_path}' matches several files ({listed}); pass one of them as a path"
                           + (" or by its full name" if len(names) > 1 else ""))
    folders = " and ".join(str(weights_dir / subdir) for subdir in EDIT_FOLDERS.values())
    raise WeightsError(
        f"unknown edit '{name_or_path}': there is no such file, and no edit of that name in {folders} "
        f"(edits found there: {', '.join(sorted(known)) or 'none'}); put a direction in directions/ or a mapper "
        "in mappers/ (`nvsvideo weights` lists the known ones), or pass a file path"
    )


def load_delta(path: Path) -> LatentMapper | LinearDirection:
    """Load an edit file, telling mapper checkpoints (dictionaries) from directions (one array).

    Raises:
        WeightsError: unreadable, unsafe, or neither kind.
    """
    if path.suffix.lower() == ".npy":
        return LinearDirection(load_direction(path))
    content = read_torch_file(path, what="edit")
    if isinstance(content, Tensor):
        return LinearDirection(direction_from_tensor(content, source=str(path)))
    return mapper_from_checkpoint(content, source=str(path))


def load_edit(spec: EditSpec, weights_dir: Path, device: torch.device) -> Edit:
    """Resolve, load and place one edit on `device`."""
    delta = load_delta(resolve_edit(spec.target, weights_dir)).to(device)
    return Edit(name=spec.target, delta=delta, strength=spec.strength, ramp=spec.ramp)


def apply_edits(
    ws: Tensor,
    edits: Sequence[Edit],
    times_seconds: Tensor,
    *,
    fps: float | None = None,
) -> Tensor:
    """Edited codes for every frame (the module docstring's equation); `ws` is not modified.

    Args:
        ws: [T, 14, 512] cached w+ of the frames.
        edits: loaded edits, their deltas on `ws.device`.
        times_seconds: [T] frame times, for the ramps.
        fps: frame rate, needed by ramps keyed in frames.

    Returns:
        [T, 14, 512] in the dtype of `ws`; computed in float32.
    """
    check_wplus(ws)
    assert times_seconds.shape == ws.shape[:1], f"times_seconds {list(times_seconds.shape)} vs ws {list(ws.shape)}"
    base = ws.float()
    total = torch.zeros_like(base)
    for edit in edits:
        strengths = edit.strengths(times_seconds, fps=fps).to(base.device)
        total += strengths[:, None, None] * edit.delta.unit_delta(base)
    return (base + total).to(ws.dtype)


def edited_frames(edits: Sequence[Edit], times_seconds: Tensor, *, fps: float | None = None) -> Tensor:
    """[T] bool: the frames where at least one edit has a non-zero strength.

    Every other frame is unedited by definition, so a renderer can give it exactly the unedited
    tensors instead of recomputing them through the edit (which is equal only up to float rounding).
    """
    edited = torch.zeros(times_seconds.shape, dtype=torch.bool, device=times_seconds.device)
    for edit in edits:
        edited |= edit.strengths(times_seconds, fps=fps).to(edited.device) != 0
    return edited


def offset_weights(
    edits: Sequence[Edit],
    times_seconds: Tensor,
    policy: OffsetPolicy,
    *,
    fps: float | None = None,
) -> Tensor:
    """Per-frame multiplier of the tri-plane offsets under the edits.

    `keep`: 1 everywhere. `drop`: 1 - max_k engagement_k(t), so offsets vanish where an edit is
    fully on and fade with its ramp, avoiding a jump where an edit starts.

    Args:
        times_seconds: [T] frame times.

    Returns:
        [T] float32 in [0, 1]; multiply the [T, 96, 256, 256] offsets by it.
    """
    weights = torch.ones(times_seconds.shape, dtype=torch.float32, device=times_seconds.device)
    if policy is OffsetPolicy.KEEP or not edits:
        return weights
    engaged = torch.stack([edit.engagement(times_seconds, fps=fps) for edit in edits]).amax(dim=0)
    return weights - engaged
