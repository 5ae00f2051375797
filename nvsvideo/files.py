"""Atomic output files: write to a temporary sibling, rename into place only on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from nvsvideo.errors import UsageError


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name the same file (resolving links and relative parts)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, protect: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` when the block succeeds.

    On any exception (or Ctrl-C) the temporary file is removed, so a failed run never leaves a
    half-written output. The temporary name keeps the suffix so muxers pick the right container.

    Args:
        path: final output path.
        protect: inputs that must never be overwritten (e.g. the source video).
    """
    final = Path(path)
    for p in protect:
        if same_file(final, Path(p)) or final.resolve() == Path(p).resolve():
            raise UsageError(f"refusing to overwrite the input {p}; choose another output path")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".part{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
