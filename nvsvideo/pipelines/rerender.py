"""`nvsvideo rerender` / `nvsvideo edit`: decode -> align -> invert -> (edit) -> render along a camera path ->
compose -> encode, as one streaming pass over the video that reuses the inversion cache.

Memory stays flat in the video's length: frames are decoded, rendered and encoded batch by batch, and
the cache is read one chunk at a time. Frames without a face are passed through (or letterboxed).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nvsvideo.cache import FrameRecord, InversionCache
from nvsvideo.cameras.paths import evaluate_camera_path, parse_camera_path
from nvsvideo.compose.depth import depth_to_rgb
from nvsvideo.compose.layout import (
    OutputMode,
    compose_frame,
    from_uint8_frames,
    output_shape,
    to_uint8_frames,
)
from nvsvideo.compose.mesh import export_mesh
from nvsvideo.compose.ood import KeepOodOptions, OodKeeper
from nvsvideo.console import Reporter
from nvsvideo.edits import Edit, OffsetPolicy, apply_edits, offset_weights
from nvsvideo.errors import InputError, NoFaceError, UsageError
from nvsvideo.face.crop import apply_crop
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.models.triplanenet.model import TriPlaneNet
from nvsvideo.pipelines.align import AlignConfig, VideoAlignment
from nvsvideo.pipelines.invert import InvertConfig, invert_crops, open_cache, run_invert
from nvsvideo.render import RenderOptions, render_views
from nvsvideo.video import FrameSpan, VideoInfo, VideoReader, VideoWriter, probe


@dataclass(frozen=True)
class RerenderConfig:
    """What to render and how to write it."""

    camera_path: str = "orbit"
    """Camera path spec (`nvsvideo.cameras.paths.parse_camera_path`)."""
    output: OutputMode = OutputMode.PASTE
    """crop: the 512 face; paste: pasted back into the frame; compare: input | reconstruction | novel."""
    size: int = 512
    """Side of the face in crop/compare outputs."""
    render: RenderOptions = RenderOptions(samples_multiplier=2.0)
    """Rendering of the novel views (per-frame seeds; the official scripts double the samples)."""
    keep_ood: KeepOodOptions | None = None
    """Blend back what the generator cannot reproduce, near the input view; None = off."""
    edits: Sequence[Edit] = field(default_factory=tuple)
    """Latent edits applied to the cached codes."""
    offset_policy: OffsetPolicy = OffsetPolicy.KEEP
    """What edits do to the tri-plane offsets."""
    batch_size: int = 4
    """Frames rendered at once."""
    crf: int = 18
    """libx264 quality."""
    depth: Path | None = None
    """Also write the rendered depth as a colour video."""
    mesh: Path | None = None
    """Also export the shape of one frame (.ply/.obj)."""
    mesh_frame: int | None = None
    """Frame for --mesh (default: the first frame with a face)."""
    mesh_resolution: int = 256
    """Marching-cubes grid points per axis."""


def fill_missing(labels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[T, 25] labels with rows of faceless frames copied from the nearest frame with a face.

    Camera paths that follow the input need a camera in every frame; faceless frames are not rendered,
    so the copy only keeps the path defined there.
    """
    if not valid.any():
        raise NoFaceError("no frame has a face, so there is no input camera to follow")
    good = np.flatnonzero(valid)
    nearest = good[np.abs(np.arange(len(labels))[:, None] - good[None]).argmin(1)]
    return labels[nearest]


def output_cameras(alignment: VideoAlignment, spec: str) -> np.ndarray:
    """[T, 25] render camera per frame along the path."""
    parsed = parse_camera_path(spec)
    inputs = fill_missing(alignment.labels(), alignment.valid())
    return evaluate_camera_path(parsed, alignment.times(), float(alignment.fps), input_labels=inputs)


