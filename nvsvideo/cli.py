"""The `nvsvideo` command line: parse, validate, call the library, print. Nothing else lives here.

Conventions shared by every command: `--device`, `--quiet`, `--verbose` (tracebacks only there),
`--json` (a machine summary on stdout; humans' text goes to stderr), and the exit codes of
`nvsvideo.errors`.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import multiprocessing
import re
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any, Literal, TypeVar

import typer
from typer.core import TyperCommand, TyperGroup

from nvsvideo import __version__
from nvsvideo.cameras.paths import CAMERA_PATH_SYNTAX
from nvsvideo.console import Reporter, plural
from nvsvideo.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    InputError,
    NvsError,
    Terminated,
    UsageError,
    exit_code_summary,
)
from nvsvideo.files import output_error
from nvsvideo.limits import RANGES


class _Command(TyperCommand):
    """Typer's command, with required arguments shown as `VIDEO` in the usage line rather than `{VIDEO}`."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [re.sub(r"^\{(.*)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


class _App(typer.Typer):
    """A Typer whose commands are `_Command`s."""

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or _Command, **kwargs)


class _Commands(TyperGroup):
    """Typer's group, with its choice errors worded for people ("'fp16' is not one of 'auto', 'fp32'")."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as err:
            # Typer validates choices through pydantic, whose messages start with its own error kind.
            err.message = err.message.removeprefix("Value error, ")
            raise


# Plain (click) help: it wraps long option names and camera-path syntax at any width instead of
# cutting them with "...", and shows flags without a value placeholder.
app = _App(
    cls=_Commands,
    name="nvsvideo",
    help="Re-render and edit portrait videos from new camera viewpoints with EG3D + TriPlaneNet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    epilog=exit_code_summary(),
)

#: After the options of the commands that take --yaw-path: each kind on a line of its own, so no width
#: cuts the syntax (the \b keeps click from re-flowing the lines).
CAMERA_PATHS_EPILOG = ("\b\nCamera paths (--yaw-path KIND[:ARGS]); angles in degrees, values also by\n"
                       "position (sweep:-45,45):\n" + "\n".join(f"  {syntax}" for syntax in CAMERA_PATH_SYNTAX))

# Options every command shares. Declared once so they read the same everywhere.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and warnings on stderr.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail; full tracebacks on errors.")]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N] | mps. A missing GPU is an error.")]
WeightsDir = Annotated[
    Path | None,
    typer.Option("--weights", help="Folder of weight files (default: $NVSVIDEO_HOME, else ~/.cache/nvsvideo)."),
]

# Face-stage options, shared by every command that aligns a video.
Landmarks = Annotated[Literal["auto", "mesh", "dlib", "fan", "file"], typer.Option("--landmarks", help=(
    "Where the landmarks come from. mesh: MediaPipe's 3D face mesh, models Apache-2.0, and MTCNN's five crop "
    "points, weights MIT (`nvsvideo weights fetch mesh`); dlib: 68 points, model trained on iBUG 300-W, not for commercial use; fan: face-alignment; "
    "file: --landmarks-file. auto: mesh when its files are present, else fan if installed with its weights, "
    "else dlib."))]
LandmarksFile = Annotated[Path | None, typer.Option("--landmarks-file", help="Per-frame landmarks or boxes (JSON) for --landmarks file.")]
FanDetector = Annotated[Literal["sfd", "blazeface", "retinaface", "dlib"], typer.Option("--fan-detector", help="Face detector of the fan backend.")]
FaceIndex = Annotated[int, typer.Option("--face-index", min=0, help="Which face to follow: 0 = largest in the first frame with faces.")]
MaxGap = Annotated[int, typer.Option("--max-gap", min=0, help="Frames without a face up to this long are interpolated; longer gaps pass through.")]
Smooth = Annotated[float, typer.Option("--smooth", min=0.0, help=f"Temporal smoothing of crops and poses: Gaussian sigma in seconds (0 = off) ({RANGES['--smooth'].describe()}).")]
Causal = Annotated[bool, typer.Option("--causal", help="Causal (one-euro) smoothing for streaming instead of zero-phase.")]
Pose = Annotated[Literal["auto", "landmarks", "deep3d"], typer.Option("--pose", help="Cameras from the landmarks, or the official ones from Deep3DFaceRecon's network (needs epoch_20.pth in the weights folder; see `nvsvideo weights`); auto: deep3d when that file is there.")]

F = TypeVar("F", bound=Callable[..., Any])


def _option(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


#: Options shared by several commands, declared once; `with_options` adds them to a command.
FACE_OPTIONS = (
    _option("landmarks", Landmarks, "auto"),
    _option("landmarks_file", LandmarksFile, None),
    _option("fan_detector", FanDetector, "sfd"),
    _option("face_index", FaceIndex, 0),
    _option("max_gap", MaxGap, 5),
    _option("smooth", Smooth, 0.1),
    _option("causal", Causal, False),
    _option("pose", Pose, "auto"),
)
#: Options after which a group's options are listed in --help (the generic ones come last).
_GENERIC = ("weights_dir", "device", "json_out", "quiet", "verbose")


def with_options(**groups: tuple[inspect.Parameter, ...]) -> Callable[[F], F]:
    """Give a command the options of each group; its body receives each group as one namespace argument.

    `@with_options(face=FACE_OPTIONS)` adds --landmarks, --smooth, ... to the command line and passes
    `face=SimpleNamespace(landmarks=..., smooth=..., ...)` to the function, which declares `face: Any`.
    """

    def decorate(func: F) -> F:
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
               for p in inspect.signature(func, eval_str=True).parameters.values() if p.name not in groups]
        split = next((i for i, p in enumerate(own) if p.name in _GENERIC), len(own))
        added = [p for params in groups.values() for p in params]

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            for name, params in groups.items():
                kwargs[name] = SimpleNamespace(**{p.name: kwargs.pop(p.name) for p in params})
            return func(**kwargs)

        wrapper.__signature__ = inspect.Signature(own[:split] + added + own[split:])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into a `Terminated` exception while the block runs, so it unwinds like Ctrl-C.

    Without this Python dies on SIGTERM without running any clean-up, leaving temporary outputs and
    cache locks behind. A second SIGTERM during the clean-up is ignored (SIGKILL still works).
    """

    def terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # Worker processes (batch --workers) get no signal of their own: stop them too, or the clean-up
        # would wait for their current video. What they leave is removed by the next run.
        for child in multiprocessing.active_children():
            child.terminate()
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (an embedding program): leave signals to it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def command(func: F) -> F:
    """Run a command body with the CLI's error contract.

    An `NvsError` becomes one red sentence and its exit code; Ctrl-C exits 130 and SIGTERM 143, each
    after the same clean-up; anything else is a bug, reported in one line (with the traceback under
    --verbose) and exit code 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose", False))
        reporter = Reporter(quiet=bool(kwargs.get("quiet", False)), verbose=verbose)
        try:
            with sigterm_as_interrupt():
                return func(*args, **kwargs)
        except NvsError as err:
            if verbose:
                reporter.console.print_exception()
            reporter.error(str(err))
            raise typer.Exit(err.exit_code) from None
        except Terminated:
            reporter.error("terminated (SIGTERM); unfinished outputs were removed")
            raise typer.Exit(EXIT_TERMINATED) from None
        except KeyboardInterrupt:
            reporter.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as err:  # noqa: BLE001 - the last line of defence: no raw traceback for users
            # A full disk or a destination that became unwritable during the run is the user's to fix.
            mapped = output_error(err) if isinstance(err, OSError) else None
            if mapped is not None:
                reporter.error(str(mapped))
                raise typer.Exit(mapped.exit_code) from None
            if verbose:
                reporter.console.print_exception()
            hint = "" if verbose else " (run with --verbose for the traceback)"
            reporter.error(f"internal error: {type(err).__name__}: {err}{hint}")
            raise typer.Exit(1) from None

    # eval_str: this module uses postponed annotations, and Typer reads the signature as given.
    wrapper.__signature__ = inspect.signature(func, eval_str=True)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"nvsvideo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Re-render and edit portrait videos from new camera viewpoints."""


