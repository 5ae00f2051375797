"""`nvsvideo batch` for rerender/edit: the per-video options and the job function the batch runs.

`rerender_job` plugs the single-video pipeline (`run_rerender`) into `nvsvideo.batch.run_batch`. Its
options are plain JSON values (`BatchJobOptions`), because they come from the command line and from
manifest rows and travel to process workers and Ray actors. Each worker loads the models once and keeps
them in its `WorkerContext`. Each output has its own inversion cache beside it (`OUTDIR/.cache/<output>.nvs`),
so running the batch again, after an interruption or with `--overwrite` and other render options, reuses
the inversions; one cache per output (not per input) means two jobs never write the same cache at once.

With `--chunk-frames K` a long video is spread over the workers (`rerender_chunking`): one job aligns it
and creates its cache, then every K frames are inverted and rendered as a job of their own, each filling
its range of that one cache, and the driver joins the parts with the source's audio.
"""

from __future__ import annotations

import os
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import torch

from nvsvideo.batch.jobs import JobSpec, WorkerContext
from nvsvideo.batch.runner import Chunking
from nvsvideo.cache import parse_store
from nvsvideo.cache.space import folder_bytes
from nvsvideo.cameras.paths import parse_camera_path
from nvsvideo.compose.layout import OutputMode
from nvsvideo.compose.ood import KeepOodOptions
from nvsvideo.console import Reporter
from nvsvideo.device import resolve_device
from nvsvideo.edits import Edit, EditSpec, OffsetPolicy, load_edit, parse_edit_specs
from nvsvideo.errors import InputError, UsageError
from nvsvideo.face.deep3d import POSE_CHOICES, Deep3DCameras, load_pose_model
from nvsvideo.face.landmarks import LandmarkBackend, LandmarkConfig, create_backend
from nvsvideo.limits import check_range, check_render_memory, format_bytes
from nvsvideo.models.triplanenet.model import TriPlaneNet
from nvsvideo.pipelines.align import AlignConfig, VideoAlignment
from nvsvideo.pipelines.common import fingerprint_memo, load_inverter
from nvsvideo.pipelines.invert import (
    TRACKS_FILE,
    InvertConfig,
    cache_report,
    cached_alignment,
    invert_frames,
    model_fingerprints,
    prepare_cache,
    prepare_inversion,
)
from nvsvideo.pipelines.rerender import RerenderConfig, output_cameras, render_video, run_rerender
from nvsvideo.render import RenderOptions
from nvsvideo.runtime.compile import CompileState, compile_hot_path
from nvsvideo.runtime.precision import parse_precision, set_precision, sr_force_fp32
from nvsvideo.temporal.tracking import TrackerConfig
from nvsvideo.validate import (
    check_cache_writable,
    check_finite,
    check_look_values,
    check_pose_weights,
    check_preset,
    check_render_job,
    parse_batch_size,
)
from nvsvideo.video import FrameSpan, VideoInfo, join_videos
from nvsvideo.weights import resolve_weights_dir

E = TypeVar("E", bound=Enum)

CACHE_DIR = ".cache"
"""Folder beside the outputs that holds one inversion cache per output (hidden: never an input)."""


