"""`nvsvideo rerender` / `nvsvideo edit`: decode -> align -> invert -> (edit) -> render along a camera path ->
compose -> encode, as one streaming pass over the video that reuses the inversion cache.

Memory stays flat in the video's length: frames are decoded, rendered and encoded batch by batch, and
the cache is read one chunk at a time. Frames without a face are passed through (or letterboxed).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nvsvideo.cache import FrameRecord, FrameStatus
from nvsvideo.cache.records import pack_frame, unpack_frame
from nvsvideo.cameras.paths import evaluate_camera_path, parse_camera_path
from nvsvideo.compose.depth import depth_to_rgb
from nvsvideo.compose.layout import (
    OutputMode,
    compose_frame,
    from_uint8_frames,
    output_shape,
    to_uint8_images,
)
from nvsvideo.compose.mesh import export_mesh
from nvsvideo.compose.ood import KeepOodOptions, OodKeeper
from nvsvideo.compose.resample import image_tensor
from nvsvideo.console import Reporter
from nvsvideo.edits import Edit, OffsetPolicy, apply_edits, edited_frames, offset_weights
from nvsvideo.errors import InputError, NoFaceError, UsageError
from nvsvideo.face.crop import crop_face
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.models.triplanenet.model import TriPlaneNet
from nvsvideo.pipelines.align import AlignConfig, VideoAlignment
from nvsvideo.pipelines.invert import (
    InvertConfig,
    align_settings,
    cache_report,
    invert_crops,
    invert_records,
    mark_faceless,
    open_cache,
    open_finished,
    prepare_inversion,
)
from nvsvideo.pipelines.stream import run_stages
from nvsvideo.render import RenderId, RenderOptions, render_views
from nvsvideo.runtime.batching import Batcher, BatchSpec
from nvsvideo.video import FrameBatch, FrameSpan, VideoInfo, VideoReader, VideoWriter, probe

#: One face frame to render: (frame index, aligned input crop uint8 [512, 512, 3], its cache record or None).
FaceWork = tuple[int, np.ndarray, FrameRecord | None]
#: One rendered face: (novel view uint8 [S, S, 3] on the model's device, input crop, reconstruction at the
#: input view (as the novel view) or None, depth rgb).
RenderedFace = tuple[torch.Tensor, np.ndarray, torch.Tensor | None, np.ndarray]
#: A prepared batch: the decoded frames, the same on the model's device (uint8 [B, H, W, 3]), its faces.
PreparedBatch = tuple[FrameBatch, torch.Tensor, list[FaceWork]]
#: A composed batch for the sink: the decoded batch, its output frames (uint8 [B, H', W', 3]), their depth frames
#: (or None), new inversions to store.
ComposedBatch = tuple[FrameBatch, np.ndarray, np.ndarray | None, list[tuple[int, FrameRecord]]]


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
    """Rendering of the novel views (per-frame draws; the official scripts double the samples)."""
    keep_ood: KeepOodOptions | None = None
    """Blend back what the generator cannot reproduce, near the input view; None = off."""
    edits: Sequence[Edit] = field(default_factory=tuple)
    """Latent edits applied to the cached codes."""
    offset_policy: OffsetPolicy = OffsetPolicy.KEEP
    """What edits do to the tri-plane offsets."""
    batch_size: BatchSpec = "auto"
    """Frames rendered at once, or "auto" (`nvsvideo.runtime.batching`)."""
    crf: int = 18
    """libx264 quality."""
    preset: str = "medium"
    """libx264 speed preset (`nvsvideo.video.writer.X264_PRESETS`)."""
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
        (ws', planes') to render and the unedited planes (None unless asked for). Frames where every edit
        strength is 0 get the unedited tensors themselves, so they render exactly as `rerender` renders
        them. The backbone runs only where needed: never for cached planes of unedited frames.
    """
    def backbone(codes: torch.Tensor) -> torch.Tensor:
        return model.decoder.synthesize_planes(codes, noise_mode=model.render_options.noise_mode)

    t = torch.from_numpy(times).to(ws.device)
    edited = edited_frames(config.edits, t, fps=fps)
    if planes is None and (need_unedited or not bool(edited.all())):
        planes = backbone(ws) + offsets
    if not bool(edited.any()):
        return ws, planes, planes
    ws_edit = apply_edits(ws[edited], config.edits, t[edited], fps=fps)
    kept = offsets[edited] if offsets is not None else planes[edited] - backbone(ws[edited])
    weights = offset_weights(config.edits, t[edited], config.offset_policy, fps=fps).to(kept)
    planes_edit = backbone(ws_edit) + kept * weights[:, None, None, None]
    if bool(edited.all()):
        return ws_edit, planes_edit, planes
    assert planes is not None
    ws_out, planes_out = ws.clone(), planes.clone()
    ws_out[edited], planes_out[edited] = ws_edit, planes_edit
    return ws_out, planes_out, planes


