"""Atomic outputs: write to a temporary sibling (file or folder), rename into place only on success."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from nvsvideo.errors import UsageError


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name the same file (resolving links and relative parts)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    # mkstemp makes the file private (0600); outputs should get the user's usual permissions.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; rename it onto `path` when the block succeeds.

    Raises:
        UsageError: `path` exists and is a file or a folder that is not empty.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path} already exists and is not an empty folder; choose another output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain mkdir (not mkdtemp, which makes it private to the owner) so the folder gets the usual permissions.
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.part"
    temp.mkdir()
    try:
        yield temp
        if path.exists():
            path.rmdir()  # an empty folder the user made beforehand; rename cannot replace it
        os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
