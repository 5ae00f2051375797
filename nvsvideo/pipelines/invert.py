"""Invert stage: aligned crops -> TriPlaneNet -> per-frame codes and tri-planes in a resumable cache.

Layout of the cache folder (`VIDEO.nvs/` by default):
    tracks.json      the align stage's result (reused when the video and align settings are unchanged)
    tracks.partial.jsonl  the frames a one-pass `rerender` aligned so far, one JSON line each, written as
                     they are made; replaced by tracks.json once the pass ends (`TrackLog`)
    inversion/       `nvsvideo.cache.InversionCache`: chunked per-frame ws, camera, planes or offsets

Each frame is inverted exactly once, in batches; novel views are rendered later from the cache.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvsvideo.cache import (
    FrameRecord,
    FrameStatus,
    InversionCache,
    StoreMode,
    content_key,
    file_fingerprint,
    peek_manifest,
)
from nvsvideo.cache.plan import compatible_manifest, plan_store
from nvsvideo.cache.space import folder_bytes
from nvsvideo.compose.layout import from_uint8_frames
from nvsvideo.console import Reporter
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.limits import format_bytes
from nvsvideo.models.eg3d.generator import PLANE_RESOLUTION
from nvsvideo.models.eg3d.renderer import NUM_PLANES, PLANE_CHANNELS
from nvsvideo.models.triplanenet.model import InversionResult, TriPlaneNet
from nvsvideo.pipelines.align import AlignConfig, FrameAlignment, VideoAlignment, iter_crops, track_video
from nvsvideo.pipelines.stream import run_stages
from nvsvideo.render import DRAW_SCHEME, DrawKeys
from nvsvideo.runtime.batching import Batcher, BatchSpec
from nvsvideo.runtime.precision import effective_precision
from nvsvideo.temporal.tracking import no_subject_error
from nvsvideo.video import FrameSpan, VideoInfo, probe

TRACKS_FILE = "tracks.json"
PARTIAL_TRACKS_FILE = "tracks.partial.jsonl"
INVERSION_DIR = "inversion"
#: Key in an alignment's settings: the frame count its inversion cache was made for, when it differs from the
#: frames decoded (a one-pass run opens the cache for the probe's count before decoding finds damage).
CACHE_FRAMES = "cache_frames"


@dataclass(frozen=True)
class InvertConfig:
    """How frames are inverted and stored."""

    store: StoreMode | None = None
    """What the cache keeps per frame: final planes, offsets only, or only codes (offsets recomputed);
    None (`--store auto`): the existing cache's, else chosen by the video's size and the free disk space
    (`plan_inversion`)."""
    batch_size: BatchSpec = "auto"
    """Frames through the encoders at once, or "auto" (`nvsvideo.runtime.batching`)."""
    seed: int = 0
    """Seed of the renderer's random depth samples; each frame's are keyed by (seed, frame index, render)."""
    chunk_size: int | None = 8
    """Frames per cache chunk; a chunk is buffered in memory until written (8 planes = 100 MB)."""
    fresh: bool = False
    """Discard an existing cache whose settings differ instead of refusing."""


def source_fingerprint(video: Path) -> str:
    """Identity of the input by its content (`content_key`): a changed video must not reuse old tracks,
    a copied or touched one keeps them."""
    return content_key(video)


def load_or_align(video: Path, cache_dir: Path, backend: LandmarkBackend, config: AlignConfig,
                  reporter: Reporter, info: VideoInfo | None = None, *, key: dict[str, Any] | None = None,
                  require_face: bool = True) -> tuple[VideoAlignment, bool]:
    """The video's alignment from `cache_dir/tracks.json` if it matches, else computed and saved.

    `info`: the video's probe, when the caller has it (probing reads the whole file); `key`: its
    `align_settings`, when the caller has them (the video's content key reads up to 16 MiB). An alignment
    without a face is saved too (`metrics` measures such a video on whole frames), and refused when
    `require_face`, cached or not.

    Returns:
        the alignment and whether it came from the cache.
    """
    key = key if key is not None else align_settings(video, backend, config)
    alignment = cached_alignment(video, cache_dir, backend, config, key=key)
    cached = alignment is not None
    if alignment is None:
        if (cache_dir / TRACKS_FILE).is_file():
            reporter.info("the video or the align settings changed: aligning again")
        alignment = track_video(video, backend, config, reporter, info, require_face=False)
        alignment.settings["key"] = key
        cache_dir.mkdir(parents=True, exist_ok=True)
        alignment.save(cache_dir / TRACKS_FILE)
    if require_face and not alignment.valid().any():
        raise no_subject_error(len(alignment.frames), config.tracker.face_index, str(video))
    return alignment, cached


def cached_alignment(video: Path, cache_dir: Path, backend: LandmarkBackend, config: AlignConfig, *,
                     key: dict[str, Any] | None = None) -> VideoAlignment | None:
    """The alignment saved in `cache_dir` if it was made from this video with these settings, else None.

    `key`: the `align_settings` of this video and settings, when the caller has them.
    """
    path = cache_dir / TRACKS_FILE
    if not path.is_file():
        return None
    cached = VideoAlignment.load(path)
    key = key if key is not None else align_settings(video, backend, config)
    return cached if cached.settings.get("key") == key else None


def align_settings(video: Path, backend: LandmarkBackend, config: AlignConfig) -> dict[str, Any]:
    """What an alignment is keyed by: the video's content key and the settings; compute it once per run."""
    # Landmark cameras add nothing, so caches made before Deep3D cameras existed stay valid.
    pose = {} if config.deep3d is None else {"pose": config.pose}
    return {"source": source_fingerprint(video), "backend": backend.name, "smooth": config.smooth,
            "causal": config.causal, "face_index": config.tracker.face_index, "max_gap": config.tracker.max_gap,
            "crop_size": config.crop_size, **pose}


def model_settings(model: TriPlaneNet, config: InvertConfig) -> dict[str, Any]:
    """Everything besides the weight files that changes what the cache holds."""
    options = model.render_options
    return {"model": model.version, "seed": config.seed, "draws": DRAW_SCHEME,
            "neural_rendering_resolution": options.neural_rendering_resolution,
            "samples_multiplier": options.samples_multiplier, "noise_mode": options.noise_mode,
            "precision": effective_precision(options.force_fp32, model.latent_avg.device)}


def cache_frames(alignment: VideoAlignment) -> int:
    """Frames of the inversion cache made for `alignment`."""
    return int(alignment.settings.get(CACHE_FRAMES, len(alignment.frames)))


def open_cache(cache_dir: Path, alignment: VideoAlignment, model: TriPlaneNet, config: InvertConfig,
               fingerprints: dict[str, str], reporter: Reporter, *, verify: bool = True,
               readonly: bool = False, span: FrameSpan | None = None) -> InversionCache:
    """`open_video_cache` for the video and settings of `alignment`."""
    return open_video_cache(cache_dir, cache_frames(alignment), alignment.settings.get("key"), model, config,
                            fingerprints, reporter, verify=verify, readonly=readonly, span=span)


def open_video_cache(cache_dir: Path, n_frames: int, align_key: Any, model: TriPlaneNet, config: InvertConfig,
                     fingerprints: dict[str, str], reporter: Reporter, *, verify: bool = True,
                     readonly: bool = False, span: FrameSpan | None = None) -> InversionCache:
    """Open (or create) the inversion cache of a video of `n_frames` aligned with `align_key` (`align_settings`),
    for this model and settings.

    `readonly`: an existing cache, shared with other readers (a reader may read any frames, so `span` is
    then ignored); `span`: an existing cache, to fill only these frames beside the writers of the video's
    other spans (see `InversionCache.open`).
    """
    writes = span is not None and not readonly
    shared = readonly or writes
    return InversionCache.open(
        cache_dir / INVERSION_DIR, n_frames=n_frames, settings=cache_settings(model, config, align_key),
        fingerprints=fingerprints, store=config.store, on_warning=reporter.warn, chunk_size=config.chunk_size,
        reset=config.fresh and not shared, verify=verify, readonly=readonly,
        frames=range(span.start, span.stop) if writes else None)


def cache_settings(model: TriPlaneNet, config: InvertConfig, align_key: Any) -> dict[str, Any]:
    """The settings an inversion cache records: the model's and, under "align", the alignment's key."""
    return {**model_settings(model, config), "align": align_key}


def plan_inversion(video: Path, cache_dir: Path, n_frames: int, model: TriPlaneNet, fingerprints: dict[str, str],
                   backend: LandmarkBackend, align_config: AlignConfig, config: InvertConfig,
                   reporter: Reporter, *, align_key: dict[str, Any] | None = None) -> InvertConfig:
    """Check a run against the cache folder and its disk before any work; nothing is written.

    `align_key`: the `align_settings` of the video, when the caller has them.

    An existing cache must have been made from the same video content with the same settings and models
    (else `CacheMismatchError` in words, unless `fresh`), and the frames still to invert must fit on the
    disk (else `CacheSpaceError`, naming the sizes).

    Returns:
        `config` with its store mode decided (`auto`: the existing cache's, else by size and free space).
    """
    directory = cache_dir / INVERSION_DIR
    existing = compatible_manifest(
        directory, settings=cache_settings(
            model, config, align_key if align_key is not None else align_settings(video, backend, align_config)),
        fingerprints=fingerprints, store=config.store, chunk_size=config.chunk_size, fresh=config.fresh)
    backbone = model.decoder.backbone
    store = plan_store(directory, n_frames=n_frames, existing=existing, store=config.store,
                       chunk_size=config.chunk_size or n_frames, ws_shape=(backbone.num_ws, backbone.w_dim),
                       plane_shape=(PLANE_CHANNELS * NUM_PLANES, PLANE_RESOLUTION, PLANE_RESOLUTION),
                       on_info=reporter.info)
    return replace(config, store=store)


def open_finished(video: Path, cache_dir: Path, model: TriPlaneNet, fingerprints: dict[str, str],
                  backend: LandmarkBackend, align_config: AlignConfig, config: InvertConfig,
                  reporter: Reporter, *, align_key: dict[str, Any] | None = None
                  ) -> tuple[VideoAlignment, InversionCache] | None:
    """The video's alignment and its inversion cache opened read-only, when the cache holds every frame:
    rendering then shares the cache with other renderers (a shared lock). None when work is left
    (or `fresh` asks to check the cache as a writer); a cache made differently is refused in words.
    `align_key`: the `align_settings` of the video, when the caller has them.
    """
    if config.fresh:
        return None
    directory = cache_dir / INVERSION_DIR
    alignment = cached_alignment(video, cache_dir, backend, align_config, key=align_key)
    if alignment is None or peek_manifest(directory) is None:
        return None
    compatible_manifest(directory, settings=cache_settings(model, config, alignment.settings.get("key")),
                        fingerprints=fingerprints, store=config.store, chunk_size=config.chunk_size, fresh=False)
    # Sizes only: a damaged chunk is found when read, and its frames are inverted again in memory.
    cache = open_cache(cache_dir, alignment, model, config, fingerprints, reporter, verify=False, readonly=True)
    if cache.missing_frames(retry_failed=True):
        cache.close()
        return None
    return alignment, cache


def cache_report(cache_dir: Path) -> dict[str, Any]:
    """Where the video's cache is, its bytes on disk (tracks included) and its store mode, for `--json`."""
    manifest = peek_manifest(cache_dir / INVERSION_DIR)
    return {"path": str(cache_dir), "bytes": folder_bytes(cache_dir),
            "store": manifest.identity.store.value if manifest is not None else None}


def describe_cache(report: dict[str, Any]) -> str:
    """The human line of `cache_report`: `cache: clip.mp4.nvs (88.1 MB, --store planes)` (no store mode when
    it holds no inversion yet, e.g. only the tracks of `metrics --skip-reconstruction`)."""
    store = f", --store {report['store']}" if report["store"] is not None else ""
    return f"cache: {report['path']} ({format_bytes(report['bytes'])}{store})"


def prepare_cache(cache_dir: Path, alignment: VideoAlignment, model: TriPlaneNet, fingerprints: dict[str, str],
                  config: InvertConfig, reporter: Reporter) -> None:
    """Create the video's inversion cache (or check the existing one matches, or replace it with `fresh`),
    so that the writers of its spans can then fill it side by side."""
    with open_cache(cache_dir, alignment, model, config, fingerprints, reporter, verify=False):
        pass


class TrackLog:
    """The frames a one-pass run has aligned, stored as they are made (`PARTIAL_TRACKS_FILE`).

    An interrupted run leaves them beside the inversions it stored. The next run aligns again (the landmark
    backends follow faces from frame to frame, so only a run from the start gives the same landmarks) and
    checks each frame against its stored line: an inversion made from a crop or camera that came out
    differently (a landmark backend that is not deterministic) is not reused.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stored: dict[int, dict[str, Any]] = {}
        """The crop and camera of each frame stored by earlier runs, by frame."""
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    frame = json.loads(line)
                except ValueError:
                    continue  # the line being written when a run was killed
                self.stored[int(frame["index"])] = _alignment_key(frame)
        self._file = path.open("a")

    def matches(self, frame: FrameAlignment) -> bool:
        """Whether an inversion stored for `frame` was made from this crop and camera (True when unknown)."""
        stored = self.stored.get(frame.index)
        return stored is None or stored == _alignment_key(frame.to_json())

    def append(self, frames: Iterable[FrameAlignment]) -> None:
        """Store frames, durably before their inversions are (the caller stores those next)."""
        self._file.write("".join(json.dumps(f.to_json()) + "\n" for f in frames))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def discard(self) -> None:
        """The whole track is saved (tracks.json): the partial one is no longer needed."""
        self.close()
        self.path.unlink(missing_ok=True)


def _alignment_key(frame: dict[str, Any]) -> dict[str, Any]:
    """What an inversion depends on in a frame's JSON alignment: its crop and its camera."""
    return {"crop_transform": frame["crop_transform"], "label": frame["label"]}


def model_fingerprints(model_files: list[Path], memo_file: Path | None = None) -> dict[str, str]:
    """Content fingerprints of the model files, by role (part of the cache's identity).

    `memo_file`: where hashes are remembered across runs (`fingerprint_memo`); None hashes every file.
    """
    return {f"model{i}": file_fingerprint(p, memo_file=memo_file) for i, p in enumerate(model_files)}


def crop_batches(video: Path, alignment: VideoAlignment, wanted: set[int], batch_size: int,
                 span: FrameSpan | None = None) -> Iterator[tuple[list[int], np.ndarray]]:
    """(frame indices, crops uint8 [B,512,512,3]) of the wanted frames, in order, decoding the video
    (or `span` of it) once."""
    indices: list[int] = []
    crops: list[np.ndarray] = []
    for batch, batch_crops in iter_crops(video, alignment, batch_size=16, only=wanted, span=span):
        for index, crop in zip(batch.indices.tolist(), batch_crops, strict=True):
            if crop is not None:
                indices.append(index)
                crops.append(crop)
                if len(indices) == batch_size:
                    yield indices, np.stack(crops)
                    indices, crops = [], []
    if indices:
        yield indices, np.stack(crops)


@torch.inference_mode()
def invert_crops(model: TriPlaneNet, crops: np.ndarray, labels: np.ndarray, frame_indices: list[int], seed: int,
                 device: torch.device) -> InversionResult:
    """Codes and tri-planes of aligned crops uint8 [B,512,512,3] with cameras [B,25].

    Each frame's random depth samples are keyed by (seed, its index, render), so the result does not depend on
    the batch. The reconstruction at the input view is not rendered here: the stages that show it render it from
    the planes (with the same keys, `RenderId.INPUT_VIEW`).
    """
    x = from_uint8_frames(crops, device=device)
    c = torch.from_numpy(labels).float().to(device)
    return model.invert(x, c, rng=DrawKeys.of(seed, frame_indices), render_input_view=False)


def invert_batch(model: TriPlaneNet, crops: np.ndarray, labels: np.ndarray, frame_indices: list[int],
                 config: InvertConfig, device: torch.device) -> list[FrameRecord]:
    """Invert one batch of crops into cache records holding what the store mode keeps."""
    result = invert_crops(model, crops, labels, frame_indices, config.seed, device)
    return [FrameRecord(
        ws=result.ws[j].float().cpu(), label=torch.from_numpy(labels[j]).float(),
        planes=result.planes[j].cpu() if config.store is StoreMode.PLANES else None,
        offsets=result.offsets[j].cpu() if config.store is StoreMode.OFFSETS else None,
    ) for j in range(len(frame_indices))]


def prepare_inversion(video: Path, cache_dir: Path, model: TriPlaneNet, fingerprints: dict[str, str],
                      backend: LandmarkBackend, align_config: AlignConfig, config: InvertConfig,
                      reporter: Reporter, info: VideoInfo | None = None, *, align_key: dict[str, Any] | None = None
                      ) -> tuple[InvertConfig, VideoAlignment, bool]:
    """Everything before the frames are inverted: the checks of `plan_inversion`, then the alignment.

    `info`: the video's probe, when the caller has it (probing reads the whole file); `align_key`: its
    `align_settings`, likewise (computed here once otherwise).

    Returns:
        `config` with its store mode decided, the alignment, and whether it came from the cache.
    """
    info = info if info is not None else probe(video)  # a clear InputError before any work on a bad file
    # Refusals (a cache made differently, a disk too small) come before any work and leave no trace.
    align_key = align_key if align_key is not None else align_settings(video, backend, align_config)
    config = plan_inversion(video, cache_dir, info.frame_count, model, fingerprints, backend, align_config, config,
                            reporter, align_key=align_key)
    alignment, align_cached = load_or_align(video, cache_dir, backend, align_config, reporter, info, key=align_key)
    return config, alignment, align_cached


def mark_faceless(cache: InversionCache, frames: list[FrameAlignment]) -> None:
    """Record the frames without a face that the cache does not know yet, so that resuming skips them."""
    for frame in frames:
        if not frame.has_face and cache.status(frame.index) is None:
            cache.mark(frame.index, FrameStatus.NO_FACE)


def invert_records(batcher: Batcher, model: TriPlaneNet, crops: np.ndarray, labels: np.ndarray,
                   frame_indices: list[int], config: InvertConfig, device: torch.device) -> list[FrameRecord]:
    """`invert_batch` over any number of crops, in the batches `batcher` sizes."""
    return batcher.run(lambda part, part_labels, part_indices: invert_batch(
        model, part, part_labels, part_indices, config, device), crops, labels, frame_indices)


def run_invert(video: Path, cache_dir: Path, model: TriPlaneNet, fingerprints: dict[str, str],
               backend: LandmarkBackend, align_config: AlignConfig, config: InvertConfig, *,
               device: torch.device, reporter: Reporter, info: VideoInfo | None = None
               ) -> tuple[VideoAlignment, dict[str, Any]]:
    """Align (unless cached) and invert every frame with a face that the cache does not hold yet.

    `fingerprints`: `model_fingerprints` of the model files, hashed once by the caller (part of the
    cache's identity). `info`: the video's probe, when the caller has it.

    Returns:
        the alignment, and a JSON-ready summary: frames, faces, inverted now, cache hits, seconds per stage,
        and the cache (`cache_report`: path, bytes, store mode).
    """
    started = time.perf_counter()
    config, alignment, align_cached = prepare_inversion(video, cache_dir, model, fingerprints, backend, align_config,
                                                        config, reporter, info)
    align_seconds = round(time.perf_counter() - started, 3)
    summary = invert_frames(video, cache_dir, alignment, model, fingerprints, config, device=device, reporter=reporter)
    return alignment, {
        "video": str(video), "frames": len(alignment.frames), **summary,
        "align_cached": align_cached, "model": model.version, "cache": cache_report(cache_dir),
        "seconds": {"align": align_seconds, **summary["seconds"]},
    }


def invert_frames(video: Path, cache_dir: Path, alignment: VideoAlignment, model: TriPlaneNet,
                  fingerprints: dict[str, str], config: InvertConfig, *, device: torch.device, reporter: Reporter,
                  span: FrameSpan | None = None) -> dict[str, Any]:
    """Invert the frames with a face (all, or those of `span`) that the cache does not hold yet.

    With `span`, the cache must exist (`prepare_cache`) and the span must cover whole cache chunks; the
    other spans of the video can be inverted at the same time by other processes.

    Args:
        fingerprints: `model_fingerprints` of the model files (part of the cache's identity).

    Returns:
        faces, inverted now, cache hits, the batch size used (None when nothing was inverted under
        `auto` on CUDA), the invert stage's seconds and, under `overlap`, the busy seconds of its
        overlapped stages (decode and crops, encoders, cache writes; JSON-ready).
    """
    started = time.perf_counter()
    # The cache is indexed by frame number: the align stage numbers every decoded frame from 0.
    assert [f.index for f in alignment.frames] == list(range(len(alignment.frames))), "frames must be numbered 0..N-1"
    frames = alignment.frames if span is None else alignment.frames[span.start:span.stop]
    labels = {f.index: f.label for f in frames if f.has_face}
    with open_cache(cache_dir, alignment, model, config, fingerprints, reporter, span=span) as cache:
        config = replace(config, store=cache.store)  # `auto`: what the existing cache keeps
        mark_faceless(cache, frames)
        missing = set(cache.missing_frames(retry_failed=True)) & set(labels)
        hits = len(labels) - len(missing)
        batcher = Batcher(config.batch_size, device, warn=reporter.warn)
        with reporter.progress("inverting", len(missing)) as advance:

            def encode(item: tuple[list[int], np.ndarray]) -> tuple[list[int], list[FrameRecord]]:
                indices, crops = item
                batch_labels = np.stack([labels[i] for i in indices])
                return indices, invert_records(batcher, model, crops, batch_labels, indices, config, device)

            def store(item: tuple[list[int], list[FrameRecord]]) -> None:
                # Only this thread touches the cache during the pass; a chunk still becomes durable in
                # `put` before the manifest names it, so a kill -9 here loses only unwritten frames.
                for index, record in zip(*item, strict=True):
                    cache.put(index, record)
                advance(len(item[0]))

            stages = run_stages(crop_batches(video, alignment, missing, batcher.gather, span), encode, store,
                                names=("decode", "invert", "store"))
    return {"faces_found": len(labels), "inverted": len(missing), "cache_hits": hits,
            "batch_size": batcher.size, "seconds": {"invert": round(time.perf_counter() - started, 3)},
            "overlap": {"invert": stages.to_json()}}
