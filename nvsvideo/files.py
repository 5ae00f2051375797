"""Atomic outputs: write to a temporary sibling (file or folder), rename into place only on success."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from nvsvideo.errors import OutputError, UsageError


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


def _host_temps(final: Path) -> list[tuple[Path, int]]:
    """Our temporary files or folders for `final` made on this host, with the PID of the process that made each."""
    pattern = re.compile(rf"\.{re.escape(final.stem)}\.(?P<host>[^.]+)-(?P<pid>\d+)\.[0-9a-f]{{8}}\.part"
                         rf"{re.escape(final.suffix)}")
    host = _owner_tag().rsplit("-", 1)[0]
    found = []
    with contextlib.suppress(OSError):
        for entry in final.parent.iterdir():
            match = pattern.fullmatch(entry.name)
            if match and match["host"] == host:
                found.append((entry, int(match["pid"])))
    return sorted(found)


def stale_temps(final: Path) -> list[Path]:
    """Our temporary files or folders for `final` left by dead processes of this host (killed, crashed).

    Only names we make are considered, and only those whose process is gone: a live writer's file
    (another run of the same output) and other hosts' files (a shared batch folder) are left alone.
    """
    return [entry for entry, pid in _host_temps(final) if not _pid_alive(pid)]


def wait_for_writers(final: Path, seconds: float) -> None:
    """Wait up to `seconds` until the other processes of this host writing `final` have exited (workers
    told to stop that are still cleaning up or being killed), so `remove_stale_temps` then sees all they left."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(
            pid != os.getpid() and _pid_alive(pid) for _, pid in _host_temps(final)):
        time.sleep(0.1)


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


#: errno values of a full disk or an exhausted quota.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: errno values of a destination we may not write (read-only file system, permissions).
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def default_cache_dir(video: Path) -> Path:
    """`clip.mp4` -> `clip.mp4.nvs/` beside it."""
    return video.with_name(video.name + ".nvs")


def nearest_existing(path: Path) -> Path:
    """`path` itself if it exists, else the closest folder above it that does (what a mkdir -p starts from)."""
    existing = path.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def can_create_in(folder: Path) -> bool:
    """Whether this process may create files in `folder`, or in the folder above it it would be created in."""
    existing = nearest_existing(folder)
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def disk_full_message(path: Path, needed: int | None = None) -> str:
    """One sentence for a write that ran out of space: the path, the space needed when known, the free space."""
    from nvsvideo.limits import format_bytes

    with contextlib.suppress(OSError):
        free = shutil.disk_usage(nearest_existing(path.parent)).free
        need = f"needs about {format_bytes(needed)} and " if needed else ""
        return (f"the disk holding {path} is full: it {need}has {format_bytes(free)} free; free some space or "
                "write to another disk (unfinished outputs were removed)")
    return f"the disk holding {path} is full; free some space or write to another disk"


def output_error(err: OSError, path: Path | None = None, needed: int | None = None) -> OutputError | None:
    """The user error an OS error on writing `path` (or the file the error names) is: a full disk, or a
    destination we may not write; None for anything else (a bug, reported as such)."""
    where = path or (Path(os.fsdecode(err.filename)) if err.filename else None)
    if err.errno in DISK_FULL:
        return OutputError(disk_full_message(where, needed) if where else "the disk is full; free some space")
    if err.errno in NOT_WRITABLE and where is not None:
        return OutputError(f"cannot write {where}: {os.strerror(err.errno).lower()}; choose a folder you can write")
    return None