def face_tensors(model: TriPlaneNet, records: Sequence[FrameRecord | None], crops: np.ndarray, labels: np.ndarray,
                 indices: list[int], seed: int, device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(ws, planes or None, offsets or None) of a batch of face frames: `stored_tensors` of their cache
    records, or the crops inverted again where a record lacks planes and offsets (recompute store mode, or
    a damaged chunk a read-only renderer cannot fix; deterministic per-frame draws give the same result,
    up to the cache's float16 storage)."""
    if any(r is None or (r.planes is None and r.offsets is None) for r in records):
        result = invert_crops(model, crops, labels, indices, seed, device)
        return result.ws, result.planes, None
    return stored_tensors(records, device)  # type: ignore[arg-type]


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
    info: VideoInfo | None = None,
) -> dict[str, Any]:
    """The whole job for one video. Returns a JSON-ready summary (frames, faces, seconds per stage, cache hits).

    `info`: the video's probe, when the caller has it (probing reads the whole file, so it is done once).
    """
    info = info if info is not None else probe(video)
    if config.output is OutputMode.PASTE and config.size != 512:
        reporter.warn("--size applies to crop and compare outputs; paste keeps the input's frame size")
    parse_camera_path(config.camera_path)  # a bad spec fails before the long stages
    with contextlib.ExitStack() as stack:
        started = time.perf_counter()
        align_key = align_settings(video, backend, align_config)  # the video's content key, read once
        finished = open_finished(video, cache_dir, model, fingerprints, backend, align_config, invert_config,
                                 reporter, align_key=align_key)
        if finished is None:
            # Frames to invert: they are inverted, stored and rendered in the same pass over the video.
            invert_config, alignment, _ = prepare_inversion(video, cache_dir, model, fingerprints, backend,
                                                            align_config, invert_config, reporter, info,
                                                            align_key=align_key)
        else:
            # Render only: holding the shared lock lets other renders of this cache run at the same time.
            alignment, reader = finished
            stack.enter_context(reader)
        align_seconds = round(time.perf_counter() - started, 3)
        rendered = render_video(video, output, cache_dir, alignment, model, fingerprints, invert_config, config,
                                device=device, reporter=reporter, info=info, invert=finished is None)
    return {
        "video": str(video), "output": str(output), "frames": len(alignment.frames),
        "faces_found": rendered["faces_found"], "rendered": rendered["rendered"], "camera_path": config.camera_path,
        "output_mode": config.output.value, "edits": [e.summary() for e in config.edits],
        "cache": cache_report(cache_dir), "cache_hits": rendered["cache_hits"], "inverted": rendered["inverted"],
        "batch_size": rendered["batch_size"],
        "seconds": {"align": align_seconds, **rendered["seconds"]},
        "overlap": rendered["overlap"],
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
    invert: bool = False,
) -> dict[str, Any]:
    """Render the frames of a video along the camera path and write `output`, in one pass over the video.

    Decoding with the face crops and cache reads, the models with composing, and encoding run as
    overlapped stages (`nvsvideo.pipelines.stream`).

    Args:
        cache_dir: the video's cache folder. Without `invert` it is already filled by `run_invert` (or, for
            a span, by `invert_frames` for that span) for `alignment` and is opened read-only, shared with
            other renderers (other runs, the other chunks' processes).
        fingerprints: `model_fingerprints` of the model files (part of the cache's identity).
        invert_config: the cache's settings; with `invert`, its store mode decided (`plan_inversion`).
        span: render only these frames, into a part file without audio (one chunk of a video split
            across workers; `nvsvideo.video.join_videos` makes the final file); `config` must not ask
            for depth or a mesh.
            The camera path and edit ramps are still evaluated over the whole video, and every frame
            keeps its own draws, so the chunks put together equal an unsplit render (except that the
            `--keep-ood` mask's smoothing over time restarts at each chunk).
        invert: open the cache as its writer (of `span` only, when given) and invert the frames it lacks
            in this same pass: each batch is inverted, stored, and rendered from what the cache now holds,
            so the output equals that of a render-only run afterwards.

    Returns:
        frames written, faces, frames inverted now and cache hits, the batch sizes used, seconds (inverting,
        and rendering: the rest of the pass) and each stage's busy seconds in the pass (`overlap`).
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
    face_frames = [i for i in frames if alignment.frames[i].has_face]
    mesh_frame = resolve_mesh_frame(alignment, config.mesh_frame) if config.mesh is not None else None
    # The mesh frame's tri-planes, kept from the render pass: the mesh is exported after the videos are
    # committed, so its failure never takes them away, and any store mode (recompute too) can give it.
    mesh_planes: list[torch.Tensor] = []
    rendered = 0
    invert_seconds = 0.0
    with contextlib.ExitStack() as stack:
        # A damaged chunk: a writer verifies every chunk on opening and inverts the frames of a damaged one
        # again; a reader finds it when reading and inverts those frames in memory only.
        cache = stack.enter_context(open_cache(cache_dir, alignment, model, invert_config, fingerprints, reporter,
                                               verify=invert, readonly=not invert, span=span))
        missing: set[int] = set()
        if invert:
            invert_config = replace(invert_config, store=cache.store)
            mark_faceless(cache, [alignment.frames[i] for i in frames])
            missing = set(cache.missing_frames(retry_failed=True)) & set(face_frames)
        # The source thread reads the cache while the sink thread stores new frames into it.
        cache_lock = threading.Lock()
        records = cache.iter_frames(frames)
        # The videos are committed (renamed into place) when this inner stack closes, before the mesh.
        outputs = stack.enter_context(contextlib.ExitStack())
        writer = outputs.enter_context(VideoWriter(output, width=out_w, height=out_h, fps=info.fps,
                                                   time_base=info.time_base, crf=config.crf, preset=config.preset,
                                                   colour=info.colour, audio_from=video if span is None else None,
                                                   protect=(video,), frames_expected=len(frames)))
        for note in writer.audio_notes:
            reporter.info(note)
        depth_writer = None
        if config.depth is not None:
            res = int(config.render.neural_rendering_resolution or model.decoder.neural_rendering_resolution)
            depth_writer = outputs.enter_context(VideoWriter(config.depth, width=res, height=res, fps=info.fps,
                                                           time_base=info.time_base, crf=config.crf,
                                                           preset=config.preset,
                                                           protect=(video,), frames_expected=len(frames)))
        advance = stack.enter_context(reporter.progress("rendering", len(frames)))
        batcher = Batcher(config.batch_size, device, warn=reporter.warn)
        invert_batcher = Batcher(invert_config.batch_size, device, warn=reporter.warn)
        reader = VideoReader(video, batch_size=batcher.gather, info=info, span=span)

        def prepare() -> Iterator[PreparedBatch]:
            """Decode, crop the faces and read their cache records (the source thread)."""
            for batch in reader:
                # The frames go to the model's device once; they are cropped there and composed there.
                frames = image_tensor(batch.frames, device)
                faces = []
                for j, i in enumerate(batch.indices.tolist()):
                    with cache_lock:
                        _, record = next(records)
                    if alignment.frames[i].has_face:
                        faces.append((i, crop_face(frames[j], alignment.frames[i].transform).cpu().numpy(), record))
                yield batch, frames, faces

        def render(item: PreparedBatch) -> ComposedBatch:
            """Invert what the cache lacks, render, compose on the model's device (the calling thread)."""
            nonlocal invert_seconds
            batch, frames, faces = item
            fresh: list[tuple[int, FrameRecord]] = []
            if any(i in missing for i, _, _ in faces):
                inverting = time.perf_counter()
                faces, fresh = invert_missing(model, alignment, faces, missing, invert_batcher, invert_config,
                                              cache.precision, device)
                invert_seconds += time.perf_counter() - inverting
            novel_by_index: dict[int, RenderedFace] = {}
            if faces:
                novel_by_index = dict(batcher.run(lambda part: list(render_faces(
                    model, alignment, cameras, part, config, invert_config, keeper, device, fps).items()), faces))
            if keeper is not None and len(faces) < len(batch):
                keeper.reset()  # a faceless frame breaks the mask's smoothing over time
            for i, crop, record in faces:
                if i == mesh_frame:
                    mesh_planes.append(frame_mesh_planes(model, alignment, (i, crop, record), config,
                                                         invert_config, device))
            return batch, *compose(batch, frames, novel_by_index), fresh

        def compose(batch: FrameBatch, frames: torch.Tensor, novel_by_index: dict[int, RenderedFace]
                    ) -> tuple[np.ndarray, np.ndarray | None]:
            """The output frames and depth frames of a batch. On the model's stage: where the renders are, and
            off the encoder's thread, which is the host's slowest stage."""
            nonlocal rendered
            frames_out, depth_out = [], []
            for i, frame in zip(batch.indices.tolist(), frames, strict=True):
                got = novel_by_index.get(i)
                if got is None:
                    frames_out.append(compose_frame(config.output, frame, None, None, size=config.size))
                    if depth_writer is not None:
                        depth_out.append(np.zeros((depth_writer.height, depth_writer.width, 3), np.uint8))
                    continue
                novel, crop, recon, depth = got
                frames_out.append(compose_frame(config.output, frame, alignment.frames[i].transform, novel,
                                                size=config.size, input_crop=image_tensor(crop), reconstruction=recon))
                depth_out.append(depth)
                rendered += 1
            # The composed frames come back from the device once; paste composes into `frames` in place.
            composed = frames if config.output is OutputMode.PASTE else torch.stack(frames_out)
            return composed.cpu().numpy(), np.stack(depth_out) if depth_writer is not None else None

        def write(item: ComposedBatch) -> None:
            """Store new inversions and encode (the sink thread)."""
            batch, composed, depth, fresh = item
            for index, record in fresh:
                with cache_lock:
                    cache.put(index, record)  # durable once its chunk is complete (`InversionCache.put`)
            writer.write(composed, batch.pts)
            if depth_writer is not None:
                depth_writer.write(depth, batch.pts)
            advance(len(batch))

        stages = run_stages(prepare(), render, write, names=("decode", "render", "encode"))
        if reader.warning:
            reporter.warn(reader.warning)
        if writer.frames_written != len(frames):
            raise InputError(f"{video} now decodes to {writer.frames_written} frames where its alignment has "
                             f"{len(frames)}; the file changed or is damaged")
        outputs.close()
        if mesh_planes:
            export_frame_mesh(model, mesh_planes[0], config, device)
    seconds = time.perf_counter() - started
    return {"frames": len(frames), "rendered": rendered, "faces_found": len(face_frames), "inverted": len(missing),
            "cache_hits": len(face_frames) - len(missing),
            "batch_size": {"invert": invert_batcher.size if missing else None, "render": batcher.size},
            "seconds": {"invert": round(invert_seconds, 3), "render": round(seconds - invert_seconds, 3)},
            "overlap": {"render": stages.to_json()}}


def invert_missing(model: TriPlaneNet, alignment: VideoAlignment, faces: list[FaceWork], missing: set[int],
                   batcher: Batcher, config: InvertConfig, precision: torch.dtype, device: torch.device
                   ) -> tuple[list[FaceWork], list[tuple[int, FrameRecord]]]:
    """Invert the faces of a batch that the cache lacks.

    Returns:
        the faces with those records as the cache will give them back (its store mode and precision, so
        this render equals a later render-only run), and (frame, record) pairs to store.
    """
    todo = [j for j, (i, _, _) in enumerate(faces) if i in missing]
    indices = [faces[j][0] for j in todo]
    records = invert_records(batcher, model, np.stack([faces[j][1] for j in todo]),
                             np.stack([alignment.frames[i].label for i in indices]), indices, config, device)
    assert config.store is not None
    stored = [unpack_frame(i, FrameStatus.DONE, pack_frame(i, record, config.store, precision))
              for i, record in zip(indices, records, strict=True)]
    out = list(faces)
    for j, i, record in zip(todo, indices, stored, strict=True):
        out[j] = (i, faces[j][1], record)
    return out, list(zip(indices, stored, strict=True))


def render_faces(model: TriPlaneNet, alignment: VideoAlignment, cameras: np.ndarray, faces: Sequence[FaceWork],
                 config: RerenderConfig, invert_config: InvertConfig, keeper: OodKeeper | None, device: torch.device,
                 fps: float) -> dict[int, RenderedFace]:
    """Render the face frames of one batch: {frame: (novel uint8, input crop, reconstruction, depth rgb)}."""
    indices = [i for i, _, _ in faces]
    crops = np.stack([crop for _, crop, _ in faces])
    in_labels = np.stack([alignment.frames[i].label for i in indices])
    ws, planes, offsets = face_tensors(model, [rec for _, _, rec in faces], crops, in_labels, indices,
                                       invert_config.seed, device)
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
                             config.render, RenderId.INPUT_VIEW)["image"]
    if keeper is not None:
        weights = keeper.view_weights(in_labels, cameras[indices])
        # The mask compares input and reconstruction at the render's resolution.
        inputs = F.interpolate(from_uint8_frames(crops, device=novel.device), size=novel.shape[-2:], mode="area")
        novel, _ = keeper(novel, inputs, recon, weights)
    depth = depth_to_rgb(result["image_depth"], model.decoder.rendering_kwargs)
    novel_u8 = to_uint8_images(novel)
    recon_u8 = to_uint8_images(recon) if recon is not None else None
    return {i: (novel_u8[j], crops[j], None if recon_u8 is None else recon_u8[j], depth[j])
            for j, i in enumerate(indices)}


