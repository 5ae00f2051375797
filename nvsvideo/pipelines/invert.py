"""Invert stage: aligned crops -> TriPlaneNet -> per-frame codes and tri-planes in a resumable cache.

Layout of the cache folder (`VIDEO.nvs/` by default):
    tracks.json      the align stage's result (reused when the video and align settings are unchanged)
    inversion/       `nvsvideo.cache.InversionCache`: chunked per-frame ws, camera, planes or offsets

Each frame is inverted exactly once, in batches; novel views are rendered later from the cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvsvideo.cache import FrameRecord, FrameStatus, InversionCache, StoreMode, file_fingerprint
from nvsvideo.compose.layout import from_uint8_frames
from nvsvideo.console import Reporter
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.models.triplanenet.model import InversionResult, TriPlaneNet
from nvsvideo.pipelines.align import AlignConfig, VideoAlignment, iter_crops, track_video
from nvsvideo.render import frame_generators
from nvsvideo.video import FrameSpan, probe

TRACKS_FILE = "tracks.json"
INVERSION_DIR = "inversion"


@dataclass(frozen=True)
class InvertConfig:
    """How frames are inverted and stored."""

    store: StoreMode = StoreMode.PLANES
    """What the cache keeps per frame: final planes, offsets only, or only codes (offsets recomputed)."""
    batch_size: int = 4
    """Frames through the encoders at once."""
    seed: int = 0
    """Base seed of the renderer's random depth samples; frame i uses seed + i."""
    chunk_size: int | None = 8
    """Frames per cache chunk; a chunk is buffered in memory until written (8 planes = 100 MB)."""
    fresh: bool = False
    """Discard an existing cache whose settings differ instead of refusing."""


def default_cache_dir(video: Path) -> Path:
    """`clip.mp4` -> `clip.mp4.nvs/` beside it."""
    return video.with_name(video.name + ".nvs")


def source_fingerprint(video: Path) -> dict[str, Any]:
    """Cheap identity of the input (size, mtime): a changed video must not reuse old tracks."""
    stat = video.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def load_or_align(video: Path, cache_dir: Path, backend: LandmarkBackend, config: AlignConfig,
                  reporter: Reporter) -> tuple[VideoAlignment, bool]:
    """The video's alignment from `cache_dir/tracks.json` if it matches, else computed and saved.

    Returns:
        the alignment and whether it came from the cache.
    """
    cached = cached_alignment(video, cache_dir, backend, config)
    if cached is not None:
        return cached, True
    if (cache_dir / TRACKS_FILE).is_file():
        reporter.info("the video or the align settings changed: aligning again")
    alignment = track_video(video, backend, config, reporter)
    alignment.settings["key"] = align_settings(video, backend, config)
    cache_dir.mkdir(parents=True, exist_ok=True)
    alignment.save(cache_dir / TRACKS_FILE)
    return alignment, False


def cached_alignment(video: Path, cache_dir: Path, backend: LandmarkBackend, config: AlignConfig
                     ) -> VideoAlignment | None:
    """The alignment saved in `cache_dir` if it was made from this video with these settings, else None."""
    path = cache_dir / TRACKS_FILE
    if not path.is_file():
        return None
    cached = VideoAlignment.load(path)
    return cached if cached.settings.get("key") == align_settings(video, backend, config) else None


def align_settings(video: Path, backend: LandmarkBackend, config: AlignConfig) -> dict[str, Any]:
    return {"source": source_fingerprint(video), "backend": backend.name, "smooth": config.smooth,
            "causal": config.causal, "face_index": config.tracker.face_index, "max_gap": config.tracker.max_gap,
            "crop_size": config.crop_size}


def model_settings(model: TriPlaneNet, config: InvertConfig) -> dict[str, Any]:
    """Everything besides the weight files that changes what the cache holds."""
    options = model.render_options
    return {"model": model.version, "seed": config.seed, "neural_rendering_resolution": options.neural_rendering_resolution,
            "samples_multiplier": options.samples_multiplier, "noise_mode": options.noise_mode}


def open_cache(cache_dir: Path, alignment: VideoAlignment, model: TriPlaneNet, config: InvertConfig,
               fingerprints: dict[str, str], reporter: Reporter, *, verify: bool = True,
               readonly: bool = False, span: FrameSpan | None = None) -> InversionCache:
    """Open (or create) the inversion cache of this video, model and settings.

    `readonly`: an existing cache, shared with other readers; `span`: an existing cache, to fill only
    these frames beside the writers of the video's other spans (see `InversionCache.open`).
    """
    shared = readonly or span is not None
    return InversionCache.open(
        cache_dir / INVERSION_DIR, n_frames=len(alignment.frames),
        settings={**model_settings(model, config), "align": alignment.settings.get("key")},
        fingerprints=fingerprints, store=config.store, on_warning=reporter.warn, chunk_size=config.chunk_size,
        reset=config.fresh and not shared, verify=verify, readonly=readonly,
        frames=range(span.start, span.stop) if span is not None else None)


