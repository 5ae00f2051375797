"""Identify model files by content, without rehashing multi-GB checkpoints on every run.

A fingerprint is the sha256 of the whole file. A partial hash (first/last MB plus the size) would be
faster, but a fine-tuned generator can differ from its parent only in a few middle layers of the same
size, and a cache built with the wrong weights must never be reused. The cost of the full hash is paid
once per file: results are remembered in a small JSON memo (`.fingerprints.json` in the weights folder)
keyed by the file's path, device, inode, size, mtime and ctime, the "unchanged if the stat is unchanged"
rule make and rsync use, made safe the way git's index is: any write moves mtime and ctime forward, except
one within the same timestamp tick as the hash, so a file changed less than `RACY_NS` before it was hashed
is not remembered (hashed again next time). ctime cannot be set back by `touch` or `cp -p`.

Input videos are identified differently (`content_key`): by sampled content, so a copy, a `touch` or a
re-download of the same file keeps its cache, at a cost that does not grow with the file (at most 16 MiB read).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path

from nvsvideo.cache.durable import write_durably

_BLOCK = 1 << 20
#: A file changed less than this before hashing began is not remembered: a second write within the same
#: timestamp tick would leave its stat unchanged (2 s covers FAT's coarse clock and some clock skew).
RACY_NS = 2_000_000_000
#: `content_key` hashes the first and last `_EDGE` bytes and `_SAMPLES` blocks of `_BLOCK` bytes in between.
_EDGE = 4 << 20
_SAMPLES = 8


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
        memo_file: JSON memo shared across runs (e.g. in the weights folder); an unreadable memo is
            ignored and rewritten, and one that cannot be written is left alone, since it only saves time.
    """
    resolved = Path(path).resolve()
    stamp = file_stamp(resolved)
    memo = _read_memo(memo_file) if memo_file is not None else {}
    known = memo.get(str(resolved))
    if isinstance(known, dict) and isinstance(known.get("sha256"), str) and all(
            known.get(k) == v for k, v in stamp.items()):
        return f"sha256:{known['sha256']}"
    started = time.time_ns()
    digest = file_sha256(resolved)
    # Changed while being hashed, or too recently to trust its stat later: not remembered.
    if memo_file is not None and file_stamp(resolved) == stamp and settled(stamp, started):
        memo[str(resolved)] = {**stamp, "sha256": digest}
        with contextlib.suppress(OSError):
            write_durably(memo_file, json.dumps(memo, indent=1, sort_keys=True).encode())
    return f"sha256:{digest}"


def file_stamp(path: Path) -> dict[str, int]:
    """What a memoised fingerprint is keyed by besides the path: any rewrite or replacement changes it."""
    st = path.stat()
    return {"device": st.st_dev, "inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


def settled(stamp: dict[str, int], hashed_at_ns: int) -> bool:
    """Whether a hash begun at `hashed_at_ns` may be remembered under `stamp`: the file's last change
    (mtime or ctime) lies at least `RACY_NS` before it."""
    return hashed_at_ns - max(stamp["mtime_ns"], stamp["ctime_ns"]) >= RACY_NS


def _read_memo(memo_file: Path) -> dict[str, object]:
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def content_key(path: str | os.PathLike[str]) -> str:
    """Identity of a video by its content: `"sample-sha256:<hex>"`, reading at most 16 MiB of it.

    Hashes the size, the first and last 4 MiB and eight 1 MiB blocks evenly spaced in between (the
    whole file when it is smaller than that). This is enough for a video: the container's index (MP4
    `moov`, Matroska cues), which lies at the start or the end, lists the size and position of every
    packet, so any re-encode, trim or cut changes hashed bytes; the header also carries the stream
    parameters. Only an in-place edit of packet bytes that keeps every size and misses every sample
    would go unnoticed, which no editing or transcoding tool produces. The modification time is not
    part of it: `touch`, a copy without `-p` or a fresh checkout keep the key.
    """
    # Not memoised: reading 16 MiB is cheap, and a stat-keyed memo could miss a rewrite within one
    # timestamp tick.
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        digest = hashlib.sha256(size.to_bytes(8, "little"))
        for offset, length in sample_ranges(size):
            fh.seek(offset)
            digest.update(fh.read(length))
    return f"sample-sha256:{digest.hexdigest()}"


def sample_ranges(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the byte ranges `content_key` hashes in a file of `size` bytes, in order.

    Ranges never overlap, so a small file is hashed exactly once, whole.
    """
    if size <= 2 * _EDGE + _SAMPLES * _BLOCK:
        return [(0, size)] if size else []
    middle = size - 2 * _EDGE
    # Evenly spaced block starts in the middle part, each block wholly inside it.
    step = (middle - _BLOCK) // (_SAMPLES - 1)
    inner = [(_EDGE + i * step, _BLOCK) for i in range(_SAMPLES)]
    return [(0, _EDGE), *inner, (size - _EDGE, _EDGE)]