def resolve_mesh_frame(alignment: VideoAlignment, requested: int | None) -> int:
    """The frame `--mesh` exports: `requested`, or the first frame with a face.

    Raises:
        UsageError: the frame is past the end of the video or has no face.
        NoFaceError: no frame has a face.
    """
    valid = alignment.valid()
    if requested is None:
        if not valid.any():
            raise NoFaceError("--mesh needs a frame with a face, and no frame has one")
        return int(np.flatnonzero(valid)[0])
    if requested >= len(valid):
        raise UsageError(f"--mesh-frame {requested} is past the end of the video ({len(valid)} frames, "
                         f"0 to {len(valid) - 1})")
    if not valid[requested]:
        raise UsageError(f"--mesh-frame {requested} has no face; choose one of the frames with a face")
    return requested


def frame_mesh_planes(model: TriPlaneNet, alignment: VideoAlignment, face: FaceWork, config: RerenderConfig,
                      invert_config: InvertConfig, device: torch.device) -> torch.Tensor:
    """[1, 96, H, W] (edited) tri-planes of the mesh frame, from its cache record or its crop inverted again."""
    i, crop, record = face
    ws, planes, offsets = face_tensors(model, [record], crop[None], alignment.frames[i].label[None], [i],
                                       invert_config.seed, device)
    _, planes, _ = frame_planes(model, ws, planes, offsets, alignment.times()[[i]], config, float(alignment.fps),
                                need_unedited=False)
    return planes


def export_frame_mesh(model: TriPlaneNet, planes: torch.Tensor, config: RerenderConfig, device: torch.device) -> None:
    """Marching cubes on the density of one frame's tri-planes."""
    assert config.mesh is not None

    def density(points: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.decoder.sample_points(planes, points[None].to(device))[0][0, :, 0]

    export_mesh(config.mesh, density, resolution=config.mesh_resolution,
                box_size=float(model.decoder.rendering_kwargs["box_warp"]), device=device)
