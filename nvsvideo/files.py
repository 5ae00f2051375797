"""Atomic outputs: write to a temporary sibling (file or folder), rename into place only on success."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

from nvsvideo.errors import UsageError


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name the same file, existing or not (resolving links, relative parts, hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _owner_tag() -> str:
    """`host-pid` of this process, written into temporary names so a later run can tell whose they are."""
    return f"{socket.gethostname().split('.')[0]}-{os.getpid()}"


def temp_name(final: Path, *, tag: str | None = None) -> str:
    """Hidden temporary name beside `final`: `.STEM.HOST-PID.RANDOM.part.SUFFIX` (the suffix kept for muxers)."""
    return f".{final.stem}.{tag or _owner_tag()}.{uuid.uuid4().hex[:8]}.part{final.suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def stale_temps(final: Path) -> list[Path]:
    """Our temporary files or folders for `final` left by dead processes of this host (killed, crashed).

    Only names we make are considered, and only those whose process is gone: a live writer's file
    (another run of the same output) and other hosts' files (a shared batch folder) are left alone.
    """
    pattern = re.compile(rf"\.{re.escape(final.stem)}\.(?P<host>[^.]+)-(?P<pid>\d+)\.[0-9a-f]{{8}}\.part"
                         rf"{re.escape(final.suffix)}")
    host = _owner_tag().rsplit("-", 1)[0]
    found = []
    with contextlib.suppress(OSError):
        for entry in final.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and match["host"] == host and not _pid_alive(int(match["pid"])):
                found.append(entry)
    return sorted(found)


def remove_stale_temps(final: Path) -> None:
    """Delete `stale_temps(final)`: what `kill -9` or a power cut left beside the output."""
    for entry in stale_temps(final):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, protect: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` when the block succeeds.

    On any exception (or Ctrl-C, or SIGTERM under the CLI) the temporary file is removed, so a failed
    run never leaves a half-written output; what a killed run (`kill -9`) left is removed by the next
    one (`remove_stale_temps`).

    Args:
        path: final output path.
        protect: inputs that must never be overwritten (e.g. the source video).
    """
    final = Path(path)
    for p in protect:
        if same_file(final, Path(p)):
            raise UsageError(f"refusing to overwrite the input {p}; choose another output path")
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    tmp = final.parent / temp_name(final)
    # Exclusive create (the random part makes a clash unlikely, this makes it impossible); mode 0666
    # less the umask gives the user's usual permissions, not mkstemp's private 0600.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
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
    remove_stale_temps(path)
    # A plain mkdir (not mkdtemp, which makes it private to the owner) so the folder gets the usual permissions.
    temp = path.parent / temp_name(path)
    temp.mkdir()
    try:
        yield temp
        if path.exists():
            path.rmdir()  # an empty folder the user made beforehand; rename cannot replace it
        os.replace(temp, path)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
