"""Identify model files by content, without rehashing multi-GB checkpoints on every run.

A fingerprint is the sha256 of the whole file. A partial hash (first/last MB plus the size) would be
faster, but a fine-tuned generator can differ from its parent only in a few middle layers of the same
size, and a cache built with the wrong weights must never be reused. The cost of the full hash is paid
once per file: results are remembered in a small JSON memo keyed by the file's path, size, mtime and
inode, the same "unchanged if the stat is unchanged" rule make and rsync use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nvsvideo.cache.durable import write_durably

_BLOCK = 1 << 20


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so memory stays constant."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | os.PathLike[str], *, memo_file: Path | None = None) -> str:
    """Content fingerprint `"sha256:<hex>"` of a file, memoised in `memo_file` when given.

    Args:
        path: the file to identify (e.g. a checkpoint).
        memo_file: JSON memo shared across runs (e.g. in the user's cache folder); an unreadable
            memo is ignored and rewritten, since it only saves time.
    """
    resolved = Path(path).resolve()
    st = resolved.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}
    memo = _read_memo(memo_file) if memo_file is not None else {}
    known = memo.get(str(resolved))
    if isinstance(known, dict) and all(known.get(k) == v for k, v in stamp.items()) and "sha256" in known:
        return f"sha256:{known['sha256']}"
    digest = file_sha256(resolved)
    if memo_file is not None:
        memo[str(resolved)] = {**stamp, "sha256": digest}
        write_durably(memo_file, json.dumps(memo, indent=1, sort_keys=True).encode())
    return f"sha256:{digest}"


def _read_memo(memo_file: Path) -> dict[str, object]:
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}
