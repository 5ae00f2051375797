"""`nvsvideo metrics`: how well a video's inversion reproduces it, and how stable a re-render of it is.

Reconstruction: every frame with a face is rendered from its cached inversion at its own (input) camera
and compared with its aligned input crop: PSNR and SSIM always, LPIPS (alex) and ArcFace identity
similarity where their weight files are present (a note says where to put them otherwise).

Stability: per frame t, the mean absolute change from frame t-1 of the rendered video and of the input,
on the face crop (the aligned crop of each frame, as the model sees it; the rendered video is cropped the
same way when it has the input's size, i.e. a `paste` output; a `crop` or `compare` output is taken whole),
or on whole frames when the video has no face. Their ratio over the pairs measured in both says whether
the re-render flickers more than its input moves (1 = as stable as the input).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.table import Table

from nvsvideo.cache import FrameRecord
from nvsvideo.compose.layout import from_uint8_frames, resize_square, to_uint8_frames
from nvsvideo.compose.resample import image_tensor
from nvsvideo.console import Reporter
from nvsvideo.errors import InputError, NoFaceError, UsageError
from nvsvideo.face.crop import apply_crop
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.files import atomic_output
from nvsvideo.metrics import frame_change, psnr, ssim, stability_summary
from nvsvideo.metrics.identity import ArcFace, cosine_similarity, load_arcface
from nvsvideo.metrics.lpips import LPIPS, load_lpips
from nvsvideo.models.triplanenet.model import TriPlaneNet
from nvsvideo.pipelines.align import AlignConfig, VideoAlignment
from nvsvideo.pipelines.invert import (
    InvertConfig,
    cache_report,
    load_or_align,
    open_cache,
    run_invert,
)
from nvsvideo.pipelines.rerender import RerenderConfig, face_tensors, frame_planes
from nvsvideo.render import RenderId, RenderOptions, render_views
from nvsvideo.runtime.batching import Batcher
from nvsvideo.video import VideoReader, probe
from nvsvideo.weights.registry import get_weight, how_to_get, locate

#: Per-frame columns, in file order.
COLUMNS = ("frame", "time", "face", "psnr", "ssim", "lpips", "identity", "input_change", "output_change")
#: Reconstruction measures with their direction, for the summary.
RECONSTRUCTION = {"psnr": "dB, higher is better", "ssim": "1 = identical", "lpips": "0 = identical",
                  "identity": "ArcFace cosine, 1 = same"}


@dataclass(frozen=True)
class MetricsConfig:
    """What to measure."""

    rendered: Path | None = None
    """A video rendered from the input (rerender/edit output) whose temporal stability to measure."""
    reconstruction: bool = True
    """Render the cached inversion at the input view and compare it with the input crops."""
    render: RenderOptions = RenderOptions(samples_multiplier=2.0)
    """How the reconstruction is rendered (as `rerender`'s compare output renders it by default)."""
    per_frame: Path | None = None
    """Write the per-frame values here (.csv or .json)."""


@dataclass
class PerceptualModels:
    """The learned measures whose weights are present; `notes` say how to enable the others."""

    lpips: LPIPS | None = None
    arcface: ArcFace | None = None
    notes: list[str] = field(default_factory=list)


def per_frame_format(path: Path) -> str:
    """'csv' or 'json' from the file's suffix.

    Raises:
        UsageError: another suffix.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise UsageError(f"the per-frame file must end in .csv or .json, not '{path.name}'")
    return suffix[1:]


def load_perceptual(weights_dir: Path, env: Mapping[str, str], device: torch.device) -> PerceptualModels:
    """LPIPS and ArcFace from the weights folder where their files are present; never downloads."""
    models = PerceptualModels()
    lin, alex = get_weight("lpips-alex"), get_weight("alexnet-torchvision")
    lin_path, alex_path = locate(lin, weights_dir, env), locate(alex, weights_dir, env)
    if lin_path is not None and alex_path is not None:
        models.lpips = load_lpips(alex_path, lin_path, device)
    else:
        missing = [entry for entry, path in ((lin, lin_path), (alex, alex_path)) if path is None]
        models.notes.append("LPIPS skipped: " + "; ".join(how_to_get(e, weights_dir, env) for e in missing))
    face = get_weight("arcface-ir-se50")
    face_path = locate(face, weights_dir, env)
    if face_path is not None:
        models.arcface = load_arcface(face_path, device)
    else:
        models.notes.append("identity skipped: " + how_to_get(face, weights_dir, env))
    return models


def reconstruct(model: TriPlaneNet, alignment: VideoAlignment, indices: list[int], crops: np.ndarray,
                records: list[FrameRecord | None], invert_config: InvertConfig, render: RenderOptions,
                device: torch.device) -> np.ndarray:
    """uint8 [B, S, S, 3] renders of face frames at their input cameras, from the cache; re-inverted where
    the cache keeps only codes or lost a chunk (per-frame seeds give the cached result, up to its float16)."""
    labels = np.stack([alignment.frames[i].label for i in indices])
    ws, planes, offsets = face_tensors(model, records, crops, labels, indices, invert_config.seed, device)
    if planes is None:
        ws, planes, _ = frame_planes(model, ws, planes, offsets, alignment.times()[indices], RerenderConfig(),
                                     float(alignment.fps), need_unedited=False)
    # Keyed as the inversion's own final render and `--output compare`'s middle panel are.
    images = render_views(model.decoder, planes, ws, torch.from_numpy(labels).float(), indices, render,
                          RenderId.INPUT_VIEW)["image"]
    return to_uint8_frames(images)


def compare_crops(crops: np.ndarray, recons: np.ndarray, perceptual: PerceptualModels,
                  device: torch.device) -> list[dict[str, float | None]]:
    """Per frame: PSNR, SSIM, LPIPS and identity of reconstructions against input crops (at the render's size)."""
    side = recons.shape[1]
    inputs = np.stack([resize_square(image_tensor(crop), side).numpy() for crop in crops])
    rows: list[dict[str, float | None]] = [
        {"psnr": psnr(a, b), "ssim": ssim(a, b), "lpips": None, "identity": None}
        for a, b in zip(inputs, recons, strict=True)]
    if perceptual.lpips is not None or perceptual.arcface is not None:
        x, y = from_uint8_frames(inputs, device), from_uint8_frames(recons, device)
        if perceptual.lpips is not None:
            for row, value in zip(rows, perceptual.lpips(x, y).tolist(), strict=True):
                row["lpips"] = value
        if perceptual.arcface is not None:
            for row, value in zip(rows, cosine_similarity(perceptual.arcface(x), perceptual.arcface(y)).tolist(),
                                  strict=True):
                row["identity"] = value
    return rows


def _frames(video: Path | None) -> Iterator[np.ndarray | None]:
    """The frames of `video` one by one, or None forever when there is no video."""
    if video is None:
        while True:
            yield None
    for batch in VideoReader(video, batch_size=8):
        yield from batch.frames


def stability_regions(frame: np.ndarray, out_frame: np.ndarray | None, crop: np.ndarray | None,
                      transform: Any, *, use_crops: bool, same_size: bool
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """What the stability measure compares in one frame of the input and of the rendered video (None: nothing).

    With `use_crops` (the video has faces): the input's aligned crop (None without a face) and the rendered
    frame cropped the same way when it has the input's size (a paste output), else the rendered frame whole.
    Without faces: both frames whole.
    """
    if not use_crops:
        return frame, out_frame
    if out_frame is None or not same_size:
        return crop, out_frame
    return crop, apply_crop(out_frame, transform) if crop is not None else None


def run_metrics(video: Path, cache_dir: Path, model: TriPlaneNet | None, fingerprints: dict[str, str],
                backend: LandmarkBackend, align_config: AlignConfig, invert_config: InvertConfig,
                config: MetricsConfig, perceptual: PerceptualModels, *, device: torch.device,
                reporter: Reporter) -> dict[str, Any]:
    """Measure, write the per-frame file if asked, and return the summary with the per-frame rows.

    `model` is needed only for the reconstruction; the video is aligned and inverted first where the
    cache does not hold it yet (as `invert` would).

    Raises:
        UsageError: nothing to measure (no reconstruction and no rendered video).
        InputError: the rendered video has another number of frames than the input.
    """
    if config.per_frame is not None:
        per_frame_format(config.per_frame)
    if not config.reconstruction and config.rendered is None:
        raise UsageError("nothing to measure: give --rendered VIDEO, or leave out --skip-reconstruction")
    info = probe(video)
    same_size = False
    if config.rendered is not None:
        out_info = probe(config.rendered)
        if out_info.frame_count != info.frame_count:
            raise InputError(f"{config.rendered} has {out_info.frame_count} frames and {video} has "
                             f"{info.frame_count}: the rendered video must be made from this input")
        same_size = (out_info.width, out_info.height) == (info.width, info.height)
    inverted: dict[str, Any] = {}
    notes = list(perceptual.notes)
    try:
        if config.reconstruction:
            assert model is not None, "the reconstruction needs the model"
            alignment, inverted = run_invert(video, cache_dir, model, fingerprints, backend, align_config,
                                             invert_config, device=device, reporter=reporter, info=info)
    except NoFaceError:
        if config.rendered is None:
            raise
        # Nothing to reconstruct, but the stability is still measured: on whole frames, as promised.
        notes = ["no face in any frame: no reconstruction to measure; stability measured on whole frames"]
        config = replace(config, reconstruction=False)
    if not config.reconstruction:
        alignment, _ = load_or_align(video, cache_dir, backend, align_config, reporter, info, require_face=False)
    use_crops = bool(alignment.valid().any())
    rows = [{"frame": f.index, "time": round(f.time, 6), "face": f.has_face} | {c: None for c in COLUMNS[3:]}
            for f in alignment.frames]
    with contextlib.ExitStack() as stack:
        records = None
        if config.reconstruction:
            assert model is not None
            cache = stack.enter_context(open_cache(cache_dir, alignment, model, invert_config, fingerprints, reporter,
                                                   verify=False, readonly=True))
            records = cache.iter_frames()
        batcher = Batcher(invert_config.batch_size, device, warn=reporter.warn)
        advance = stack.enter_context(reporter.progress("measuring", len(rows)))
        rendered = _frames(config.rendered)
        previous: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        for batch in VideoReader(video, batch_size=batcher.gather, info=info):
            indices = [int(i) for i in batch.indices]
            crops = {i: apply_crop(frame, alignment.frames[i].transform)
                     for i, frame in zip(indices, batch.frames, strict=True) if alignment.frames[i].has_face}
            batch_records = {i: rec for i, (_, rec) in zip(indices, (next(records) for _ in indices), strict=True)
                             } if records is not None else {}
            faces = [i for i in indices if i in crops]
            if config.reconstruction and faces:
                assert model is not None
                face_crops = np.stack([crops[i] for i in faces])
                recons = batcher.run(lambda part, part_crops, part_records: list(reconstruct(
                    model, alignment, part, part_crops, part_records, invert_config, config.render, device)),
                    faces, face_crops, [batch_records[i] for i in faces])
                for i, values in zip(faces, compare_crops(face_crops, np.stack(recons), perceptual, device),
                                     strict=True):
                    rows[i].update(values)
            for i, frame in zip(indices, batch.frames, strict=True):
                region_in, region_out = stability_regions(frame, next(rendered), crops.get(i),
                                                          alignment.frames[i].transform, use_crops=use_crops,
                                                          same_size=same_size)
                prev_in, prev_out = previous
                if region_in is not None and prev_in is not None:
                    rows[i]["input_change"] = frame_change(prev_in, region_in)
                if region_out is not None and prev_out is not None:
                    rows[i]["output_change"] = frame_change(prev_out, region_out)
                previous = (region_in, region_out)
            advance(len(indices))
    summary = summarize(rows, config)
    summary.update({"video": str(video), "cache": cache_report(cache_dir), "notes": notes})
    if config.reconstruction:
        summary["cache_hits"], summary["inverted"] = inverted["cache_hits"], inverted["inverted"]
    if config.rendered is not None:
        summary["stability"]["region"] = ("face crop" if same_size else "input face crop, rendered frame whole"
                                          ) if use_crops else "whole frames"
    if config.per_frame is not None:
        write_per_frame(config.per_frame, rows)
        summary["per_frame_file"] = str(config.per_frame)
    summary["per_frame"] = [json_row(row) for row in rows]
    return summary


def _stats(values: list[float]) -> dict[str, Any]:
    """Count, mean, min and max; an infinite value (PSNR of identical images) as None, which JSON can hold."""
    if not values:
        return {"frames": 0, "mean": None, "min": None, "max": None}
    stats = {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}
    return {"frames": len(values), **json_row(stats)}


def summarize(rows: list[dict[str, Any]], config: MetricsConfig) -> dict[str, Any]:
    """Mean, min and max of each measure over the frames that have it, and the stability summary."""
    summary: dict[str, Any] = {"frames": len(rows), "faces": sum(bool(r["face"]) for r in rows)}
    if config.reconstruction:
        summary["reconstruction"] = {name: _stats([r[name] for r in rows if r[name] is not None])
                                     for name in RECONSTRUCTION}
    if config.rendered is not None:
        summary["stability"] = {"rendered": str(config.rendered),
                                **stability_summary([r["input_change"] for r in rows],
                                                    [r["output_change"] for r in rows])}
    return summary


def json_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with non-finite numbers (the PSNR of identical images) as None, which JSON can hold."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def write_per_frame(path: Path, rows: list[dict[str, Any]]) -> None:
    """Per-frame values as CSV (empty cells where not measured; 'inf' for identical images) or JSON."""
    if per_frame_format(path) == "json":
        text = json.dumps({"columns": list(COLUMNS), "frames": [json_row(r) for r in rows]}, indent=1)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
        text = buffer.getvalue()
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(summary: Mapping[str, Any]) -> Table:
    """The summary for humans: one row per measure."""
    table = Table(title=f"{summary['video']}: {summary['frames']} frames, {summary['faces']} with a face",
                  title_justify="left")
    for column in ("measure", "mean", "min", "max", "frames", "meaning"):
        table.add_column(column, overflow="fold")
    for name, meaning in RECONSTRUCTION.items():
        stats = summary.get("reconstruction", {}).get(name)
        if stats is not None:
            digits = 2 if name == "psnr" else 4
            table.add_row(name, *(_number(stats[k], digits) for k in ("mean", "min", "max")), str(stats["frames"]),
                          meaning)
    stability = summary.get("stability")
    if stability is not None:
        pairs = str(stability["pairs"])
        table.add_row("input change", _number(stability["input_change"], 3), "", "", pairs,
                      f"levels per frame, {stability['region']}")
        table.add_row("output change", _number(stability["output_change"], 3), "", "", pairs, "levels per frame")
        table.add_row("stability ratio", _number(stability["ratio"], 3), "", "", pairs,
                      "output / input change, 1 = as stable as the input")
    return table
