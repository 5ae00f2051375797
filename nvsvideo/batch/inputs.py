"""Turn the INPUTS of `nvsvideo batch` (files, globs, folders, manifests) into a list of batch items.

Rules, in the order a user meets them:

- A file named explicitly is always taken, whatever its extension; if it is missing, that item fails
  in the report (the rest of the batch still runs).
- A folder contributes its video files (by extension, hidden files skipped, sorted by name); with
  `recursive` its sub-folders too. A glob pattern (`clips/*.mp4`, `clips/**/*.mov`) contributes the
  matching video files. A folder or pattern that selects nothing is a usage error: nothing would run.
- A manifest (`.csv` with a header row, or `.jsonl` with one object per line) lists `input`, an
  optional `output` (relative to OUTDIR) and per-video options in the other columns/keys. Relative
  inputs are relative to the manifest's folder. Empty CSV cells mean "use the batch-wide value".
- The same input with the same output and options given twice is processed once.
"""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvsvideo.errors import InputError, UsageError

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".wmv",
        ".flv",
        ".3gp",
    }
)
"""Suffixes (lower case) that folders and glob patterns select."""

MANIFEST_SUFFIXES = (".csv", ".jsonl")
"""Suffixes read as manifests rather than as videos."""

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class BatchItem:
    """One requested video, before output names are assigned."""

    input: Path
    """The video to read (absolute)."""
    output: Path | None = None
    """Output path from a manifest (relative paths are relative to OUTDIR); None: derive from the input."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Per-video options from a manifest row, overriding the batch-wide ones."""
    source: str = ""
    """Where the item came from, for error messages (`clips/`, `jobs.csv line 4`)."""

    def identity(self) -> tuple[str, str, str]:
        """Key under which two requests are the same work (duplicates are dropped)."""
        return (
            str(self.input.resolve()),
            str(self.output) if self.output is not None else "",
            json.dumps(dict(self.options), sort_keys=True, default=str),
        )


def expand_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    recursive: bool = False,
    exclude: Path | None = None,
) -> list[BatchItem]:
    """Expand INPUTS into batch items, in the order given (each folder/pattern sorted by path).

    Args:
        inputs: files, folders, glob patterns and manifests, as typed on the command line.
        extensions: suffixes selected from folders and patterns (case-insensitive).
        recursive: also descend into sub-folders of folder inputs.
        exclude: a folder whose files are never inputs (the batch's OUTDIR, which may sit inside an
            input folder).

    Raises:
        UsageError: no inputs, or a folder/pattern selecting no video.
        InputError: a manifest that is missing or malformed.
    """
    if not inputs:
        raise UsageError(
            "no INPUTS given: name video files, folders, glob patterns or a manifest (.csv/.jsonl)"
        )
    suffixes = frozenset(s.lower() for s in extensions)
    excluded = exclude.resolve() if exclude is not None else None
    items: list[BatchItem] = []
    for raw in inputs:
        text = os.fspath(raw)
        path = Path(text)
        if path.suffix.lower() in MANIFEST_SUFFIXES and not _GLOB_CHARS & set(text):
            items.extend(read_manifest(path))
        elif path.is_dir():
            found = _select(_walk(path, recursive), suffixes, excluded)
            if not found:
                raise UsageError(f"the folder {text} holds no video files ({', '.join(sorted(suffixes))})")
            items.extend(BatchItem(input=p, source=text) for p in found)
        elif _GLOB_CHARS & set(text) and not path.exists():
            matches = [Path(m) for m in glob.glob(text, recursive=True)]
            found = _select(_walk_all(matches, recursive), suffixes, excluded)
            if not found:
                raise UsageError(f"the pattern {text} matches no video files ({', '.join(sorted(suffixes))})")
            items.extend(BatchItem(input=p, source=text) for p in found)
        else:
            items.append(BatchItem(input=path.absolute(), source=text))
    return _unique(items)