@dataclass(frozen=True)
class BatchJobOptions:
    """Options of one rerender/edit job: the batch-wide values, each overridable by a manifest column.

    The field names are the manifest's column names. Paths are text, lists are tuples; a CSV cell is
    one value, so a list option takes one item there (JSONL rows can give lists).
    """

    camera_path: str | None = None
    """Camera path spec; None: `orbit`, or `follow` (the input view) when editing."""
    output_mode: str = "paste"
    """Layout (`--output`): crop | paste | compare; not `output`, which a manifest uses for the file name."""
    size: int = 512
    """Face size of crop/compare outputs."""
    samples: float = 2.0
    """Depth-sample multiplier of the novel views."""
    render_resolution: int | None = None
    """Neural rendering resolution of the novel views; None: the checkpoint's."""
    keep_ood: bool = False
    """Blend back what the generator cannot reproduce, near the input view."""
    direction: tuple[str, ...] = ()
    """Edits: names of files in the weights folder's directions/ or mappers/, or .pt/.pth/.npy paths."""
    strength: tuple[float, ...] = ()
    """Edit strengths: none, one for all edits, or one per direction."""
    strength_ramp: tuple[str, ...] = ()
    """Edit strengths over time, e.g. `0s:0,1s:1`."""
    edit_offsets: str = "keep"
    """What edits do to the tri-plane offsets: keep | drop."""
    crf: int = 18
    """libx264 quality."""
    preset: str = "medium"
    """libx264 speed preset."""
    model: str | None = None
    """TriPlaneNet version: v1 | v2; None: the --triplanenet file's version, else v2."""
    triplanenet: str | None = None
    """TriPlaneNet checkpoint; None: from the weights folder."""
    eg3d: str | None = None
    """EG3D generator replacing the TriPlaneNet file's own."""
    weights_dir: str | None = None
    """Weights folder; None: $NVSVIDEO_HOME, else ~/.cache/nvsvideo."""
    store: str = "auto"
    """What the inversion cache keeps: planes | offsets | recompute."""
    batch_size: int | str = "auto"
    """Frames per encoder/render batch, or "auto" (`nvsvideo.runtime.batching`)."""
    precision: str = "auto"
    """auto | fp32 (`nvsvideo.runtime.precision`)."""
    compile: bool = False
    """torch.compile EG3D's hot path on CUDA (applied when a worker loads the model)."""
    seed: int = 0
    """Seed of the renderer's random depth samples (each frame's are keyed by seed and frame index)."""
    fresh: bool = False
    """Discard an inversion cache made with other settings instead of failing the video."""
    landmarks: str = "auto"
    """Landmark backend: auto | dlib | fan | file."""
    landmarks_file: str | None = None
    """Landmarks JSON for `landmarks=file` (a per-video manifest column)."""
    fan_detector: str = "sfd"
    """Face detector of the fan backend."""
    face_index: int = 0
    """Which face to follow."""
    max_gap: int = 5
    """Longest faceless run that is interpolated."""
    smooth: float = 0.1
    """Temporal smoothing sigma in seconds."""
    causal: bool = False
    """Causal (one-euro) smoothing."""
    pose: str = "auto"
    """Where cameras come from: auto | landmarks | deep3d (`nvsvideo.face.deep3d`)."""

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON values (tuples as lists): the batch-wide defaults of `run_batch`."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any]) -> BatchJobOptions:
        """Options from a job's mapping (batch-wide values merged with its manifest row), type-checked.

        Raises:
            UsageError: a value of the wrong type (e.g. a JSONL `size` of "big").
        """
        hints = typing.get_type_hints(cls)
        return cls(**{name: _typed(name, value, hints[name]) for name, value in options.items()})

    def check(self) -> None:
        """Fail now, before any video runs, on values that would fail every video the same way.

        Raises:
            UsageError: a bad encoder preset, layout, offset policy, store mode, camera path or edit pairing.
        """
        check_preset(self.preset)
        check_look_values(size=self.size, samples=self.samples, render_resolution=self.render_resolution)
        check_finite("--strength", self.strength)
        check_range("--smooth", self.smooth)
        self.invert_config()
        self.render_config(edits=())
        parse_precision(self.precision)
        self.edit_specs()
        parse_camera_path(self.camera_path or "orbit")
        if self.pose not in POSE_CHOICES:
            raise UsageError(f"unknown pose {self.pose!r}: use {', '.join(POSE_CHOICES)}")
        check_pose_weights(self.pose, Path(self.weights_dir) if self.weights_dir else None)

    def edit_specs(self) -> list[EditSpec]:
        """The edits asked for, before any file is read."""
        return parse_edit_specs(self.direction, self.strength, self.strength_ramp, self.edit_offsets)

    def render_config(self, edits: tuple[Edit, ...]) -> RerenderConfig:
        """The `RerenderConfig` of these options with the loaded `edits`."""
        return RerenderConfig(
            camera_path=self.camera_path or ("follow" if self.direction else "orbit"),
            output=_choice(OutputMode, self.output_mode, "output mode (--output, output_mode)"),
            size=self.size,
            render=RenderOptions(
                neural_rendering_resolution=self.render_resolution, samples_multiplier=self.samples, seed=self.seed,
                force_fp32=sr_force_fp32(parse_precision(self.precision)),
            ),
            keep_ood=KeepOodOptions() if self.keep_ood else None,
            edits=edits,
            offset_policy=_choice(OffsetPolicy, self.edit_offsets, "edit offsets policy (--edit-offsets)"),
            batch_size=parse_batch_size(self.batch_size),
            crf=self.crf,
            preset=self.preset,
        )

    def invert_config(self) -> InvertConfig:
        """The `InvertConfig` of these options."""
        return InvertConfig(store=parse_store(self.store), batch_size=parse_batch_size(self.batch_size), seed=self.seed,
                            fresh=self.fresh)

    def align_config(self, deep3d: Deep3DCameras | None) -> AlignConfig:
        """The `AlignConfig` of these options with the loaded Deep3D network (None: landmark cameras)."""
        return AlignConfig(
            tracker=TrackerConfig(face_index=self.face_index, max_gap=self.max_gap),
            smooth=self.smooth,
            causal=self.causal,
            deep3d=deep3d,
        )


