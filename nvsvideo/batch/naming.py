"""Output file names for a batch: derived from the inputs, deterministic, never colliding.

`clips/a.mp4` becomes `OUTDIR/a.mp4`. When several inputs share a stem (`day1/take.mp4`,
`day2/take.mp4`), each gets the fewest parent-folder names that tell them apart (`day1_take.mp4`,
`day2_take.mp4`). The same input listed twice with different options (a manifest rendering two camera
paths) gets a short hash of its options (`take-1a2b3c4d.mp4`). Names are compared case-insensitively,
because macOS and Windows file systems are. The names depend only on the set of inputs, so running the
same batch again finds the same outputs and skips the finished ones.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from nvsvideo.batch.inputs import BatchItem
from nvsvideo.errors import UsageError


def assign_outputs(items: Sequence[BatchItem], outdir: Path, *, suffix: str = ".mp4") -> list[Path]:
    """Output path of every item, in the same order.

    Args:
        items: the expanded batch.
        outdir: folder for derived names and for relative manifest outputs.
        suffix: file suffix of derived names (the pipeline's container).

    Raises:
        UsageError: two manifest rows name the same output, or an output would overwrite its input.
    """
    stems = _derived_stems(items)
    outputs: list[Path] = []
    taken: set[str] = set()
    explicit = {_fold(outdir / i.output) for i in items if i.output is not None}
    for item, stem in zip(items, stems, strict=True):
        if item.output is not None:
            path = outdir / item.output
            if _fold(path) in taken:
                raise UsageError(f"{item.source}: the output {item.output} is already used by another row")
        else:
            path = outdir / f"{stem}{suffix}"
            if _fold(path) in taken or _fold(path) in explicit:
                # A derived name met a real file name (`a_take` next to `a/take`): the hash settles it.
                path = outdir / f"{stem}-{_short_hash(item)}{suffix}"
        if path.absolute() == item.input.absolute():
            raise UsageError(f"the output for {item.input} would overwrite the input; choose another OUTDIR")
        if _fold(path) in taken:
            raise UsageError(f"{item.source}: could not derive a unique output name for {item.input}")
        taken.add(_fold(path))
        outputs.append(path)
    return outputs


def _derived_stems(items: Sequence[BatchItem]) -> list[str]:
    """File stem for every item (also computed for manifest rows with an explicit output, then unused)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        groups[item.input.stem.casefold()].append(index)
    stems = [item.input.stem for item in items]
    for members in groups.values():
        inputs = {str(items[i].input.absolute()) for i in members}
        if len(inputs) > 1:
            depth = _prefix_depth([items[i].input.absolute() for i in members])
            for i in members:
                stems[i] = _with_parents(items[i].input.absolute(), depth)
        if len(inputs) < len(members):
            for i in members:
                if items[i].options:
                    stems[i] = f"{stems[i]}-{_short_hash(items[i])}"
    return stems


def _prefix_depth(paths: Sequence[Path]) -> int:
    """Fewest parent folders that make the names of distinct paths distinct (falls back to all of them)."""
    distinct = {str(p) for p in paths}
    deepest = max(len(p.parent.parts) for p in paths)
    for depth in range(1, deepest + 1):
        if len({_with_parents(p, depth).casefold() for p in paths}) == len(distinct):
            return depth
    return deepest


def _with_parents(path: Path, depth: int) -> str:
    """`parent_..._stem` using the last `depth` folder names (the root anchor is never part of it)."""
    folders = [part for part in path.parent.parts if part != path.anchor][-depth:]
    return "_".join([*folders, path.stem])


def _short_hash(item: BatchItem) -> str:
    return hashlib.blake2s("\0".join(item.identity()).encode(), digest_size=4).hexdigest()


def _fold(path: Path) -> str:
    return str(path.absolute()).casefold()