def read_manifest(path: Path) -> list[BatchItem]:
    """Read a `.csv` or `.jsonl` manifest into batch items (see the module docstring for the format).

    Raises:
        InputError: the manifest is missing, unreadable, or a row lacks `input` or is malformed.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often save a BOM
    except OSError as err:
        raise InputError(f"cannot read the manifest {path}: {err.strerror or err}") from None
    rows = _csv_rows(text, path) if path.suffix.lower() == ".csv" else _jsonl_rows(text, path)
    base = path.absolute().parent
    items = []
    for where, row in rows:
        source = f"{path.name} {where}"
        value = row.pop("input", None)
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"{source} has no 'input'; every manifest row needs the video to process")
        output = row.pop("output", None)
        if output is not None and not isinstance(output, str):
            raise InputError(f"{source}: 'output' must be a file name, got {output!r}")
        items.append(
            BatchItem(
                input=base / Path(value.strip()).expanduser(),
                output=Path(output.strip()) if output and output.strip() else None,
                options=row,
                source=source,
            )
        )
    if not items:
        raise InputError(f"the manifest {path} lists no videos")
    return items


def coerce_options(raw: Mapping[str, Any], defaults: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """Check a manifest row's options against the batch-wide ones and convert CSV text to their types.

    A CSV cell is text; a default that is a bool, int or float gives the type to convert to (`true`,
    `1`, `yes` are true). JSONL values keep their JSON types. Unknown names are rejected, because a
    typo in a column header would otherwise silently run every video with the default.

    Raises:
        UsageError: an unknown option name or a value that cannot be converted.
    """
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise UsageError(f"{where}: unknown option '{name}' (known: {known})")
        default = defaults[name]
        out[name] = _convert(value, default, f"{where}: option '{name}'") if isinstance(value, str) else value
    return out


def _convert(text: str, default: Any, what: str) -> Any:
    """Convert one CSV cell to the type of its default (bool before int: bool is an int subclass)."""
    try:
        if isinstance(default, bool):
            lowered = text.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError(text)
            return lowered in {"true", "1", "yes"}
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise UsageError(f"{what} expects a {type(default).__name__}, got {text!r}") from None
    return text


def _csv_rows(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "input" not in [f.strip() for f in reader.fieldnames]:
        raise InputError(f"the CSV manifest {path} needs a header row with an 'input' column")
    rows = []
    for line_no, row in enumerate(reader, start=2):
        if None in row:
            raise InputError(f"{path.name} line {line_no} has more cells than the header")
        cells = {k.strip(): v.strip() for k, v in row.items() if v is not None and v.strip()}
        if cells:
            rows.append((f"line {line_no}", cells))
    return rows


def _jsonl_rows(text: str, path: Path) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path.name} line {line_no} is not valid JSON: {err.msg}") from None
        if not isinstance(row, dict):
            raise InputError(f"{path.name} line {line_no} must be a JSON object with an 'input' key")
        rows.append((f"line {line_no}", row))
    return rows


def _walk(folder: Path, recursive: bool) -> Iterable[Path]:
    pattern = "**/*" if recursive else "*"
    return folder.glob(pattern)


def _walk_all(paths: Iterable[Path], recursive: bool) -> Iterable[Path]:
    for p in paths:
        if p.is_dir():
            yield from _walk(p, recursive)
        else:
            yield p


def _select(paths: Iterable[Path], suffixes: frozenset[str], excluded: Path | None) -> list[Path]:
    """Video files among `paths`: by suffix, not hidden (our own `.name.part.mp4` temporaries are), not excluded."""
    chosen = []
    for p in paths:
        if not p.is_file() or p.name.startswith(".") or p.suffix.lower() not in suffixes:
            continue
        absolute = p.absolute()
        if excluded is not None and absolute.resolve().is_relative_to(excluded):
            continue
        chosen.append(absolute)
    return sorted(chosen)


def _unique(items: list[BatchItem]) -> list[BatchItem]:
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for item in items:
        key = item.identity()
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept
