"""One writer or many readers per cache folder: an advisory `flock` on a lock file holding the writer's pid.

The kernel releases a `flock` when its process dies, however it dies (SIGKILL included), so a lock
file left behind by a killed run is stale by construction and simply taken over: no pid liveness
guessing, no race between two processes "breaking" the same stale lock. The pid written inside is
only there to tell the user who holds the cache. POSIX only (the `fcntl` module).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from nvsvideo.errors import InputError


class CacheLockedError(InputError):
    """Another live process is writing the same cache folder."""


class DirectoryLock:
    """Non-blocking lock on `directory/lock`: exclusive for a writer, shared among readers (chunks of one
    video rendered by several workers at once); release with `release()` (idempotent).

    The lock file itself is kept: deleting it would let a process that opened the old file and a
    process that created a new one both hold "the" lock.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / "lock"
        self._fd: int | None = None
        self._shared = False

    def acquire(self, *, shared: bool = False) -> None:
        """Take the lock (shared: alongside other readers) or raise `CacheLockedError` naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            # Only a writer leaves its name (cleared on release): an empty file means readers hold it.
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "another process reading it"
            os.close(fd)
            raise CacheLockedError(
                f"the inversion cache {self.path.parent} is in use by {holder}; "
                "wait for that run to finish or stop it, then try again"
            ) from None
        if not shared:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        self._shared = shared

    def release(self) -> None:
        if self._fd is None:
            return
        if not self._shared:
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


@contextlib.contextmanager
def critical_section(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if needed) for a short read-modify-write, waiting for it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the file releases the lock
