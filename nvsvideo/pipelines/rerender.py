"""`nvsvideo rerender` / `nvsvideo edit`: decode -> align -> invert -> (edit) -> render along a camera path ->
compose -> encode, as one streaming pass over the video that reuses the inversion cache.

Memory stays flat in the video's length: frames are decoded, aligned, rendered and encoded batch by batch
(the align stage holds frames only for its smoothing's look-ahead), and the cache is read one chunk at a
time. Frames without a face are passed through (or letterboxed).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nvsvideo.cache import FrameRecord, FrameStatus, InversionCache
from nvsvideo.cache.records import pack_frame, unpack_frame
from nvsvideo.cameras.paths import CameraPathSpec, evaluate_camera_path, parse_camera_path
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
from nvsvideo.compose.yuv import YuvPlanes, i420_planes
from nvsvideo.console import Reporter
from nvsvideo.edits import Edit, OffsetPolicy, apply_edits, edited_frames, offset_weights
from nvsvideo.errors import InputError, NoFaceError, UsageError
from nvsvideo.face.crop import CropTransform, crop_face
from nvsvideo.face.landmarks import LandmarkBackend, pixel_free
from nvsvideo.models.triplanenet.model import TriPlaneNet
from nvsvideo.pipelines.align import (
    AlignConfig,
    FrameAlignment,
    VideoAlignment,
    crop_source,
)
from nvsvideo.pipelines.first_pass import FirstPassAlign
from nvsvideo.pipelines.invert import (
    CACHE_FRAMES,
    PARTIAL_TRACKS_FILE,
    TRACKS_FILE,
    InvertConfig,
    TrackLog,
    align_settings,
    cache_report,
    cached_alignment,
    invert_crops,
    invert_records,
    mark_faceless,
    open_cache,
    open_finished,
    open_video_cache,
    plan_inversion,
)
from nvsvideo.pipelines.stream import prefer_sequential, run_stages
from nvsvideo.render import RenderId, RenderOptions, render_views
from nvsvideo.runtime.batching import Batcher, BatchSpec
from nvsvideo.temporal.tracking import no_subject_error
from nvsvideo.video import FrameBatch, FrameSpan, VideoInfo, VideoReader, VideoWriter, probe
from nvsvideo.video.colour import Colour
from nvsvideo.video.reader import yuv_kept

#: One rendered face: (novel view uint8 [S, S, 3] on the model's device, input crop, reconstruction at the
#: input view (as the novel view) or None, depth rgb).
RenderedFace = tuple[torch.Tensor, np.ndarray, torch.Tensor | None, np.ndarray]


@dataclass(frozen=True, eq=False)
class FaceWork:
    """One face frame to render."""

    index: int
    crop: np.ndarray
    """Aligned input crop, uint8 [512, 512, 3]."""
    record: FrameRecord | None
    """Its cache record; None when the cache lacks it (or it is unreadable, or stale)."""
    label: np.ndarray
    """[25] input camera."""
    camera: np.ndarray
    """[25] render camera (the camera path's)."""
    time: float
    """Seconds (edit ramps)."""
    transform: CropTransform
    """The crop, for pasting back."""


@dataclass(eq=False)
class WorkBatch:
    """One batch into the model stage: decoded frames and their faces."""

    batch: FrameBatch
    pixels: torch.Tensor | None
    """The decoded frames on the model's device, uint8 [B, H, W, 3]: uploaded once, cropped and composed there
    (None when the pass needs no RGB: the faces are cut from and pasted into the `pictures`)."""
    faces: list[FaceWork]
    aligned: list[FrameAlignment] = field(default_factory=list)
    """The batch's frames as a first pass aligned them (stored with the batch); empty when read from tracks."""
    fresh: list[tuple[int, FrameRecord]] = field(default_factory=list)
    """New inversions to store."""
    pictures: torch.Tensor | None = None
    """The decoded 4:2:0 pictures on the model's device (`FrameBatch.yuv`) when the renders are pasted into them."""


@dataclass(frozen=True, eq=False)
class ComposedBatch:
    """One batch for the sink: what it stores and what it encodes."""

    batch: FrameBatch
    composed: np.ndarray
    """Output frames, uint8 [B, H', W', 3], or the pictures pasted into, uint8 [B, H·3/2, W] (`pictures`)."""
    depth: np.ndarray | None
    """Depth frames (`--depth`), uint8 [B, R, R, 3]."""
    fresh: list[tuple[int, FrameRecord]]
    aligned: list[FrameAlignment]
    pictures: bool = False
    """`composed` holds 4:2:0 pictures (`VideoWriter.write_yuv`) rather than RGB frames."""


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
    """The whole job for one video, in one pass over it. Returns a JSON-ready summary (frames, faces, seconds
    per stage, cache hits).

    A first run aligns, inverts, stores and renders each frame in that pass (`render_first_pass`); a run
    whose tracks are cached (an earlier run, `invert`) reads them (`render_video`), inverting what the
    cache lacks in the same pass. `info`: the video's probe, when the caller has it (probing reads the
    whole file, so it is done once).
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
        alignment: VideoAlignment | None
        if finished is None:
            # Refusals (a cache made differently, a disk too small) come before any work and leave no trace.
            invert_config = plan_inversion(video, cache_dir, info.frame_count, model, fingerprints, backend,
                                           align_config, invert_config, reporter, align_key=align_key)
            alignment = cached_alignment(video, cache_dir, backend, align_config, key=align_key)
        else:
            # Render only: holding the shared lock lets other renders of this cache run at the same time.
            alignment, reader = finished
            stack.enter_context(reader)
        align_seconds = time.perf_counter() - started
        if alignment is not None and not alignment.valid().any():
            # Tracks without the subject (`metrics` keeps them too): nothing to render, as a first pass finds.
            raise no_subject_error(len(alignment.frames), align_config.tracker.face_index, str(video))
        if alignment is None:
            if (cache_dir / TRACKS_FILE).is_file():
                reporter.info("the video or the align settings changed: aligning again")
            alignment, rendered = render_first_pass(video, output, cache_dir, backend, align_config, align_key, model,
                                                    fingerprints, invert_config, config, device=device,
                                                    reporter=reporter, info=info)
            align_seconds += rendered["seconds"].pop("align")
        else:
            rendered = render_video(video, output, cache_dir, alignment, model, fingerprints, invert_config, config,
                                    device=device, reporter=reporter, info=info, invert=finished is None)
    return {
        "video": str(video), "output": str(output), "frames": len(alignment.frames),
        "faces_found": rendered["faces_found"], "rendered": rendered["rendered"], "camera_path": config.camera_path,
        "output_mode": config.output.value, "edits": [e.summary() for e in config.edits],
        "cache": cache_report(cache_dir), "cache_hits": rendered["cache_hits"], "inverted": rendered["inverted"],
        "batch_size": rendered["batch_size"],
        "seconds": {"align": round(align_seconds, 3), **rendered["seconds"]},
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
    """Render the frames of an aligned video along the camera path and write `output`, in one pass over the video.

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
    if not alignment.valid().any():
        raise NoFaceError("no frame has a face, so there is nothing to render")
    frames = range(len(alignment.frames)) if span is None else range(span.start, span.stop)
    cameras = PathCameras(parse_camera_path(config.camera_path), float(alignment.fps), alignment.frames[0].time,
                          alignment.frames[-1].time)
    mesh = MeshFrame(resolve_mesh_frame(alignment, config.mesh_frame)) if config.mesh is not None else None
    with contextlib.ExitStack() as stack:
        # A damaged chunk: a writer verifies every chunk on opening and inverts the frames of a damaged one
        # again; a reader finds it when reading and inverts those frames in memory only.
        cache = stack.enter_context(open_cache(cache_dir, alignment, model, invert_config, fingerprints, reporter,
                                               verify=invert, readonly=not invert, span=span))
        if invert:
            mark_faceless(cache, [alignment.frames[i] for i in frames])

        def source(reader: VideoReader, records: Iterator[tuple[int, FrameRecord | None]],
                   cache_lock: threading.Lock) -> Iterator[WorkBatch]:
            """Decode, crop the faces and read their cache records (the source thread)."""
            for batch in reader:
                aligned = [alignment.frames[i] for i in batch.indices.tolist()]
                with cache_lock:
                    stored = [next(records)[1] for _ in aligned]
                yield work_batch(batch, aligned, stored, cameras, device, info.colour)

        result = render_pass(video, output, cache, source, model, invert_config, config, device=device,
                             reporter=reporter, info=info, span=span, invert=invert, expected=len(frames), mesh=mesh,
                             rgb=not paste_in_pictures(config, info))
        if mesh is not None:
            mesh.export(model, config, device)
    return result


def render_first_pass(
    video: Path,
    output: Path,
    cache_dir: Path,
    backend: LandmarkBackend,
    align_config: AlignConfig,
    align_key: dict[str, Any],
    model: TriPlaneNet,
    fingerprints: dict[str, str],
    invert_config: InvertConfig,
    config: RerenderConfig,
    *,
    device: torch.device,
    reporter: Reporter,
    info: VideoInfo,
) -> tuple[VideoAlignment, dict[str, Any]]:
    """A first run: align, invert, store and render every frame in one pass over the video.

    The align stage (`FirstPassAlign`) runs in the decode thread: landmarks and tracking frame by frame,
    zero-phase smoothing over a bounded look-ahead (frames wait only for it), so crops and cameras equal
    those of the whole-track alignment. The tracks are stored as they are made (`TrackLog`), each before
    its frames' inversions, and saved whole (tracks.json, with the jitter report) at the end, after which
    later runs read them and align no more. An interrupted run keeps what it stored; the next run aligns
    again from the start and reuses the inversions (`TrackLog.matches`), so its output is the same.

    Args:
        align_key: `align_settings` of the video: the inversion cache is keyed on it, so inversions of
            other alignment settings are never mixed in (`plan_inversion` refuses such a cache).
        fingerprints: `model_fingerprints` of the model files (part of the cache's identity).
        invert_config: with its store mode decided (`plan_inversion`).
        info: the video's probe: the cache is made for its frame count (frames a damaged file does not
            decode are marked faceless at the end).

    Returns:
        the alignment, and the summary of `render_video` with the align stage's busy seconds under
        seconds["align"].
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        cache = stack.enter_context(open_video_cache(cache_dir, info.frame_count, align_key, model, invert_config,
                                                     fingerprints, reporter))
        log = TrackLog(cache_dir / PARTIAL_TRACKS_FILE)
        stack.callback(log.close)
        align = FirstPassAlign(backend, align_config, info, log)
        cameras = PathCameras(parse_camera_path(config.camera_path), float(info.fps), info.start_time, info.end_time)
        # The requested frame's face is known only once it is aligned: the pass refuses it then.
        mesh = MeshFrame(config.mesh_frame) if config.mesh is not None else None

        def source(reader: VideoReader, records: Iterator[tuple[int, FrameRecord | None]],
                   cache_lock: threading.Lock) -> Iterator[WorkBatch]:
            """Decode, align and crop the faces (the source thread)."""
            aligned_batches = align.batches(reader, records, cache_lock, keep_rgb=not paste_in_pictures(config, info))
            with contextlib.closing(aligned_batches):  # a pass stopped early closes the decoder now
                for batch, aligned, stored in aligned_batches:
                    yield work_batch(batch, aligned, stored, cameras, device, info.colour, first_pass=True)

        # RGB frames only for what reads them: the landmarks (not a landmark file's), Deep3D, the RGB layouts.
        rgb = pixel_free(backend) is None or align_config.deep3d is not None or not paste_in_pictures(config, info)
        result = render_pass(video, output, cache, source, model, invert_config, config, device=device,
                             reporter=reporter, info=info, invert=True, expected=None, log=log, mesh=mesh, rgb=rgb)
        alignment = align.alignment(video, {"key": align_key})
        if len(alignment.frames) < info.frame_count:
            # The file ended early or broke: the frames it does not decode have no face to invert.
            alignment.settings[CACHE_FRAMES] = info.frame_count
            for index in range(len(alignment.frames), info.frame_count):
                cache.mark(index, FrameStatus.NO_FACE)
        alignment.save(cache_dir / TRACKS_FILE)
        log.discard()
    if mesh is not None:
        mesh.export(model, config, device)  # after the videos and the tracks are kept
    result["seconds"]["align"] = align.seconds
    return alignment, result


def render_pass(
    video: Path,
    output: Path,
    cache: InversionCache,
    source: Callable[[VideoReader, Iterator[tuple[int, FrameRecord | None]], threading.Lock], Iterator[WorkBatch]],
    model: TriPlaneNet,
    invert_config: InvertConfig,
    config: RerenderConfig,
    *,
    device: torch.device,
    reporter: Reporter,
    info: VideoInfo,
    span: FrameSpan | None = None,
    invert: bool,
    expected: int | None,
    log: TrackLog | None = None,
    mesh: MeshFrame | None = None,
    rgb: bool = True,
) -> dict[str, Any]:
    """The pass shared by `render_video` and `render_first_pass`: `source` decodes (and aligns) into work
    batches on one thread, the calling thread inverts what the cache lacks, renders and composes on the
    model's device, a third stores and encodes. The videos are committed when the pass ends, one by one.

    Args:
        source: (reader, the cache's records in frame order, the lock that guards the cache) -> work batches.
        invert: faces without a cache record are inverted and stored (else rendered from an inversion in
            memory: a damaged chunk a reader cannot fix).
        expected: the frames the video must decode to (a stored alignment's, of `span`), else nothing is
            committed; None: a first pass, which takes the frames the file decodes.
        log: where a first pass stores the frames it aligned, before their inversions.
        mesh: the `--mesh` frame, whose tri-planes the pass keeps.
        rgb: decode RGB frames (else only the pictures, where `paste_in_pictures`).

    Returns:
        as `render_video`; "frames" counts the frames written.
    """
    started = time.perf_counter()
    out_h, out_w = output_shape(config.output, (info.height, info.width), config.size)
    keeper = OodKeeper(config.keep_ood) if config.keep_ood is not None else None
    fps = float(info.fps)
    invert_config = replace(invert_config, store=cache.store)  # `auto`: what the existing cache keeps
    into_pictures = paste_in_pictures(config, info)
    counts = {"faces": 0, "inverted": 0, "rendered": 0}
    invert_seconds = 0.0
    with contextlib.ExitStack() as stack:
        # The source thread reads the cache while the sink thread stores new frames into it.
        cache_lock = threading.Lock()
        frames = range(cache.n_frames) if span is None else range(span.start, span.stop)
        records = cache.iter_frames(frames)
        total = len(frames) if expected is None else expected
        # The videos are committed (renamed into place) when this inner stack closes, before the mesh.
        outputs = stack.enter_context(contextlib.ExitStack())
        writer = outputs.enter_context(VideoWriter(output, width=out_w, height=out_h, fps=info.fps,
                                                   time_base=info.time_base, crf=config.crf, preset=config.preset,
                                                   colour=info.colour, audio_from=video if span is None else None,
                                                   protect=(video,), frames_expected=total))
        for note in writer.audio_notes:
            reporter.info(note)
        depth_writer = None
        if config.depth is not None:
            res = int(config.render.neural_rendering_resolution or model.decoder.neural_rendering_resolution)
            depth_writer = outputs.enter_context(VideoWriter(config.depth, width=res, height=res, fps=info.fps,
                                                           time_base=info.time_base, crf=config.crf,
                                                           preset=config.preset,
                                                           protect=(video,), frames_expected=total))
        advance = stack.enter_context(reporter.progress("rendering", total))
        batcher = Batcher(config.batch_size, device, warn=reporter.warn)
        invert_batcher = Batcher(invert_config.batch_size, device, warn=reporter.warn)
        reader = VideoReader(video, batch_size=batcher.gather, info=info, span=span,
                             keep_yuv=yuv_kept(info), rgb=rgb)

        def render(work: WorkBatch) -> ComposedBatch:
            """Invert what the cache lacks, render, compose on the model's device (the calling thread)."""
            nonlocal invert_seconds
            if mesh is not None:
                mesh.check(work.aligned)
            counts["faces"] += len(work.faces)
            if invert and any(face.record is None for face in work.faces):
                inverting = time.perf_counter()
                work.faces, work.fresh = invert_missing(model, work.faces, invert_batcher, invert_config,
                                                        cache.precision, device)
                counts["inverted"] += len(work.fresh)
                invert_seconds += time.perf_counter() - inverting
            rendered: dict[int, RenderedFace] = {}
            if work.faces:
                rendered = dict(batcher.run(lambda part: list(render_faces(
                    model, part, config, invert_config, keeper, device, fps).items()), work.faces))
            if keeper is not None and len(work.faces) < len(work.batch):
                keeper.reset()  # a faceless frame breaks the mask's smoothing over time
            if mesh is not None:
                mesh.keep(model, work.faces, config, invert_config, device, fps)
            return ComposedBatch(work.batch, *compose(work, rendered), work.fresh, work.aligned,
                                 pictures=into_pictures)

        def compose(work: WorkBatch, rendered: dict[int, RenderedFace]) -> tuple[np.ndarray, np.ndarray | None]:
            """The output frames and depth frames of a batch. On the model's stage: where the renders are, and
            off the encoder's thread, which is the host's slowest stage."""
            transforms = {face.index: face.transform for face in work.faces}
            frames_out, depth_out = [], []
            if into_pictures:
                assert work.pictures is not None
                targets: Sequence[torch.Tensor | YuvPlanes] = [i420_planes(p, info.colour) for p in work.pictures]
            else:
                assert work.pixels is not None
                targets = work.pixels
            for i, frame in zip(work.batch.indices.tolist(), targets, strict=True):
                got = rendered.get(i)
                if got is None:
                    frames_out.append(compose_frame(config.output, frame, None, None, size=config.size))
                    if depth_writer is not None:
                        depth_out.append(np.zeros((depth_writer.height, depth_writer.width, 3), np.uint8))
                    continue
                novel, crop, recon, depth = got
                frames_out.append(compose_frame(config.output, frame, transforms[i], novel,
                                                size=config.size, input_crop=image_tensor(crop), reconstruction=recon))
                depth_out.append(depth)
                counts["rendered"] += 1
            # The composed frames come back from the device once; paste composes into the frames (or the
            # pictures) in place.
            if into_pictures:
                composed = work.pictures
            else:
                composed = work.pixels if config.output is OutputMode.PASTE else torch.stack(frames_out)
            return composed.cpu().numpy(), np.stack(depth_out) if depth_writer is not None else None

        def write(work: ComposedBatch) -> None:
            """Store the new tracks and inversions, and encode (the sink thread)."""
            if log is not None:
                log.append(work.aligned)
                with cache_lock:
                    for frame in work.aligned:
                        if not frame.has_face and cache.status(frame.index) is not FrameStatus.NO_FACE:
                            cache.mark(frame.index, FrameStatus.NO_FACE)
            for index, record in work.fresh:
                with cache_lock:
                    cache.put(index, record)  # durable once its chunk is complete (`InversionCache.put`)
            if work.pictures:
                writer.write_yuv(work.composed, work.batch.pts)
            else:
                writer.write(work.composed, work.batch.pts)
            if depth_writer is not None:
                depth_writer.write(work.depth, work.batch.pts)
            advance(len(work.batch))

        stages = run_stages(source(reader, records, cache_lock), render, write, names=("decode", "render", "encode"),
                            prefer=prefer_sequential(device.type, inverting=invert))
        if reader.warning:
            reporter.warn(reader.warning)
        written = writer.frames_written
        if expected is not None and written != expected:
            raise InputError(f"{video} now decodes to {written} frames where its alignment has "
                             f"{expected}; the file changed or is damaged")
        outputs.close()
    seconds = time.perf_counter() - started
    return {"frames": written, "rendered": counts["rendered"], "faces_found": counts["faces"],
            "inverted": counts["inverted"], "cache_hits": counts["faces"] - counts["inverted"],
            "batch_size": {"invert": invert_batcher.size if counts["inverted"] else None, "render": batcher.size},
            "seconds": {"invert": round(invert_seconds, 3), "render": round(seconds - invert_seconds, 3)},
            "overlap": {"render": stages.to_json()}}


@dataclass(frozen=True)
class PathCameras:
    """The render cameras of a camera path, evaluated batch by batch as frames arrive.

    Every path is a function of each frame's own time (`sweep` also of the video's first and last frame
    times, given here up front) or of its own input camera (`follow`, `frontal`), so a batch's cameras
    equal those of the path evaluated over the whole video.
    """

    spec: CameraPathSpec
    fps: float
    first: float
    """Time of the video's first frame, seconds."""
    last: float
    """Time of its last frame, seconds."""

    def __call__(self, times: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """[B, 25] render cameras of frames at `times` [B] with input cameras `labels` [B, 25]."""
        # The video's ends go in as two more frames (with any camera): `sweep` spans them.
        times = np.concatenate([[self.first], times, [self.last]])
        labels = np.concatenate([labels[:1], labels, labels[:1]])
        return evaluate_camera_path(self.spec, times, self.fps, input_labels=labels)[1:-1]


def work_batch(batch: FrameBatch, aligned: Sequence[FrameAlignment], records: Sequence[FrameRecord | None],
               cameras: PathCameras, device: torch.device, colour: Colour, *, first_pass: bool = False) -> WorkBatch:
    """A decoded batch of aligned frames (with their cache records) for the model stage: the frames (RGB, or
    the decoded pictures, or both) go to the model's device once, and the faces are cut there."""
    pixels, pictures = (None if a is None else image_tensor(a, device) for a in (batch.frames, batch.yuv))
    return WorkBatch(batch, pixels, face_work(aligned, pixels, pictures, colour, records, cameras),
                     list(aligned) if first_pass else [], pictures=pictures)


def paste_in_pictures(config: RerenderConfig, info: VideoInfo) -> bool:
    """Whether the renders are pasted into the decoded 4:2:0 pictures (`paste_face_yuv_`), which then go to the
    encoder as they are: `--output paste` of an 8-bit 4:2:0 video that is not turned (`yuv_kept`). Other
    videos and layouts are composed in RGB."""
    return config.output is OutputMode.PASTE and yuv_kept(info)


def face_work(aligned: Sequence[FrameAlignment], frames: torch.Tensor | None, pictures: torch.Tensor | None,
              colour: Colour, records: Sequence[FrameRecord | None], cameras: PathCameras) -> list[FaceWork]:
    """The faces of a batch of aligned frames (on the model's device: see `crop_source`) to render."""
    chosen = [j for j, frame in enumerate(aligned) if frame.has_face]
    if not chosen:
        return []
    labels = np.stack([aligned[j].label for j in chosen])
    novel = cameras(np.array([aligned[j].time for j in chosen]), labels)
    return [FaceWork(aligned[j].index,
                     crop_face(crop_source(frames, pictures, j, colour), aligned[j].transform).cpu().numpy(),
                     records[j], aligned[j].label, novel[k], aligned[j].time, aligned[j].transform)
            for k, j in enumerate(chosen)]


def invert_missing(model: TriPlaneNet, faces: list[FaceWork], batcher: Batcher, config: InvertConfig,
                   precision: torch.dtype, device: torch.device) -> tuple[list[FaceWork], list[tuple[int, FrameRecord]]]:
    """Invert the faces of a batch that have no cache record.

    Returns:
        the faces with those records as the cache will give them back (its store mode and precision, so
        this render equals a later render-only run), and (frame, record) pairs to store.
    """
    todo = [j for j, face in enumerate(faces) if face.record is None]
    indices = [faces[j].index for j in todo]
    records = invert_records(batcher, model, np.stack([faces[j].crop for j in todo]),
                             np.stack([faces[j].label for j in todo]), indices, config, device)
    assert config.store is not None
    stored = [unpack_frame(i, FrameStatus.DONE, pack_frame(i, record, config.store, precision))
              for i, record in zip(indices, records, strict=True)]
    out = list(faces)
    for j, record in zip(todo, stored, strict=True):
        out[j] = replace(faces[j], record=record)
    return out, list(zip(indices, stored, strict=True))


def render_faces(model: TriPlaneNet, faces: Sequence[FaceWork], config: RerenderConfig, invert_config: InvertConfig,
                 keeper: OodKeeper | None, device: torch.device, fps: float) -> dict[int, RenderedFace]:
    """Render the face frames of one batch: {frame: (novel uint8, input crop, reconstruction, depth rgb)}."""
    indices = [face.index for face in faces]
    crops = np.stack([face.crop for face in faces])
    in_labels = np.stack([face.label for face in faces])
    cameras = np.stack([face.camera for face in faces])
    ws, planes, offsets = face_tensors(model, [face.record for face in faces], crops, in_labels, indices,
                                       invert_config.seed, device)
    need_recon = keeper is not None or config.output is OutputMode.COMPARE
    ws_out, planes_out, unedited = frame_planes(model, ws, planes, offsets, np.array([face.time for face in faces]),
                                                config, fps, need_unedited=need_recon)
    result = render_views(model.decoder, planes_out, ws_out, torch.from_numpy(cameras).float(), indices,
                          config.render)
    novel = result["image"]
    recon = None
    if need_recon:
        assert unedited is not None
        recon = render_views(model.decoder, unedited, ws, torch.from_numpy(in_labels).float(), indices,
                             config.render, RenderId.INPUT_VIEW)["image"]
    if keeper is not None:
        weights = keeper.view_weights(in_labels, cameras)
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
        raise no_face_to_mesh(requested)
    return requested


def no_face_to_mesh(frame: int) -> UsageError:
    """The refusal of a `--mesh-frame` without a face."""
    return UsageError(f"--mesh-frame {frame} has no face; choose one of the frames with a face")


@dataclass
class MeshFrame:
    """The frame `--mesh` exports, and its tri-planes kept from the render pass: the mesh is exported after
    the videos are committed, so its failure never takes them away, and any store mode (recompute too) can
    give it."""

    index: int | None
    """The frame; None: the first with a face (a first pass learns which as it aligns)."""
    planes: torch.Tensor | None = None

    def check(self, aligned: Sequence[FrameAlignment]) -> None:
        """Refuse the frame as soon as a first pass aligns it without a face (before its output is kept)."""
        for frame in aligned:
            if frame.index == self.index and not frame.has_face:
                raise no_face_to_mesh(frame.index)

    def keep(self, model: TriPlaneNet, faces: Sequence[FaceWork], config: RerenderConfig,
             invert_config: InvertConfig, device: torch.device, fps: float) -> None:
        """Keep the frame's tri-planes if it is among these rendered faces."""
        for face in faces:
            if self.planes is None and (self.index is None or face.index == self.index):
                self.planes = frame_mesh_planes(model, face, config, invert_config, device, fps)

    def export(self, model: TriPlaneNet, config: RerenderConfig, device: torch.device) -> None:
        """Write the mesh (call after the pass)."""
        if self.planes is None:
            # Only a first pass over a file that decodes fewer frames than it claims gets here.
            assert self.index is not None
            raise no_face_to_mesh(self.index)
        export_frame_mesh(model, self.planes, config, device)


def frame_mesh_planes(model: TriPlaneNet, face: FaceWork, config: RerenderConfig, invert_config: InvertConfig,
                      device: torch.device, fps: float) -> torch.Tensor:
    """[1, 96, H, W] (edited) tri-planes of the mesh frame, from its cache record or its crop inverted again."""
    ws, planes, offsets = face_tensors(model, [face.record], face.crop[None], face.label[None], [face.index],
                                       invert_config.seed, device)
    _, planes, _ = frame_planes(model, ws, planes, offsets, np.array([face.time]), config, fps, need_unedited=False)
    return planes


def export_frame_mesh(model: TriPlaneNet, planes: torch.Tensor, config: RerenderConfig, device: torch.device) -> None:
    """Marching cubes on the density of one frame's tri-planes."""
    assert config.mesh is not None

    def density(points: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model.decoder.sample_points(planes, points[None].to(device))[0][0, :, 0]

    export_mesh(config.mesh, density, resolution=config.mesh_resolution,
                box_size=float(model.decoder.rendering_kwargs["box_warp"]), device=device)