def _choice(kind: type[E], value: str, what: str) -> E:
    """The member of the string enum `kind` named `value`, or a usage error listing the choices."""
    try:
        return kind(value)
    except ValueError:
        raise UsageError(f"unknown {what} {value!r}: use {', '.join(m.value for m in kind)}") from None


def _typed(name: str, value: Any, hint: Any) -> Any:
    """`value` as the field type `hint` asks for; text (a CSV cell) is converted to numbers."""
    args = typing.get_args(hint)
    if type(None) in args:  # `X | None`
        if value is None:
            return None
        (hint,) = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(_scalar(name, v, item) for v in values)
    return _scalar(name, value, hint)


def _scalar(name: str, value: Any, kind: type) -> Any:
    # bool is an int subclass: a `true` for an int option (or 1 for a bool one) is a mistake.
    if isinstance(value, kind) and (kind is bool) == isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise UsageError(f"option '{name}' must be {getattr(kind, '__name__', kind)}, got {value!r}")


@dataclass
class _Loaded:
    """What a job needs beyond its options, from the worker's model cache."""

    opts: BatchJobOptions
    device: torch.device
    model: TriPlaneNet
    fingerprints: dict[str, str]
    """Of the model files, hashed once per worker (part of every cache's identity)."""
    backend: LandmarkBackend
    deep3d: Deep3DCameras | None
    """The Deep3D camera network when the job's `pose` asks for it."""
    edits: tuple[Edit, ...]
    stages: dict[str, float]
    """`{"load": seconds}` when this job loaded models into the worker's cache, else empty."""
    compiled: CompileState | None
    """The model's compilation (`compile` option), shared by the worker's jobs; None without."""
    compile_before: float
    """Its compile seconds before this job."""

    def job_stages(self, *seconds: dict[str, float]) -> dict[str, float]:
        """This job's seconds per stage: loading, the pipeline's stages, and compiling when this job did."""
        stages = {k: v for part in (self.stages, *seconds) for k, v in part.items()}
        if self.compiled is not None and self.compiled.seconds > self.compile_before:
            stages["compile"] = round(self.compiled.seconds - self.compile_before, 3)
        return stages


def describe_caches(outdir: Path) -> str:
    """The batch's last line: where its inversion caches are and how much they take."""
    caches = outdir / CACHE_DIR
    return f"inversion caches: {caches} ({format_bytes(folder_bytes(caches))})"


def cache_dir_of(spec: JobSpec) -> Path:
    """The inversion cache of a video: `OUTDIR/.cache/<output name>.nvs`, shared by the video's chunks."""
    output = spec.video_output
    return output.parent / CACHE_DIR / f"{output.name}.nvs"


def check_job(spec: JobSpec) -> VideoInfo:
    """The whole-video job's checks that need no computation (`nvsvideo.validate`), before any model loads.

    Returns the probed input (reused by the job: probing reads the whole file).

    Raises:
        UsageError, InputError: a still image, an output that cannot be written, a bad camera path or preset.
    """
    opts = BatchJobOptions.from_mapping(spec.options)
    opts.check()  # a manifest's columns override the command line's checked values
    info = check_render_job(spec.input, spec.output, opts.render_config(()).camera_path, preset=opts.preset)
    check_cache_writable(cache_dir_of(spec), spec.input)
    check_render_memory(batch_size=parse_batch_size(opts.batch_size), render_resolution=opts.render_resolution,
                        samples=opts.samples, frame_hw=(info.height, info.width), output=opts.output_mode,
                        size=opts.size, what=f"rendering {spec.input.name}")
    return info