@torch.inference_mode()
def frame_planes(model: TriPlaneNet, ws: torch.Tensor, planes: torch.Tensor | None, offsets: torch.Tensor | None,
                 times: np.ndarray, config: RerenderConfig, fps: float, *, need_unedited: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Codes and tri-planes to render for a batch, with the edits applied.

    Args:
        ws: [B, 14, 512] cached codes.
        planes: [B, 96, H, W] cached final planes, or None when the cache holds offsets.
        offsets: [B, 96, H, W] cached offsets (planes - backbone(ws)), or None when it holds planes.
        times: [B] frame times in seconds (edit ramps).
        need_unedited: also return the unedited planes (for the reconstruction at the input view).
    Returns:
        (ws', planes') to render and the unedited planes (None unless asked for). The backbone runs only
        where needed: never for cached planes without edits.
    """
    def backbone(codes: torch.Tensor) -> torch.Tensor:
        return model.decoder.synthesize_planes(codes, noise_mode=model.render_options.noise_mode)

    if planes is None and (need_unedited or not config.edits):
        planes = backbone(ws) + offsets
    if not config.edits:
        return ws, planes, planes
    if offsets is None:
        offsets = planes - backbone(ws)
    t = torch.from_numpy(times).to(ws.device)
    ws_edit = apply_edits(ws, config.edits, t, fps=fps)
    weights = offset_weights(config.edits, t, config.offset_policy, fps=fps).to(offsets)
    return ws_edit, backbone(ws_edit) + offsets * weights[:, None, None, None], planes


def stored_tensors(records: Sequence[FrameRecord], device: torch.device
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(ws, planes or None, offsets or None) of cached records, batched on `device` in float32."""
    ws = torch.stack([r.ws for r in records]).to(device)
    if all(r.planes is not None for r in records):
        return ws, torch.stack([r.planes for r in records]).to(device).float(), None
    return ws, None, torch.stack([r.offsets for r in records]).to(device).float()


def run_rerender(
    video: Path,
    output: Path,
    cache_dir: Path,
    model: TriPlaneNet,
    fingerprints: dict[str, str],
    backend: LandmarkBackend,
    align_config: AlignConfig,
    invert_config: InvertConfig,
    config: RerenderConfig,
    *,
    device: torch.device,
    reporter: Reporter,
) -> dict[str, Any]:
    """The whole job for one video. Returns a JSON-ready summary (frames, faces, seconds per stage, cache hits)."""
    info = probe(video)
    if config.output is OutputMode.PASTE and config.size != 512:
        reporter.warn("--size applies to crop and compare outputs; paste keeps the input's frame size")
    parse_camera_path(config.camera_path)  # a bad spec fails before the long stages
    alignment, inverted = run_invert(video, cache_dir, model, fingerprints, backend, align_config, invert_config,
                                     device=device, reporter=reporter)
    rendered = render_video(video, output, cache_dir, alignment, model, fingerprints, invert_config, config, device=device, reporter=reporter, info=info)
    return {
        "video": str(video), "output": str(output), "frames": len(alignment.frames),
        "faces_found": inverted["faces_found"], "rendered": rendered["rendered"], "camera_path": config.camera_path,
        "output_mode": config.output.value, "edits": [e.summary() for e in config.edits],
        "cache": str(cache_dir), "cache_hits": inverted["cache_hits"], "inverted": inverted["inverted"],
        "seconds": {**inverted["seconds"], **rendered["seconds"]},
        "depth": str(config.depth) if config.depth else None, "mesh": str(config.mesh) if config.mesh else None,
    }


def render_video(
    video: Path,
    output: Path,
    cache_dir: Path,
    alignment: VideoAlignment,
    model: TriPlaneNet,
    fingerprints: dict[str, str],
    invert_config: InvertConfig,
    config: RerenderConfig,
    *,
    device: torch.device,
    reporter: Reporter,
    info: VideoInfo | None = None,
    span: FrameSpan | None = None,
) -> dict[str, Any]:
    """Render the frames of an inverted video along the camera path and write `output`.

    Args:
        cache_dir: the video's cache folder, already filled by `run_invert` (or, for a span, by
            `invert_frames` for that span) for `alignment`.
        fingerprints: `model_fingerprints` of the model files (part of the cache's identity).
        span: render only these frames, into a part file without audio (one chunk of a video split
            across workers; `nvsvideo.video.join_videos` makes the final file). The cache is then
            opened read-only, shared with the other chunks' processes, and `config` must not ask for
            depth or a mesh.
            The camera path and edit ramps are still evaluated over the whole video, and every frame
            keeps its own seed, so the chunks put together equal an unsplit render (except that the
            `--keep-ood` mask's smoothing over time restarts at each chunk).

    Returns:
        frames written, faces rendered, and the render stage's seconds.
    """
    if span is not None and (config.depth is not None or config.mesh is not None):
        raise ValueError("depth and mesh outputs cover the whole video; they cannot be rendered in chunks")
    info = info if info is not None else probe(video)
    cameras = output_cameras(alignment, config.camera_path)
    started = time.perf_counter()
    out_h, out_w = output_shape(config.output, (info.height, info.width), config.size)
    keeper = OodKeeper(config.keep_ood) if config.keep_ood is not None else None
    fps = float(alignment.fps)
    frames = range(len(alignment.frames)) if span is None else range(span.start, span.stop)
    rendered = 0
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(open_cache(cache_dir, alignment, model, invert_config, fingerprints, reporter,
                                               verify=False, readonly=span is not None))
        records = cache.iter_frames(frames)
        writer = stack.enter_context(VideoWriter(output, width=out_w, height=out_h, fps=info.fps,
                                                 time_base=info.time_base, crf=config.crf,
                                                 audio_from=video if span is None else None, protect=(video,)))
        depth_writer = None
        if config.depth is not None:
            res = int(config.render.neural_rendering_resolution or model.decoder.neural_rendering_resolution)
            depth_writer = stack.enter_context(VideoWriter(config.depth, width=res, height=res, fps=info.fps,
                                                           time_base=info.time_base, crf=config.crf,
                                                           protect=(video,)))
        advance = stack.enter_context(reporter.progress("rendering", len(frames)))
        reader = VideoReader(video, batch_size=config.batch_size, info=info, span=span)
        for batch in reader:
            frames_out, depth_out = [], []
            items = [(int(i), frame, next(records)) for i, frame in zip(batch.indices, batch.frames, strict=True)]
            faces = [(i, frame, rec) for i, frame, rec in items if alignment.frames[i].has_face]
            novel_by_index: dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]] = {}
            if faces:
                novel_by_index = render_faces(model, alignment, cameras, faces, config, invert_config, keeper,
                                              device, fps)
            for i, frame, _ in items:
                got = novel_by_index.get(i)
                if got is None:
                    if keeper is not None:
                        keeper.reset()
                    frames_out.append(compose_frame(config.output, frame, None, None, size=config.size))
                    if depth_writer is not None:
                        depth_out.append(np.zeros((depth_writer.height, depth_writer.width, 3), np.uint8))
                    continue
                novel, crop, recon, depth = got
                frames_out.append(compose_frame(config.output, frame, alignment.frames[i].transform, novel,
                                                size=config.size, input_crop=crop, reconstruction=recon))
                depth_out.append(depth)
                rendered += 1
            writer.write(np.stack(frames_out), batch.pts)
            if depth_writer is not None:
                depth_writer.write(np.stack(depth_out), batch.pts)
            advance(len(batch))
        if reader.warning:
            reporter.warn(reader.warning)
        if writer.frames_written != len(frames):
            raise InputError(f"{video} now decodes to {writer.frames_written} frames where its alignment has "
                             f"{len(frames)}; the file changed or is damaged")
        if config.mesh is not None:
            export_frame_mesh(model, cache, alignment, config, device)
    return {"frames": len(frames), "rendered": rendered, "seconds": {"render": round(time.perf_counter() - started, 3)}}