def prepare_cache(cache_dir: Path, alignment: VideoAlignment, model: TriPlaneNet, fingerprints: dict[str, str],
                  config: InvertConfig, reporter: Reporter) -> None:
    """Create the video's inversion cache (or check the existing one matches, or replace it with `fresh`),
    so that the writers of its spans can then fill it side by side."""
    with open_cache(cache_dir, alignment, model, config, fingerprints, reporter, verify=False):
        pass


def model_fingerprints(model_files: list[Path]) -> dict[str, str]:
    """Content fingerprints of the model files, by role (part of the cache's identity)."""
    return {f"model{i}": file_fingerprint(p) for i, p in enumerate(model_files)}


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

    Each frame draws its random depth samples from its own seed, so the result does not depend on the batch.
    The reconstruction at the input view is not rendered here: the stages that show it render it from the planes.
    """
    x = from_uint8_frames(crops, device=device)
    c = torch.from_numpy(labels).float().to(device)
    return model.invert(x, c, rng=frame_generators(frame_indices, seed), render_input_view=False)


def invert_batch(model: TriPlaneNet, crops: np.ndarray, labels: np.ndarray, frame_indices: list[int],
                 config: InvertConfig, device: torch.device) -> list[FrameRecord]:
    """Invert one batch of crops into cache records holding what the store mode keeps."""
    result = invert_crops(model, crops, labels, frame_indices, config.seed, device)
    return [FrameRecord(
        ws=result.ws[j].float().cpu(), label=torch.from_numpy(labels[j]).float(),
        planes=result.planes[j].cpu() if config.store is StoreMode.PLANES else None,
        offsets=result.offsets[j].cpu() if config.store is StoreMode.OFFSETS else None,
    ) for j in range(len(frame_indices))]


def run_invert(video: Path, cache_dir: Path, model: TriPlaneNet, fingerprints: dict[str, str],
               backend: LandmarkBackend, align_config: AlignConfig, config: InvertConfig, *,
               device: torch.device, reporter: Reporter) -> tuple[VideoAlignment, dict[str, Any]]:
    """Align (unless cached) and invert every frame with a face that the cache does not hold yet.

    `fingerprints`: `model_fingerprints` of the model files, hashed once by the caller (part of the
    cache's identity).

    Returns:
        the alignment, and a JSON-ready summary: frames, faces, inverted now, cache hits, seconds per stage,
        cache size.
    """
    started = time.perf_counter()
    probe(video)  # a clear InputError before any work on a bad file
    alignment, align_cached = load_or_align(video, cache_dir, backend, align_config, reporter)
    align_seconds = round(time.perf_counter() - started, 3)
    summary = invert_frames(video, cache_dir, alignment, model, fingerprints, config, device=device, reporter=reporter)
    return alignment, {
        "video": str(video), "cache": str(cache_dir), "frames": len(alignment.frames), **summary,
        "align_cached": align_cached, "model": model.version, "store": config.store.value,
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
        faces, inverted now, cache hits, the invert stage's seconds and, for the whole video, the cache's
        size (JSON-ready).
    """
    started = time.perf_counter()
    # The cache is indexed by frame number: the align stage numbers every decoded frame from 0.
    assert [f.index for f in alignment.frames] == list(range(len(alignment.frames))), "frames must be numbered 0..N-1"
    frames = alignment.frames if span is None else alignment.frames[span.start:span.stop]
    labels = {f.index: f.label for f in frames if f.has_face}
    with open_cache(cache_dir, alignment, model, config, fingerprints, reporter, span=span) as cache:
        for frame in frames:
            if not frame.has_face and cache.status(frame.index) is None:
                cache.mark(frame.index, FrameStatus.NO_FACE)
        missing = set(cache.missing_frames(retry_failed=True)) & set(labels)
        hits = len(labels) - len(missing)
        with reporter.progress("inverting", len(missing)) as advance:
            for indices, crops in crop_batches(video, alignment, missing, config.batch_size, span):
                batch_labels = np.stack([labels[i] for i in indices])
                for index, record in zip(indices, invert_batch(model, crops, batch_labels, indices, config, device),
                                         strict=True):
                    cache.put(index, record)
                advance(len(indices))
        # A span's writer sees only its own chunks up to date, so only a whole-video run reports the size.
        size: dict[str, Any] = {}
        if span is None:
            summary = cache.summary()
            size = {"cache_bytes": summary["bytes"], "cache_bytes_per_frame": summary["bytes_per_frame"]}
    return {"faces_found": len(labels), "inverted": len(missing), "cache_hits": hits, **size,
            "seconds": {"invert": round(time.perf_counter() - started, 3)}}