@app.command()
@command
def info(
    videos: Annotated[list[Path], typer.Argument(metavar="VIDEO", help="Video files to probe.")],
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Show videos' streams: size, exact frame rate, duration, frame count, rotation, colour, audio.

    With several files, each is described in turn (--json: a list); one that cannot be read is reported
    there and makes the exit code 3 once the others are shown.
    """
    from nvsvideo.video import probe

    described: list[dict[str, Any]] = []
    failed: list[str] = []
    for video in videos:
        try:
            meta = probe(video)
        except InputError as err:
            if len(videos) == 1:
                raise
            failed.append(str(err))
            described.append({"path": str(video), "error": str(err)})
            continue
        described.append(meta.to_dict())
        if not json_out and not quiet:
            # The description is this command's result, so it goes to stdout (`info x.mp4 > f` keeps it).
            typer.echo(("\n" if len(described) > 1 else "") + meta.describe())
    if json_out:
        Reporter.emit_json(described[0] if len(videos) == 1 else described)
    if failed:
        raise InputError(f"{len(failed)} of {len(videos)} files could not be read: " + "; ".join(failed))


@app.command()
@command
def extract(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video file to read.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create for the PNG frames and frames.json.")],
    every: Annotated[int, typer.Option("--every", min=1, help="Keep one frame in N.")] = 1,
    start: Annotated[float | None, typer.Option("--start", min=0, help="First time to keep, in seconds.")] = None,
    end: Annotated[float | None, typer.Option("--end", min=0, help="Stop before this time, in seconds.")] = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write a video's frames as PNG files (000000.png, ...) plus frames.json with their timestamps."""
    from nvsvideo.validate import check_writable
    from nvsvideo.video import extract_frames, probe
    from nvsvideo.video.extract import count_selected

    check_writable(out, "--out", folder=True)
    reporter = Reporter(quiet=quiet, verbose=verbose)
    meta = probe(video)
    total = count_selected(meta, every=every, start=start, end=end)
    with reporter.progress("extracting frames", total=total) as advance:
        result = extract_frames(video, out, every=every, start=start, end=end, info=meta, on_progress=advance)
    if result.warning:
        reporter.warn(result.warning)
    reporter.info(f"wrote {plural(result.frames_written, 'frame')} and frames.json to {result.out_dir}")
    if json_out:
        Reporter.emit_json(result.to_dict())


weights_app = _App(
    help="List, check, convert and fetch the model weight files nvsvideo uses.",
    no_args_is_help=False,
    rich_markup_mode=None,
)
app.add_typer(weights_app, name="weights")


def _print_weights(weights_dir: Path | None, *, deep: bool, json_out: bool, quiet: bool,
                   show_all: bool = False) -> list[Any]:
    """List every known weight file with its status; returns the rows."""
    import os

    from nvsvideo.weights import resolve_weights_dir
    from nvsvideo.weights.listing import format_weights
    from nvsvideo.weights.verify import weights_status

    folder = resolve_weights_dir(weights_dir, os.environ)
    rows = weights_status(folder, os.environ, deep=deep)
    if json_out:
        Reporter.emit_json({"weights_dir": str(folder), "files": [row.to_dict() for row in rows]})
    elif not quiet:
        # The listing is the command's result: stdout, so it can be paged or saved.
        typer.echo("\n".join(format_weights(rows, str(folder), show_all=show_all)))
    return rows


ShowAll = Annotated[bool, typer.Option("--all", help="List each edit direction instead of a summary.")]


@weights_app.callback(invoke_without_command=True)
@command
def weights(
    ctx: typer.Context,
    show_all: ShowAll = False,
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """List every weight file nvsvideo can use, where it is looked for and where to get it."""
    if ctx.invoked_subcommand is None:
        _print_weights(weights_dir, deep=False, json_out=json_out, quiet=quiet, show_all=show_all)


@weights_app.command("list")
@command
def weights_list(
    show_all: ShowAll = False,
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """List every weight file nvsvideo can use, where it is looked for and where to get it."""
    _print_weights(weights_dir, deep=False, json_out=json_out, quiet=quiet, show_all=show_all)


@weights_app.command("verify")
@command
def weights_verify(
    file: Annotated[Path | None, typer.Argument(metavar="FILE", help="One weight file to check (default: every known file present).")] = None,
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Check weight files: readable without running code, tensor names and shapes as the official ones."""
    from nvsvideo.errors import WeightsError
    from nvsvideo.weights.verify import verify_file

    if file is None:
        rows = _print_weights(weights_dir, deep=True, json_out=json_out, quiet=quiet)
        bad = [row.entry.name for row in rows if row.status == "invalid"]
        if bad:
            raise WeightsError(f"{len(bad)} weight files failed the check ({', '.join(bad)}); replace them")
        return
    result = verify_file(file)
    if json_out:
        Reporter.emit_json({"path": str(file), "ok": result.ok, "detail": result.detail})
    if not result.ok:
        raise WeightsError(f"{file}: {result.detail}")
    Reporter(quiet=quiet).info(f"{file}: ok, {result.detail}")


@weights_app.command("convert")
@command
def weights_convert(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="EG3D weights: official .pkl, TriPlaneNet .pth, or .safetensors.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output .safetensors (default: beside the input).")] = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Convert EG3D generator weights to nvsvideo's safe format (.safetensors: tensors + config)."""
    from nvsvideo.errors import UsageError
    from nvsvideo.models.eg3d.checkpoint import load_eg3d, save_eg3d

    target = out if out is not None else source.with_suffix(".safetensors")
    if target.suffix != ".safetensors":
        raise UsageError(f"the output must end in .safetensors, not '{target.suffix}'")
    ckpt = load_eg3d(source)
    save_eg3d(ckpt, target, protect=(source,))
    summary = {
        "source": str(source),
        "out": str(target),
        "tensors": len(ckpt.state_dict),
        "parameters": sum(t.numel() for t in ckpt.state_dict.values()),
        "neural_rendering_resolution": ckpt.neural_rendering_resolution,
    }
    Reporter(quiet=quiet).info(f"wrote {target} ({summary['tensors']} tensors, {summary['parameters']:,} values)")
    if json_out:
        Reporter.emit_json(summary)


@weights_app.command("fetch")
@command
def weights_fetch(
    names: Annotated[list[str], typer.Argument(metavar="NAMES", help="Registry names, as listed by `nvsvideo weights`; `mesh` fetches the mesh backend's files.")],
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Download known weight files from their official locations, checked before they are used.

    Files on Google Drive (TriPlaneNet, In-N-Out's mapper archive) need gdown (pip install "nvsvideo[gdrive]");
    an interrupted download resumes when the same command runs again.
    """
    import os

    from nvsvideo.weights import get_weight, resolve_weights_dir
    from nvsvideo.weights.fetch import fetch_weight
    from nvsvideo.weights.registry import expand_names

    reporter = Reporter(quiet=quiet, verbose=verbose)
    folder = resolve_weights_dir(weights_dir, os.environ)
    entries = [get_weight(name) for name in expand_names(names)]
    paths = {entry.name: str(fetch_weight(entry, folder, os.environ, reporter)) for entry in entries}
    if json_out:
        Reporter.emit_json({"weights_dir": str(folder), "files": paths})


@app.command(epilog=CAMERA_PATHS_EPILOG)
@command
def sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output video (.mp4/.mov).")],
    seed: Annotated[int, typer.Option("--seed", help="Identity: z = numpy RandomState(seed).randn(512).")] = 0,
    yaw_path: Annotated[str, typer.Option("--yaw-path", "--camera-path", metavar="KIND[:ARGS]", help="Camera path (kinds below).")] = "orbit",
    yaw: Annotated[float, typer.Option("--yaw", help="Degrees added to the path's yaw (LookAt h = pi/2 + yaw).")] = 0.0,
    pitch: Annotated[float, typer.Option("--pitch", help="Degrees added to the path's pitch (positive = camera above).")] = 0.0,
    frames: Annotated[int | None, typer.Option("--frames", min=1, help="Number of frames (default 120).")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", min=0.01, help="Duration instead of --frames.")] = None,
    fps: Annotated[str, typer.Option("--fps", help="Frame rate, e.g. 30 or 30000/1001.")] = "30",
    truncation: Annotated[float, typer.Option("--truncation", help="Truncation psi (1 = none).")] = 1.0,
    render_resolution: Annotated[int | None, typer.Option("--render-resolution", min=16, help=f"Neural rendering resolution (default: the checkpoint's) ({RANGES['--render-resolution'].describe()}).")] = None,
    samples: Annotated[float, typer.Option("--samples", min=0.1, help=f"Depth-sample multiplier (the official inversion scripts use 2) ({RANGES['--samples'].describe()}).")] = 1.0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames rendered at once.")] = 1,
    precision: Annotated[Literal["auto", "fp32"], typer.Option("--precision", help="auto: super-resolution in float16 on CUDA, as the official code; fp32: float32 everywhere.")] = "auto",
    depth: Annotated[Path | None, typer.Option("--depth", help="Also write the depth as a colour video here.")] = None,
    frames_dir: Annotated[Path | None, typer.Option("--frames-dir", help="Also write every frame as a PNG into this new folder.")] = None,
    eg3d: Annotated[Path | None, typer.Option("--eg3d", help="EG3D checkpoint (.pkl, .safetensors or TriPlaneNet .pt); default: from the weights folder.")] = None,
    weights_dir: WeightsDir = None,
    device: Device = "auto",
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Render a random identity along a camera path: the generator end to end, no input video."""
    from nvsvideo.limits import check_range, check_render_memory
    from nvsvideo.validate import (
        check_camera_path,
        check_device,
        check_distinct,
        check_input_file,
        check_video_output,
        check_writable,
        parse_fps,
    )

    check_device(device)
    for option, value in (("--truncation", truncation), ("--yaw", yaw), ("--pitch", pitch), ("--frames", frames),
                          ("--seconds", seconds), ("--samples", samples), ("--batch-size", batch_size),
                          ("--render-resolution", render_resolution)):
        check_range(option, value)
    rate = parse_fps(fps)
    check_video_output(out, [])
    if depth is not None:
        check_video_output(depth, [], "--depth")
    check_distinct({"--out": out, "--depth": depth})
    if frames_dir is not None:
        check_writable(frames_dir, "--frames-dir", folder=True)
    check_camera_path(yaw_path)
    if eg3d is not None:
        check_input_file(eg3d, "EG3D file")
    # The generator's frames are 512x512 (the official models' super-resolution output).
    check_render_memory(batch_size=batch_size, render_resolution=render_resolution, samples=samples,
                        frame_hw=(512, 512), output="paste", size=512, what="sampling")

    from nvsvideo.device import resolve_device
    from nvsvideo.pipelines.common import load_generator, resolve_eg3d_file
    from nvsvideo.pipelines.sample import SampleConfig, run_sample
    from nvsvideo.render import RenderOptions
    from nvsvideo.runtime.precision import parse_precision, sr_force_fp32

    reporter = Reporter(quiet=quiet, verbose=verbose)
    fp32 = sr_force_fp32(parse_precision(precision))
    if frames is not None and seconds is not None:
        raise UsageError("give --frames or --seconds, not both")
    count = frames if frames is not None else (max(1, round(seconds * rate)) if seconds is not None else 120)
    torch_device = resolve_device(device)
    generator = load_generator(resolve_eg3d_file(eg3d, weights_dir), torch_device)
    config = SampleConfig(seed=seed, camera_path=yaw_path, yaw=yaw, pitch=pitch, frames=count, fps=rate,
                          truncation=truncation, batch_size=batch_size)
    render = RenderOptions(neural_rendering_resolution=render_resolution, samples_multiplier=samples, seed=seed,
                           force_fp32=fp32)
    summary = run_sample(generator, config, render, out, device=torch_device, reporter=reporter,
                         depth_output=depth, frames_dir=frames_dir)
    reporter.info(f"wrote {plural(summary['frames'], 'frame')} to {out}")
    if json_out:
        Reporter.emit_json(summary)


def _align_setup(device: str, face: Any, weights_dir: Path | None, reporter: Reporter,
                 batch_size: int = 16) -> tuple[Any, Any, Any]:
    """(torch device, landmark backend, AlignConfig) from the face options group."""
    from nvsvideo.device import resolve_device
    from nvsvideo.face.deep3d import load_pose_model
    from nvsvideo.face.landmarks import LandmarkConfig, auto_fallback_note, create_backend
    from nvsvideo.pipelines.align import AlignConfig
    from nvsvideo.temporal.tracking import TrackerConfig

    torch_device = resolve_device(device)
    deep3d = load_pose_model(face.pose, weights_dir, torch_device)
    landmarks = LandmarkConfig(backend=face.landmarks, fan_detector=face.fan_detector,
                               landmarks_file=face.landmarks_file, weights_dir=weights_dir)
    note = auto_fallback_note(landmarks)
    if note is not None:
        reporter.warn(note)
    backend = create_backend(landmarks, torch_device)
    config = AlignConfig(tracker=TrackerConfig(face_index=face.face_index, max_gap=face.max_gap), smooth=face.smooth,
                         causal=face.causal, batch_size=batch_size, deep3d=deep3d)
    return torch_device, backend, config


@app.command()
@command
@with_options(face=FACE_OPTIONS)
def align(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="Video, image, or folder of images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create: 512 crops, dataset.json, tracks.json.")],
    face: Any,
    preview: Annotated[bool, typer.Option("--preview", help="Also write preview.mp4 with landmarks, crop and head axes.")] = False,
    cameras: Annotated[Path | None, typer.Option("--cameras", help="Use the cameras of an official dataset.json instead of ours.")] = None,
    weights_dir: WeightsDir = None,
    device: Device = "auto",
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Aligned 512x512 face crops with EG3D cameras, stable over time (the official label format)."""
    from nvsvideo.errors import InputError
    from nvsvideo.validate import (
        check_device,
        check_face_options,
        check_not_input,
        check_pose_weights,
        check_writable,
    )

    check_device(device)
    check_face_options(face)
    if not source.exists():
        raise InputError(f"{source} does not exist")
    check_not_input(out, [source], "--out")
    check_pose_weights(face.pose, weights_dir)
    check_writable(out, "--out", folder=True)

    from nvsvideo.pipelines.align import run_align

    reporter = Reporter(quiet=quiet, verbose=verbose)
    _, backend, config = _align_setup(device, face, weights_dir, reporter)
    summary = run_align(source, out, backend, config, reporter, preview=preview, cameras=cameras)
    reporter.info(f"wrote {plural(summary['crops'], 'crop')} of {plural(summary['frames'], 'frame')} to {out}")
    if json_out:
        Reporter.emit_json(summary)


INVERT_OPTIONS = (
    _option("model", Annotated[Literal["v1", "v2"] | None, typer.Option(
        "--model", help="TriPlaneNet version (default: the --triplanenet file's, else v2); a file of the "
        "other version is refused.")], None),
    _option("triplanenet", Annotated[Path | None, typer.Option(
        "--triplanenet", help="TriPlaneNet checkpoint (.pt/.pth); default: from the weights folder.")], None),
    _option("eg3d", Annotated[Path | None, typer.Option(
        "--eg3d", help="EG3D generator replacing the one inside the TriPlaneNet file (.pkl/.safetensors/.pt).")], None),
    _option("store", Annotated[Literal["auto", "planes", "offsets", "recompute"], typer.Option(
        "--store", help="What the cache keeps: planes (fast re-render, 12.6 MB/frame), offsets, recompute (30 kB/frame); auto: planes unless they would exceed 8 GiB or a quarter of the free disk.")], "auto"),
    _option("batch_size", Annotated[str, typer.Option("--batch-size", metavar="auto|N", help="Frames per encoder/render batch: N, or auto (sized from free GPU memory; 1 on the CPU). Out of memory halves it.")], "auto"),
    _option("precision", Annotated[Literal["auto", "fp32"], typer.Option("--precision", help="auto: EG3D's super-resolution in float16 on CUDA, as the official code; fp32: float32 everywhere.")], "auto"),
    _option("compile", Annotated[bool, typer.Option("--compile", envvar="NVSVIDEO_COMPILE", help="torch.compile EG3D's backbone and super-resolution (CUDA only; falls back to eager with a warning).")], False),
    _option("seed", Annotated[int, typer.Option(
        "--seed", help="Seed of the renderer's random depth samples (each frame's depend on seed and frame index).")], 0),
    _option("fresh", Annotated[bool, typer.Option(
        "--fresh", help="Discard a cache made with other settings instead of stopping.")], False),
)


def _check_inversion(inv: Any, weights_dir: Path | None) -> None:
    """The inversion options' checks that need no computation: --batch-size parses, the model files exist."""
    from nvsvideo.validate import check_model_files, parse_batch_size

    parse_batch_size(inv.batch_size)
    check_model_files(inv.model, inv.triplanenet, inv.eg3d, weights_dir)


def _invert_setup(video: Path, cache: Path | None, inv: Any, weights_dir: Path | None,
                  torch_device: Any) -> tuple[Path, Any, dict[str, str], Any]:
    """(cache dir, TriPlaneNet, its files' fingerprints, InvertConfig) from the inversion options group."""
    from nvsvideo.cache import parse_store
    from nvsvideo.files import default_cache_dir
    from nvsvideo.pipelines.common import fingerprint_memo, load_inverter
    from nvsvideo.pipelines.invert import InvertConfig, model_fingerprints
    from nvsvideo.runtime.precision import parse_precision, set_precision
    from nvsvideo.validate import parse_batch_size

    mode = parse_store(inv.store)
    batch_size, precision = parse_batch_size(inv.batch_size), parse_precision(inv.precision)
    inverter, files = load_inverter(inv.model, inv.triplanenet, inv.eg3d, weights_dir, torch_device)
    set_precision(inverter, precision)
    config = InvertConfig(store=mode, batch_size=batch_size, seed=inv.seed, fresh=inv.fresh)
    fingerprints = model_fingerprints(files, fingerprint_memo(weights_dir))
    return cache or default_cache_dir(video), inverter, fingerprints, config


def _compile_models(inverter: Any, inv: Any, torch_device: Any, reporter: Reporter) -> Any:
    """--compile: compile the generator's hot path in place; returns the state whose `seconds` the summary
    reports as the compile stage (None without --compile)."""
    if not inv.compile:
        return None
    from nvsvideo.runtime.compile import compile_hot_path

    return compile_hot_path(inverter.decoder, torch_device, reporter.warn)


@app.command()
@command
@with_options(inv=INVERT_OPTIONS, face=FACE_OPTIONS)
def invert(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Video to invert.")],
    inv: Any,
    face: Any,
    out: Annotated[Path | None, typer.Option("--out", "-o", "--cache", help="Cache folder to create or resume (default: VIDEO.nvs beside the video).")] = None,
    weights_dir: WeightsDir = None,
    device: Device = "auto",
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Align and invert every frame once into a resumable cache (re-runs skip finished frames)."""
    from nvsvideo.validate import (
        check_cache_writable,
        check_device,
        check_face_options,
        check_input_file,
        check_not_still_image,
    )
    from nvsvideo.video.probe import probe

    check_device(device)
    check_face_options(face)
    check_input_file(video)
    check_cache_writable(out, video)
    info = probe(video)  # once per run: probing reads the whole file
    check_not_still_image(info)
    _check_inversion(inv, weights_dir)

    from nvsvideo.pipelines.invert import describe_cache, run_invert

    reporter = Reporter(quiet=quiet, verbose=verbose)
    torch_device, backend, align_config = _align_setup(device, face, weights_dir, reporter)
    cache_dir, inverter, fingerprints, config = _invert_setup(video, out, inv, weights_dir, torch_device)
    compiled = _compile_models(inverter, inv, torch_device, reporter)
    _, summary = run_invert(video, cache_dir, inverter, fingerprints, backend, align_config, config,
                            device=torch_device, reporter=reporter, info=info)
    if compiled is not None:
        summary["seconds"]["compile"] = round(compiled.seconds, 3)
    reporter.info(f"inverted {summary['inverted']} frames ({summary['cache_hits']} already cached)")
    reporter.info(describe_cache(summary["cache"]))
    if json_out:
        Reporter.emit_json(summary)


#: Render and edit options, shared by rerender, edit and batch.
LOOK_OPTIONS = (
    _option("yaw_path", Annotated[str | None, typer.Option("--yaw-path", "--camera-path", metavar="KIND[:ARGS]", help="Camera path (kinds below). Default: orbit, or follow (the input view) when editing.")], None),
    _option("output", Annotated[Literal["crop", "paste", "compare"], typer.Option("--output", help="The face crop, the render pasted into the original frame, or input | reconstruction | novel side by side.")], "paste"),
    _option("size", Annotated[int, typer.Option("--size", min=64, help=f"Face size of crop/compare outputs ({RANGES['--size'].describe()}).")], 512),
    _option("samples", Annotated[float, typer.Option("--samples", min=0.1, help=f"Depth-sample multiplier of the novel views ({RANGES['--samples'].describe()}).")], 2.0),
    _option("render_resolution", Annotated[int | None, typer.Option("--render-resolution", min=16, help=f"Neural rendering resolution of the novel views ({RANGES['--render-resolution'].describe()}).")], None),
    _option("keep_ood", Annotated[bool, typer.Option("--keep-ood", help="Blend back what the generator cannot reproduce (hands, glasses, background) near the input view.")], False),
    _option("direction", Annotated[list[str] | None, typer.Option("--direction", metavar="NAME|FILE", help="Edit: a name from the weights folder's directions/ or mappers/, or a .pt/.pth/.npy path; repeatable.")], None),
    _option("strength", Annotated[list[float] | None, typer.Option("--strength", metavar="X", help="Edit strength; once for all edits or once per --direction. With --strength-ramp it multiplies the ramp's values.")], None),
    _option("strength_ramp", Annotated[list[str] | None, typer.Option("--strength-ramp", metavar="KEYS", help="Strength over time, e.g. 0s:0,1s:1,4s:1,5s:0 (times s or f; linear between keys), times --strength.")], None),
    _option("edit_offsets", Annotated[Literal["keep", "drop"], typer.Option("--edit-offsets", help="keep: tri-plane offsets stay (In-N-Out style); drop: fade them where edits are on.")], "keep"),
    _option("crf", Annotated[int, typer.Option("--crf", min=0, max=51, help="libx264 quality (lower = better).")], 18),
    _option("preset", Annotated[str, typer.Option("--preset", metavar="NAME", help="libx264 speed preset, as FFmpeg's: ultrafast, superfast, veryfast, faster, fast, medium, slow, slower, veryslow (faster = bigger files at the same --crf quality).")], "medium"),
)


@with_options(look=LOOK_OPTIONS, inv=INVERT_OPTIONS, face=FACE_OPTIONS)
def rerender(
    ctx: typer.Context,
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="Input video.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output video (.mp4/.mov).")],
    look: Any,
    inv: Any,
    face: Any,
    depth: Annotated[Path | None, typer.Option("--depth", help="Also write the rendered depth as a colour video here.")] = None,
    mesh: Annotated[Path | None, typer.Option("--mesh", help="Also export one frame's shape (.ply/.obj; needs scikit-image).")] = None,
    mesh_frame: Annotated[int | None, typer.Option("--mesh-frame", min=0, help="Frame for --mesh (default: the first with a face).")] = None,
    cache: Annotated[Path | None, typer.Option("--cache", help="Inversion cache folder (default: VIDEO.nvs beside the video).")] = None,
    weights_dir: WeightsDir = None,
    device: Device = "auto",
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Re-render a portrait video from new camera viewpoints (decode, align, invert, render, encode with audio)."""
    from nvsvideo.limits import check_render_memory
    from nvsvideo.validate import (
        check_cache_writable,
        check_device,
        check_face_options,
        check_finite,
        check_look_values,
        check_render_job,
        parse_batch_size,
    )

    editing = ctx.info_name == "edit"
    if editing and not look.direction:
        raise UsageError("edit needs at least one --direction (a name from `nvsvideo weights` or a file)")
    camera_path = look.yaw_path or ("follow" if editing else "orbit")
    # Every check that needs no computation, before the heavy imports and the long stages.
    check_device(device)
    check_look_values(size=look.size, samples=look.samples, render_resolution=look.render_resolution)
    check_finite("--strength", look.strength or ())
    check_face_options(face)
    info = check_render_job(video, out, camera_path, depth=depth, mesh=mesh, mesh_frame=mesh_frame,
                            preset=look.preset)
    check_cache_writable(cache, video)
    _check_inversion(inv, weights_dir)
    check_render_memory(batch_size=parse_batch_size(inv.batch_size), render_resolution=look.render_resolution,
                        samples=look.samples, frame_hw=(info.height, info.width), output=look.output,
                        size=look.size, what=f"rendering {video.name}")

    import os

    from nvsvideo.compose.layout import OutputMode
    from nvsvideo.compose.ood import KeepOodOptions
    from nvsvideo.edits import OffsetPolicy, load_edit, parse_edit_specs
    from nvsvideo.pipelines.invert import describe_cache
    from nvsvideo.pipelines.rerender import RerenderConfig, run_rerender
    from nvsvideo.render import RenderOptions
    from nvsvideo.weights import resolve_weights_dir

    # The parser already restricts both options to their choices.
    mode, policy = OutputMode(look.output), OffsetPolicy(look.edit_offsets)
    reporter = Reporter(quiet=quiet, verbose=verbose)
    torch_device, backend, align_config = _align_setup(device, face, weights_dir, reporter)
    specs = parse_edit_specs(look.direction or [], look.strength or [], look.strength_ramp or [], look.edit_offsets)
    folder = resolve_weights_dir(weights_dir, os.environ)
    edits = tuple(load_edit(spec, folder, torch_device) for spec in specs)
    cache_dir, inverter, fingerprints, invert_config = _invert_setup(video, cache, inv, weights_dir, torch_device)
    compiled = _compile_models(inverter, inv, torch_device, reporter)
    config = RerenderConfig(
        camera_path=camera_path, output=mode, size=look.size,
        render=RenderOptions(neural_rendering_resolution=look.render_resolution, samples_multiplier=look.samples,
                             seed=inv.seed, force_fp32=inverter.render_options.force_fp32),
        keep_ood=KeepOodOptions() if look.keep_ood else None, edits=edits, offset_policy=policy,
        batch_size=invert_config.batch_size, crf=look.crf, preset=look.preset, depth=depth, mesh=mesh,
        mesh_frame=mesh_frame)
    summary = run_rerender(video, out, cache_dir, inverter, fingerprints, backend, align_config, invert_config, config,
                           device=torch_device, reporter=reporter, info=info)
    if compiled is not None:
        summary["seconds"]["compile"] = round(compiled.seconds, 3)
    reporter.info(f"wrote {plural(summary['frames'], 'frame')} ({summary['rendered']} rendered) to {out}")
    reporter.info(describe_cache(summary["cache"]))
    if json_out:
        Reporter.emit_json(summary)


# One implementation, two names: `edit` is `rerender` with edits required and the input view by default.
app.command("rerender", epilog=CAMERA_PATHS_EPILOG)(command(rerender))
app.command("edit", epilog=CAMERA_PATHS_EPILOG, help="Edit a portrait video with latent directions or StyleCLIP mappers (any camera path of rerender "
                         "applies; default: the input view).")(command(rerender))

#: How `metrics` renders the reconstruction (defaults as rerender's compare output).
METRICS_RENDER_OPTIONS = (
    _option("samples", Annotated[float, typer.Option("--samples", min=0.1, help=f"Depth-sample multiplier of the reconstruction ({RANGES['--samples'].describe()}).")], 2.0),
    _option("render_resolution", Annotated[int | None, typer.Option("--render-resolution", min=16, help=f"Neural rendering resolution of the reconstruction (default: the model's) ({RANGES['--render-resolution'].describe()}).")], None),
)


@app.command()
@command
@with_options(render=METRICS_RENDER_OPTIONS, inv=INVERT_OPTIONS, face=FACE_OPTIONS)
def metrics(
    video: Annotated[Path, typer.Argument(metavar="VIDEO", help="The input video.")],
    render: Any,
    inv: Any,
    face: Any,
    rendered: Annotated[Path | None, typer.Option("--rendered", help="A video rendered from VIDEO (rerender/edit output) whose temporal stability to measure.")] = None,
    per_frame: Annotated[Path | None, typer.Option("--per-frame", "--csv", help="Write every frame's values to this .csv or .json file.")] = None,
    skip_reconstruction: Annotated[bool, typer.Option("--skip-reconstruction", help="Only the stability of --rendered (no models needed).")] = False,
    cache: Annotated[Path | None, typer.Option("--cache", help="Inversion cache folder (default: VIDEO.nvs beside the video).")] = None,
    weights_dir: WeightsDir = None,
    device: Device = "auto",
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Measure an inversion (reconstruction at the input view vs the input crops) and a re-render's stability.

    Reconstruction, per frame with a face (aligning and inverting first what the cache lacks): PSNR and SSIM
    (scikit-image; Gaussian window, sigma 1.5), LPIPS (alex, v0.1) and ArcFace identity similarity
    when their weight files are present (`nvsvideo weights` lists lpips-alex, alexnet-torchvision and
    arcface-ir-se50; nothing is downloaded), else a note says where to put them.

    Stability (--rendered): per frame t, the mean absolute difference from frame t-1 in levels 0-255, of the
    rendered video and of the input, on each frame's aligned face crop (a rendered video of another size
    than the input, i.e. crop or compare output, is taken whole), whole frames when no face is found; the
    ratio of their means says how much more the output changes than its input (1 = as stable).

    Summary table on stderr; --json prints the summary and per-frame values (PSNR of identical images: null).
    """
    from nvsvideo.limits import check_range
    from nvsvideo.validate import (
        check_cache_writable,
        check_device,
        check_face_options,
        check_input_file,
        check_not_input,
        check_writable,
    )

    if skip_reconstruction and rendered is None:
        raise UsageError("nothing to measure: give --rendered VIDEO, or leave out --skip-reconstruction")
    check_device(device)
    check_range("--samples", render.samples)
    check_range("--render-resolution", render.render_resolution)
    check_face_options(face)
    check_input_file(video)
    if rendered is not None:
        check_input_file(rendered, "rendered video")
    if per_frame is not None:
        check_not_input(per_frame, [p for p in (video, rendered) if p is not None], "--per-frame")
        check_writable(per_frame, "--per-frame")
    if not skip_reconstruction:
        check_cache_writable(cache, video)
        _check_inversion(inv, weights_dir)

    import os

    from nvsvideo.files import default_cache_dir
    from nvsvideo.pipelines.invert import describe_cache
    from nvsvideo.pipelines.metrics import (
        MetricsConfig,
        PerceptualModels,
        load_perceptual,
        per_frame_format,
        run_metrics,
        summary_table,
    )
    from nvsvideo.render import RenderOptions
    from nvsvideo.weights import resolve_weights_dir

    if per_frame is not None:
        per_frame_format(per_frame)
    reporter = Reporter(quiet=quiet, verbose=verbose)
    torch_device, backend, align_config = _align_setup(device, face, weights_dir, reporter)
    if skip_reconstruction:
        from nvsvideo.pipelines.invert import InvertConfig

        cache_dir, inverter, fingerprints, invert_config = cache or default_cache_dir(video), None, {}, InvertConfig()
        perceptual = PerceptualModels()
    else:
        cache_dir, inverter, fingerprints, invert_config = _invert_setup(video, cache, inv, weights_dir, torch_device)
        _compile_models(inverter, inv, torch_device, reporter)
        perceptual = load_perceptual(resolve_weights_dir(weights_dir, os.environ), os.environ, torch_device)
    config = MetricsConfig(
        rendered=rendered, reconstruction=not skip_reconstruction, per_frame=per_frame,
        render=RenderOptions(neural_rendering_resolution=render.render_resolution, samples_multiplier=render.samples,
                             seed=inv.seed, force_fp32=inverter is not None and inverter.render_options.force_fp32))
    summary = run_metrics(video, cache_dir, inverter, fingerprints, backend, align_config, invert_config, config,
                          perceptual, device=torch_device, reporter=reporter)
    if not quiet:
        reporter.table(summary_table(summary))
    for note in summary["notes"]:
        reporter.info(note)
    reporter.info(describe_cache(summary["cache"]))
    if json_out:
        Reporter.emit_json(summary)


@app.command(epilog=CAMERA_PATHS_EPILOG)
@command
@with_options(look=LOOK_OPTIONS, inv=INVERT_OPTIONS, face=FACE_OPTIONS)
def batch(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUTS", help="Videos, folders, glob patterns (quoted) or manifests (.csv/.jsonl with an input column, optional output and per-video option columns).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (with --ray: one every node can reach): the videos, report.jsonl and the inversion caches (.cache/).")],
    look: Any,
    inv: Any,
    face: Any,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes on this machine, one device each (--device cuda spreads them over cuda:0..N-1); with --ray, the number of actors (default: as many as fit).")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run each video as a Ray task (needs the ray extra of nvsvideo) on a local Ray instance, or on --ray-address.")] = False,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to join (auto, ray://HOST:10001); implies --ray.")] = None,
    ray_cpus: Annotated[int | None, typer.Option("--ray-cpus", min=1, help="CPUs of the local Ray instance (default: all).")] = None,
    cpus_per_task: Annotated[float, typer.Option("--cpus-per-task", min=0.0, help="CPUs each Ray actor reserves.")] = 1.0,
    gpus_per_task: Annotated[float, typer.Option("--gpus-per-task", min=0.0, help="GPUs each Ray actor reserves (0.5 puts two on a GPU).")] = 0.0,
    retries: Annotated[int, typer.Option("--retries", min=0, help="Resubmissions of a video whose worker died (a video that fails is not retried).")] = 1,
    chunk_frames: Annotated[int | None, typer.Option("--chunk-frames", min=1, help="Split each video into jobs of this many frames (rounded up to a multiple of 8), so one long video uses every worker: it is aligned once, then its chunks are inverted and rendered in parallel and joined without re-encoding.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo videos whose output exists (default: skip them).")] = False,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also take videos from sub-folders of folder INPUTS.")] = False,
    weights_dir: WeightsDir = None,
    device: Device = "auto",
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Re-render or edit many videos: one report line per video; exit 7 when some failed (the rest still run).

    Takes the options of rerender and edit (--direction makes it an edit, from the input view by default).

    Finished outputs are skipped; inversions are cached in OUTDIR/.cache, so an interrupted batch resumes.

    --json prints one JSON line per video on stdout as it finishes. --device takes a list (cuda:0,cuda:2) for --workers.
    """
    from nvsvideo.limits import check_range
    from nvsvideo.validate import check_device, check_face_options, check_writable

    for name in device.split(","):
        check_device(name)
    # report.jsonl and the caches live in OUTDIR: without it nothing could be recorded.
    check_writable(out, "--out", folder=True)
    check_range("--chunk-frames", chunk_frames)
    check_face_options(face)

    from nvsvideo.batch import BatchArgs, run_from_args
    from nvsvideo.pipelines.batch import BatchJobOptions, describe_caches, rerender_chunking, rerender_job

    def text(path: Path | None) -> str | None:
        # Absolute: workers (Ray actors on other nodes included) may not share this working directory.
        return str(path.absolute()) if path is not None else None

    options = BatchJobOptions(
        camera_path=look.yaw_path, output_mode=look.output, size=look.size, samples=look.samples,
        render_resolution=look.render_resolution, keep_ood=look.keep_ood, direction=tuple(look.direction or ()),
        strength=tuple(look.strength or ()), strength_ramp=tuple(look.strength_ramp or ()),
        edit_offsets=look.edit_offsets, crf=look.crf, preset=look.preset, model=inv.model, triplanenet=text(inv.triplanenet),
        eg3d=text(inv.eg3d), weights_dir=text(weights_dir), store=inv.store, batch_size=inv.batch_size,
        precision=inv.precision, compile=inv.compile,
        seed=inv.seed, fresh=inv.fresh, landmarks=face.landmarks, landmarks_file=text(face.landmarks_file),
        fan_detector=face.fan_detector, face_index=face.face_index, max_gap=face.max_gap, smooth=face.smooth,
        causal=face.causal, pose=face.pose)
    options.check()
    args = BatchArgs(
        inputs=inputs, outdir=out, overwrite=overwrite, recursive=recursive, device=device, workers=workers,
        ray=ray_address if ray_address is not None else ("" if ray else None), ray_cpus=ray_cpus,
        cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task, retries=retries, chunk_frames=chunk_frames,
        json_lines=json_out, quiet=quiet, verbose=verbose)
    result = run_from_args(args, rerender_job, options.to_dict(), chunking=rerender_chunking)
    Reporter(quiet=quiet).info(describe_caches(out))
    result.raise_for_failures()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
