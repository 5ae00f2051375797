"""Crash-safe file replacement: after a power cut or SIGKILL a file is either old or new, never torn."""

from __future__ import annotations

import os
from pathlib import Path

from nvsvideo.files import atomic_output


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically and durably.

    The bytes go to a temporary sibling that is fsynced before the rename (otherwise the rename can
    reach the disk before the data, leaving an empty file under the final name after a crash), and
    the folder is fsynced after it so the rename itself survives.
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Persist the entries (creations, renames, deletions) of a folder."""
    if os.name == "nt":  # Windows cannot open folders; NTFS journals renames itself
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
