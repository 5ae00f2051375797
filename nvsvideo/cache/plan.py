"""Checks a run makes against a cache folder before any work, so a refusal leaves no trace.

`compatible_manifest` compares what a run asks for with an existing cache's identity (read without the
lock, nothing written) and names every difference in words with what to do about it;
`plan_store` decides the store mode of `--store auto` and checks that the frames still to invert fit on
the disk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from nvsvideo.cache.manifest import CacheIdentity, Difference, Manifest, normalize_json
from nvsvideo.cache.records import StoreMode
from nvsvideo.cache.space import (
    AUTO_PLANES_MAX_BYTES,
    AUTO_PLANES_MAX_FREE_SHARE,
    check_space,
    choose_store,
    folder_bytes,
    format_bytes,
    frame_bytes,
    free_bytes,
)
from nvsvideo.cache.store import CacheMismatchError, peek_manifest

#: What each identity field means to a user: the option that sets it, or what it is.
_NAMES = {
    "settings.align.source": "the video",
    "settings.align.backend": "the landmark backend (--landmarks)",
    "settings.align.smooth": "the smoothing (--smooth)",
    "settings.align.causal": "causal smoothing (--causal)",
    "settings.align.face_index": "the face followed (--face-index)",
    "settings.align.max_gap": "--max-gap",
    "settings.align.crop_size": "the crop size",
    "settings.model": "the TriPlaneNet version (--model)",
    "settings.seed": "the seed (--seed)",
    "settings.neural_rendering_resolution": "the model's rendering resolution",
    "settings.samples_multiplier": "the model's depth samples",
    "settings.noise_mode": "the model's noise mode",
    "settings.precision": "the computing precision",
    "fingerprints.model0": "the TriPlaneNet file",
    "fingerprints.model1": "the EG3D file (--eg3d)",
    "store": "what it stores (--store)",
    "precision": "the storage precision",
    "chunk_size": "frames per chunk file",
    "n_frames": "the number of frames",
}
#: Values longer than this (hashes) are not shown; the message says the content differs.
_SHOWN_MAX = 24


def describe(change: Difference) -> str:
    """One difference in words: `the seed (--seed): 0 in the cache, 5 now`; hashes are never shown."""
    name = _NAMES.get(change.key, change.key.removeprefix("settings."))
    values = (change.cached, change.wanted)
    if None not in values and not any(isinstance(v, str) and len(v) > _SHOWN_MAX for v in values):
        return f"{name}: {change.cached} in the cache, {change.wanted} now"
    content = change.key.startswith(("fingerprints.", "settings.align.source"))
    return f"{name} ({'its content ' if content else ''}differs)"


def mismatch_message(directory: Path, changes: Sequence[Difference]) -> str:
    """Why a cache cannot be used and what to do, in one sentence."""
    keys = {change.key for change in changes}
    if any(key.endswith(".mtime_ns") for key in keys):
        return (f"the inversion cache in {directory} was made by an earlier nvsvideo, which recognised the video "
                "by its modification time, not its content; rebuild it with --fresh (every frame is inverted "
                "again) or delete that folder")
    if "settings.draws" in keys:
        # A frame's planes depend on its random depth samples: frames drawn two ways must never be mixed.
        return (f"the inversion cache in {directory} was made with another scheme of random depth samples "
                "(an earlier nvsvideo), so its frames would not match frames inverted now; rebuild it with "
                "--fresh (every frame is inverted again) or choose another folder with --cache DIR")
    if any(key.startswith("settings.align.source") for key in keys):
        return (f"the inversion cache in {directory} was made from another video (the content differs); "
                "rebuild it with --fresh or choose another folder with --cache DIR")
    store = next((change for change in changes if change.key == "store"), None)
    keep = f"pass --store {store.cached} to use it as it is, " if store is not None and len(changes) == 1 else ""
    return (f"the inversion cache in {directory} was made with other settings: "
            f"{'; '.join(describe(change) for change in changes)}; {keep}rebuild it with --fresh "
            "(every frame is inverted again) or choose another folder with --cache DIR")


def compatible_manifest(
    directory: Path,
    *,
    settings: Mapping[str, Any],
    fingerprints: Mapping[str, str],
    store: StoreMode | None,
    chunk_size: int | None,
    fresh: bool,
) -> Manifest | None:
    """The manifest of the cache in `directory` if a run with these values can use it, else None when
    there is none (or `fresh` will replace it). Reads only: nothing is written or locked.

    The frame count is not compared (it comes from the alignment, which the video's content and align
    settings, both in `settings`, determine); `InversionCache.open` checks everything again.

    Raises:
        CacheMismatchError: the cache was made differently and `fresh` is False; says what differs.
    """
    old = peek_manifest(directory)
    if old is None:
        return None
    wanted = CacheIdentity(
        n_frames=old.identity.n_frames,
        chunk_size=chunk_size or old.identity.chunk_size,
        store=store or old.identity.store,
        precision=old.identity.precision,
        settings=normalize_json(settings),
        fingerprints=dict(fingerprints),
    )
    changes = old.identity.differences(wanted)
    if not changes:
        return old
    if fresh:
        return None
    raise CacheMismatchError(mismatch_message(directory, changes))


def plan_store(
    directory: Path,
    *,
    n_frames: int,
    existing: Manifest | None,
    store: StoreMode | None,
    chunk_size: int,
    ws_shape: Sequence[int],
    plane_shape: Sequence[int],
    on_info: Callable[[str], None],
    precision_bytes: int = 2,
) -> StoreMode:
    """The store mode to use, after checking that what is left to write fits on the disk.

    Args:
        directory: the cache folder (it may not exist yet).
        n_frames: the video's frames (every one counted as a face: an upper bound).
        existing: the compatible cache already there (`compatible_manifest`), None for a new or replaced one.
        store: the one asked for; None (`auto`): the existing cache's, else `choose_store`.
        chunk_size: frames per chunk file (a chunk being rewritten briefly takes twice its size).
        ws_shape, plane_shape, precision_bytes: what one frame stores (see `frame_bytes`).
        on_info: receives one sentence when `auto` leaves the planes out.

    Raises:
        CacheSpaceError: the disk cannot hold what is left to write.
    """
    per_frame = {mode: frame_bytes(mode, ws_shape, plane_shape, precision_bytes) for mode in StoreMode}
    free = free_bytes(directory)
    if existing is None:
        free += folder_bytes(directory)  # a replaced cache's chunks are deleted first
    chosen = store or (existing.identity.store if existing is not None else None)
    if chosen is None:
        planes = per_frame[StoreMode.PLANES] * n_frames
        chosen = choose_store(planes, free)
        if chosen is not StoreMode.PLANES:
            on_info(f"the cache keeps codes only (--store {chosen.value}; rendering runs the encoder again): "
                    f"planes for {n_frames} frames would take about {format_bytes(planes)}, more than "
                    f"{format_bytes(AUTO_PLANES_MAX_BYTES)} or {AUTO_PLANES_MAX_FREE_SHARE:.0%} of the "
                    f"{format_bytes(free)} free; pass --store planes to keep them")
    done = sum(len(entry.frames) for entry in existing.chunks.values()) if existing is not None else 0
    missing = n_frames - done
    todo = missing + min(chunk_size, n_frames) if missing else 0
    check_space(per_frame[chosen] * todo, free, directory, chosen, per_frame[StoreMode.RECOMPUTE] * todo,
                existing=existing is not None)
    return chosen