def _load(spec: JobSpec, ctx: WorkerContext) -> _Loaded:
    """The job's options, device, TriPlaneNet and landmark backend (loaded once per worker, then reused),
    and its edits (small files, read per job)."""
    opts = BatchJobOptions.from_mapping(spec.options)
    device = resolve_device(ctx.device)
    started = time.perf_counter()
    loads_before = len(ctx.models)

    def load_model() -> tuple[TriPlaneNet, dict[str, str], CompileState | None]:
        model, files = load_inverter(
            opts.model,
            Path(opts.triplanenet) if opts.triplanenet else None,
            Path(opts.eg3d) if opts.eg3d else None,
            Path(opts.weights_dir) if opts.weights_dir else None,
            device,
        )
        compiled = compile_hot_path(model.decoder, device, Reporter().warn) if opts.compile else None
        memo = fingerprint_memo(Path(opts.weights_dir) if opts.weights_dir else None)
        return model, model_fingerprints(files, memo), compiled

    model, fingerprints, compiled = _cached(
        ctx, ("triplanenet", opts.model, opts.triplanenet, opts.eg3d, opts.weights_dir, opts.compile, str(device)),
        load_model,
    )
    set_precision(model, parse_precision(opts.precision))  # per job: the worker's jobs share the model
    landmarks = LandmarkConfig(
        backend=opts.landmarks,
        fan_detector=opts.fan_detector,
        landmarks_file=Path(opts.landmarks_file) if opts.landmarks_file else None,
        weights_dir=Path(opts.weights_dir) if opts.weights_dir else None,
    )
    backend = _cached(ctx, ("landmarks", landmarks, str(device)), lambda: create_backend(landmarks, device))
    weights_dir = Path(opts.weights_dir) if opts.weights_dir else None
    deep3d = _cached(ctx, ("deep3d", opts.pose, opts.weights_dir, str(device)),
                     lambda: load_pose_model(opts.pose, weights_dir, device))
    folder = resolve_weights_dir(weights_dir, os.environ)
    edits = tuple(load_edit(edit, folder, device) for edit in opts.edit_specs())
    loaded = {"load": time.perf_counter() - started} if len(ctx.models) > loads_before else {}
    return _Loaded(opts, device, model, fingerprints, backend, deep3d, edits, loaded, compiled,
                   compiled.seconds if compiled is not None else 0.0)


def rerender_job(spec: JobSpec, ctx: WorkerContext) -> dict[str, Any]:
    """Re-render (and edit) one video of a batch into `spec.output`; the `nvsvideo.batch` job function.

    The TriPlaneNet model and the landmark backend are loaded on the worker's first video that needs
    them and kept in `ctx.models` (keyed by their files/settings and the device) for the next ones.
    With `spec.frames` set (`--chunk-frames`), only those frames are inverted, into their range of the
    cache that `prepare_job` created, and rendered, into a part file; see `rerender_chunking`.

    Returns:
        frames, seconds per stage (`load` when models were loaded for this video, then align, invert,
        render) and the pipeline's summary: faces found, frames rendered, inverted, cache hits, ...

    Raises:
        NvsError: this video cannot be processed (unreadable, no face, a cache made with other settings).
    """
    info = check_job(spec) if spec.frames is None else None
    loaded = _load(spec, ctx)
    if spec.frames is not None:
        return _render_chunk(spec, loaded)
    opts = loaded.opts
    summary = run_rerender(
        spec.input, spec.output, cache_dir_of(spec), loaded.model, loaded.fingerprints, loaded.backend,
        opts.align_config(loaded.deep3d), opts.invert_config(), opts.render_config(loaded.edits),
        device=loaded.device, reporter=Reporter(quiet=True), info=info,
    )
    details = {k: v for k, v in summary.items() if k not in {"video", "output", "seconds", "depth", "mesh"}}
    return {**details, "stages": loaded.job_stages(summary["seconds"])}