def render_faces(model: TriPlaneNet, alignment: VideoAlignment, cameras: np.ndarray,
                 faces: list[tuple[int, np.ndarray, tuple[int, FrameRecord | None]]], config: RerenderConfig,
                 invert_config: InvertConfig, keeper: OodKeeper | None, device: torch.device, fps: float
                 ) -> dict[int, tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]]:
    """Render the face frames of one batch: {frame: (novel uint8, input crop, reconstruction, depth rgb)}."""
    indices = [i for i, _, _ in faces]
    crops = np.stack([apply_crop(frame, alignment.frames[i].transform) for i, frame, _ in faces])
    in_labels = np.stack([alignment.frames[i].label for i in indices])
    records = [rec for _, _, (_, rec) in faces]
    if any(r is None or (r.planes is None and r.offsets is None) for r in records):
        # recompute store mode, or a damaged cache chunk a read-only renderer cannot fix: invert again
        # (deterministic per-frame seeds: the same result as before, up to the cache's float16 storage).
        result = invert_crops(model, crops, in_labels, indices, invert_config.seed, device)
        ws, planes, offsets = result.ws, result.planes, None
    else:
        ws, planes, offsets = stored_tensors(records, device)
    need_recon = keeper is not None or config.output is OutputMode.COMPARE
    ws_out, planes_out, unedited = frame_planes(model, ws, planes, offsets, alignment.times()[indices], config, fps,
                                                need_unedited=need_recon)
    result = render_views(model.decoder, planes_out, ws_out, torch.from_numpy(cameras[indices]).float(), indices,
                          config.render)
    novel = result["image"]
    recon = None
    if need_recon:
        assert unedited is not None
        recon = render_views(model.decoder, unedited, ws, torch.from_numpy(in_labels).float(), indices,
                             config.render)["image"]
    if keeper is not None:
        weights = keeper.view_weights(in_labels, cameras[indices])
        # The mask compares input and reconstruction at the render's resolution.
        inputs = F.interpolate(from_uint8_frames(crops, device=novel.device), size=novel.shape[-2:], mode="area")
        novel, _ = keeper(novel, inputs, recon, weights)
    depth = depth_to_rgb(result["image_depth"], model.decoder.rendering_kwargs)
    novel_u8 = to_uint8_frames(novel)
    recon_u8 = to_uint8_frames(recon) if recon is not None else None
    return {i: (novel_u8[j], crops[j], None if recon_u8 is None else recon_u8[j], depth[j])
            for j, i in enumerate(indices)}


def export_frame_mesh(model: TriPlaneNet, cache: InversionCache, alignment: VideoAlignment,
                      config: RerenderConfig, device: torch.device) -> None:
    """Marching cubes on the density of one frame's (edited) tri-planes."""
    assert config.mesh is not None
    valid = np.flatnonzero(alignment.valid())
    frame = int(valid[0]) if config.mesh_frame is None else config.mesh_frame
    record = cache.get(frame)
    if record is None or record.ws is None:
        raise UsageError(f"--mesh-frame {frame} has no face; choose one of the frames with a face")
    if record.planes is None and record.offsets is None:
        raise UsageError("--mesh needs planes or offsets in the cache; invert with --store planes or offsets")
    ws, planes, offsets = stored_tensors([record], device)
    _, planes, _ = frame_planes(model, ws, planes, offsets, alignment.times()[[frame]], config, float(alignment.fps),
                                need_unedited=False)

    def density(points: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.decoder.sample_points(planes, points[None].to(device))[0][0, :, 0]

    export_mesh(config.mesh, density, resolution=config.mesh_resolution,
                box_size=float(model.decoder.rendering_kwargs["box_warp"]), device=device)
