"""How much disk a cache will take, which store mode fits, and how much it took.

Chunk files hold, per inverted frame, the code `ws` [L, C] and the camera label [25] in float32, plus,
depending on the store mode, the tri-planes or their offsets [96, 256, 256] in the storage precision
(12.58 MB in float16 at the official size). Frames without a face store nothing but their status.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

from nvsvideo.cache.records import StoreMode
from nvsvideo.errors import InputError
from nvsvideo.limits import format_bytes

#: safetensors header bytes per stored tensor (its JSON entry: name, dtype, shape, offsets), rounded up.
TENSOR_HEADER_BYTES = 128
#: `auto` keeps planes (the fastest re-rendering) only while they fit both limits below.
AUTO_PLANES_MAX_BYTES = 8 * 2**30
AUTO_PLANES_MAX_FREE_SHARE = 0.25


class CacheSpaceError(InputError):
    """The disk holding the cache folder has too little free space for the inversion cache."""


def frame_bytes(store: StoreMode, ws_shape: Sequence[int], plane_shape: Sequence[int], precision_bytes: int) -> int:
    """Bytes one inverted frame adds to the chunk files (an upper bound: headers are rounded up).

    Args:
        store: what the cache keeps per frame.
        ws_shape: shape of one frame's code (EG3D: [14, 512]), stored in float32.
        plane_shape: shape of one frame's tri-planes (EG3D: [96, 256, 256]).
        precision_bytes: bytes per plane value (2 for float16).
    """
    tensors = [4 * math.prod(ws_shape), 4 * 25]
    if store.stored_field is not None:
        tensors.append(precision_bytes * math.prod(plane_shape))
    return sum(tensors) + TENSOR_HEADER_BYTES * len(tensors)


def choose_store(planes_bytes: int, free_bytes: int) -> StoreMode:
    """The store mode `--store auto` picks for a cache whose planes would take `planes_bytes`.

    Planes while they take at most 8 GiB (about 680 frames, 23 s at 30 fps, at the official size) and a
    quarter of the free space; beyond, `recompute` (about 30 KB per frame: the encoder runs again when
    rendering). `offsets` is never chosen: it takes as much space as planes and renders slower.
    """
    fits = planes_bytes <= AUTO_PLANES_MAX_BYTES and planes_bytes <= AUTO_PLANES_MAX_FREE_SHARE * free_bytes
    return StoreMode.PLANES if fits else StoreMode.RECOMPUTE


def check_space(needed: int, free: int, directory: Path, store: StoreMode, smallest: int, *,
                existing: bool = False) -> None:
    """Fail before any work when the cache's remaining writes cannot fit on its disk.

    Args:
        needed: bytes still to be written (frames missing from the cache, plus one chunk being rewritten).
        free: bytes free on the disk of `directory` (plus what a replaced cache gives back).
        directory: the cache folder (named in the message).
        store: the store mode the estimate is for.
        smallest: the estimate with `--store recompute`, suggested when it is smaller.
        existing: the cache already holds frames in `store` mode (another mode then needs `--fresh`).

    Raises:
        CacheSpaceError: `needed` exceeds `free`.
    """
    if needed <= free:
        return
    fresh = " --fresh" if existing else ""
    advice = f"use --store recompute{fresh} (about {format_bytes(smallest)}) or " if smallest < needed else "use "
    raise CacheSpaceError(
        f"the inversion cache in {directory} needs about {format_bytes(needed)} (--store {store.value}) but its "
        f"disk has {format_bytes(free)} free; {advice}--cache DIR on a disk with more space"
    )


def free_bytes(directory: Path) -> int:
    """Free bytes on the disk that holds `directory`, or would hold it once created."""
    existing = directory.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def folder_bytes(directory: Path) -> int:
    """Bytes of the files under `directory` (0 if it does not exist); files vanishing meanwhile are skipped."""
    total = 0
    for path in directory.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total