def prepare_job(spec: JobSpec, ctx: WorkerContext) -> dict[str, Any]:
    """Align one video and create its inversion cache, once, before its chunks (`Chunking.prepare`).

    Tracking and smoothing need the whole video; inverting and rendering are then done chunk by chunk.

    Returns:
        frames, faces found, the cache (path and store mode) and seconds per stage.

    Raises:
        NvsError: as `rerender_job`; also a video without any face, which no chunk could render.
    """
    info = check_job(spec)  # a clear InputError before any work on a bad file
    loaded = _load(spec, ctx)
    opts = loaded.opts
    started = time.perf_counter()
    # A cache made differently, or a disk too small for it, fails the video here, before any work.
    config, alignment, _ = prepare_inversion(spec.input, cache_dir_of(spec), loaded.model, loaded.fingerprints,
                                             loaded.backend, opts.align_config(loaded.deep3d), opts.invert_config(),
                                             Reporter(quiet=True), info)
    output_cameras(alignment, opts.render_config(()).camera_path)  # fails here, once, if there is no face at all
    prepare_cache(cache_dir_of(spec), alignment, loaded.model, loaded.fingerprints, config, Reporter(quiet=True))
    return {"frames": len(alignment.frames), "faces_found": int(alignment.valid().sum()),
            # Its size is left out: the chunks fill the cache after this (the batch's last line gives it).
            "cache": {k: v for k, v in cache_report(cache_dir_of(spec)).items() if k != "bytes"},
            "stages": {**loaded.stages, "align": round(time.perf_counter() - started, 3)}}


def _render_chunk(spec: JobSpec, loaded: _Loaded) -> dict[str, Any]:
    """Invert and render the frames `spec.frames` of a prepared video into the part file `spec.output`."""
    assert spec.frames is not None
    opts = loaded.opts
    alignment = _prepared_alignment(spec, loaded)
    span = FrameSpan(spec.frames.start, spec.frames.stop, alignment.frames[spec.frames.start].pts)
    quiet = Reporter(quiet=True)
    inverted = invert_frames(spec.input, cache_dir_of(spec), alignment, loaded.model, loaded.fingerprints,
                             opts.invert_config(), device=loaded.device, reporter=quiet, span=span)
    rendered = render_video(spec.input, spec.output, cache_dir_of(spec), alignment, loaded.model, loaded.fingerprints,
                            opts.invert_config(), opts.render_config(loaded.edits), device=loaded.device,
                            reporter=quiet, span=span)
    return {"frames": rendered["frames"], "rendered": rendered["rendered"], "inverted": inverted["inverted"],
            "cache_hits": inverted["cache_hits"],
            "stages": loaded.job_stages(inverted["seconds"], rendered["seconds"])}


def _prepared_alignment(spec: JobSpec, loaded: _Loaded) -> VideoAlignment:
    """The alignment `prepare_job` saved for this video and these settings."""
    alignment = cached_alignment(spec.input, cache_dir_of(spec), loaded.backend, loaded.opts.align_config(loaded.deep3d))
    if alignment is None:
        raise InputError(
            f"{spec.input.name} has no alignment for these settings in {cache_dir_of(spec)} (the video or its "
            "options changed after it was prepared); run the batch again"
        )
    if spec.frames is not None and spec.frames.stop > len(alignment.frames):
        raise InputError(f"{spec.input.name} has {len(alignment.frames)} frames, fewer than the chunk asks for")
    return alignment


def count_prepared_frames(spec: JobSpec) -> int:
    """Frames of a prepared video, as its alignment counted them in decoding (`Chunking.count_frames`)."""
    tracks = cache_dir_of(spec) / TRACKS_FILE
    if not tracks.is_file():
        raise InputError(f"{spec.input.name} was not prepared: {tracks} is missing; run the batch again")
    return len(VideoAlignment.load(tracks).frames)


def join_chunks(parts: Sequence[Path], spec: JobSpec) -> None:
    """The final output from the rendered parts, with the source's audio (`Chunking.merge`)."""
    join_videos(parts, spec.output, audio_from=spec.input)


def rerender_chunking(frames: int) -> Chunking:
    """How `nvsvideo batch --chunk-frames` splits a video: `prepare_job` aligns it whole (tracking and
    smoothing need every frame), then each chunk inverts and renders its frames as a job of its own,
    filling its part of the shared inversion cache, and the parts are joined without re-encoding.

    `frames` is rounded up to a whole number of cache chunks (8 frames), so no two jobs write the same
    cache file.
    """
    per_file = InvertConfig().chunk_size or 1
    return Chunking(frames=-(-frames // per_file) * per_file, count_frames=count_prepared_frames,
                    merge=join_chunks, prepare=prepare_job)


def _cached(ctx: WorkerContext, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
    """`ctx.models[key]`, built on first use; the worker keeps it for its later videos."""
    if key not in ctx.models:
        ctx.models[key] = build()
    return ctx.models[key]
