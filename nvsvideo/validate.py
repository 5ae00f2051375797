"""Checks that need no computation, run at the start of a command before any model is loaded.

A mistake in an output name or a camera path should cost a second, not an alignment and an
inversion, and leave nothing behind (no cache, no output). These functions only look at names,
files and headers; they import nothing heavy (no torch), so a refused command also starts fast.
`batch` calls them per video.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nvsvideo.errors import InputError, OutputError, UsageError
from nvsvideo.files import can_create_in, default_cache_dir, nearest_existing, same_file
from nvsvideo.limits import RANGES, check_range

if TYPE_CHECKING:
    from nvsvideo.video.probe import VideoInfo

#: Demuxers of still images (ffmpeg's image2 and its per-codec `*_pipe` readers).
_IMAGE_DEMUXERS = ("image2",)

#: Mesh files `--mesh` can write.
MESH_SUFFIXES = (".ply", ".obj")


AUTO = "auto"
#: `--batch-size`: a positive frame count, or "auto".
BatchSpec = int | Literal["auto"]


def parse_batch_size(value: str | int) -> BatchSpec:
    """'auto', or a positive integer (as int or text: CLI values and manifest cells).

    Raises:
        UsageError: anything else.
    """
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise UsageError(f"--batch-size takes 'auto' or a positive whole number of frames, not {value!r}")
    check_range("--batch-size", int(text))
    return int(text)


#: `--device`: auto, cpu, mps, cuda or cuda:N (whether it exists is known only once torch is loaded).
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_device(spec: str) -> None:
    """`--device` names a device kind we know (one name; `batch` checks each of its list).

    Raises:
        UsageError: an unknown device name.
    """
    if not DEVICE_PATTERN.match(spec.strip().lower()):
        raise UsageError(f"unknown device '{spec.strip()}': use auto, cpu, cuda, cuda:N or mps")


def parse_fps(text: str) -> Fraction:
    """'30', '29.97' or '30000/1001' -> an exact frame rate within `RANGES['--fps']`.

    Raises:
        UsageError: not a number, or out of range.
    """
    try:
        rate = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"bad frame rate {text!r}: use e.g. 30, 25 or 30000/1001") from None
    bounds = RANGES["--fps"]
    if not bounds.low <= rate <= bounds.high:
        raise UsageError(f"--fps {text} is out of range: use {bounds.describe()}")
    return rate


def check_finite(option: str, values: Iterable[float]) -> None:
    """Every value of a repeatable number option is finite.

    Raises:
        UsageError: naming the option and the value.
    """
    for value in values:
        if not math.isfinite(value):
            raise UsageError(f"{option} must be a finite number, not {value}")


def check_look_values(*, size: int, samples: float, render_resolution: int | None) -> None:
    """The render options' sizes are within their ranges (`nvsvideo.limits.RANGES`).

    Raises:
        UsageError: the first one out of range.
    """
    check_range("--size", size)
    check_range("--samples", samples)
    check_range("--render-resolution", render_resolution)


def check_face_options(face: Any) -> None:
    """The face options (`cli.FACE_OPTIONS`) agree: smoothing in range, a landmarks file exactly when
    `--landmarks file` reads one, and that file exists.

    Raises:
        UsageError: out of range, or a file without its mode (or the mode without a file).
        InputError: the landmarks file is missing.
    """
    check_range("--smooth", face.smooth)
    if face.landmarks == "file":
        if face.landmarks_file is None:
            raise UsageError("--landmarks file needs --landmarks-file FILE.json")
        check_input_file(face.landmarks_file, "landmarks file")
    elif face.landmarks_file is not None:
        raise UsageError(f"--landmarks-file is read only with --landmarks file (now --landmarks {face.landmarks}); "
                         "add --landmarks file or leave --landmarks-file out")


def check_input_file(path: Path, what: str = "input video") -> None:
    """The input exists and is a file.

    Raises:
        InputError: missing, or a folder.
    """
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {path} is a folder, not a file")


def check_video_output(path: Path, inputs: Iterable[Path], option: str = "--out") -> None:
    """An output video can be written: a suffix we encode, not an input, not a folder.

    Raises:
        UsageError: any of these.
    """
    from nvsvideo.video.writer import CONTAINERS

    if path.suffix.lower() not in CONTAINERS:
        raise UsageError(f"{option} {path}: cannot write '{path.suffix or 'no suffix'}' videos; "
                         f"use one of {', '.join(CONTAINERS)}")
    check_not_input(path, inputs, option)
    check_writable(path, option)


def check_writable(path: Path, option: str, *, folder: bool = False, hint: str = "") -> None:
    """This process can create `path` (a file, or with `folder` a folder): the folder that will hold it, or
    the nearest existing one above it, is writable.

    Raises:
        OutputError: it is not (a read-only disk, another user's folder, or a file in the way).
    """
    target = path if folder else path.parent
    if can_create_in(target):
        return
    where = nearest_existing(target)
    why = f"the folder {where} is not writable" if where.is_dir() else f"{where} is a file, not a folder"
    raise OutputError(f"cannot write {option} {path}: {why}; choose another place{hint}")


def check_cache_writable(cache: Path | None, video: Path) -> None:
    """The inversion cache folder (`--cache`, or the default beside the video) can be created or written.

    Raises:
        OutputError: it cannot.
    """
    where = cache if cache is not None else default_cache_dir(video)
    check_writable(where, "--cache", folder=True,
                   hint="" if cache is not None else " with --cache DIR (the default sits beside the video)")


def check_not_input(path: Path, inputs: Iterable[Path], option: str) -> None:
    """`path` names none of `inputs` and is not a folder.

    Raises:
        UsageError: it would overwrite an input, or it is a folder.
    """
    for source in inputs:
        if same_file(path, source):
            raise UsageError(f"{option} {path} is the input {source}; choose another output path")
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name")


def mesh_format(path: str | os.PathLike[str]) -> str:
    """'ply' or 'obj' from the file suffix (case-insensitive).

    Raises:
        UsageError: any other suffix.
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in MESH_SUFFIXES:
        raise UsageError(f"the mesh file must end in .ply or .obj, not '{os.fspath(path)}'")
    return suffix[1:]


def check_distinct(paths: dict[str, Path | None]) -> None:
    """No two outputs (option -> path) are the same file.

    Raises:
        UsageError: two options name one file.
    """
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        key = path.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {option} both name {path}; give each output its own file")
        seen[key] = option


def check_preset(preset: str) -> None:
    """`--preset` is one of libx264's speed presets.

    Raises:
        UsageError: any other name (libx264 itself would only refuse it once the encoder opens).
    """
    from nvsvideo.video.writer import X264_PRESETS

    if preset not in X264_PRESETS:
        raise UsageError(f"--preset {preset!r} is not a libx264 preset; use one of {', '.join(X264_PRESETS)}")


def check_camera_path(spec: str) -> None:
    """The camera path parses and its keyframe file, if any, reads and parses.

    Raises:
        UsageError: a malformed spec (a value that is not a finite number included).
        InputError: a keyframe file that is missing or malformed.
    """
    from nvsvideo.cameras.paths import load_keyframes, parse_camera_path

    parsed = parse_camera_path(spec)
    if parsed.file is not None:
        load_keyframes(parsed.file)


def check_not_still_image(info: VideoInfo) -> None:
    """A video, not a still image read as a one-frame video.

    Raises:
        InputError: the file is a still image.
    """
    if info.container in _IMAGE_DEMUXERS or info.container.endswith("_pipe"):
        raise InputError(f"{info.path} is a still image, not a video; `nvsvideo align` takes images "
                         "(a one-frame video would be all a re-render could make of it)")


def check_render_job(video: Path, out: Path, camera_path: str, *, depth: Path | None = None,
                     mesh: Path | None = None, mesh_frame: int | None = None, preset: str = "medium") -> VideoInfo:
    """Everything about one rerender/edit job that can be checked without computing: the encoder preset
    exists, the input is a readable video (not a still image), every output can be written and none
    overwrites it, the camera path (and its keyframe file) is good. Returns the probed input.

    Raises:
        InputError, UsageError: the first problem found.
    """
    from nvsvideo.video.probe import probe

    check_preset(preset)
    check_input_file(video)
    check_video_output(out, [video])
    if depth is not None:
        check_video_output(depth, [video], "--depth")
    if mesh is not None:
        check_mesh_output(mesh, [video])
    check_distinct({"--out": out, "--depth": depth, "--mesh": mesh})
    check_camera_path(camera_path)
    info = probe(video)
    check_not_still_image(info)
    if mesh is not None and mesh_frame is not None and mesh_frame >= info.frame_count:
        raise UsageError(f"--mesh-frame {mesh_frame} is past the end of the video ({info.frame_count} "
                         f"frames, 0 to {info.frame_count - 1})")
    return info


def check_mesh_output(mesh: Path, inputs: Iterable[Path]) -> None:
    """`--mesh` can be written: .ply/.obj, not an input, and scikit-image (its marching cubes) is installed.

    Raises:
        UsageError: any of these.
    """
    import importlib.util

    mesh_format(mesh)
    check_not_input(mesh, inputs, "--mesh")
    check_writable(mesh, "--mesh")
    if importlib.util.find_spec("skimage") is None:
        raise UsageError("--mesh needs scikit-image; install it with: pip install scikit-image")


def check_model_files(model: str | None, triplanenet: Path | None, eg3d: Path | None,
                      weights_dir: Path | None) -> None:
    """The model files a command will load exist (explicit ones, or the default from the weights folder).

    Raises:
        UsageError: --weights is a file.
        InputError: an explicit file is missing.
        WeightsError: the default file is not installed (saying where to put it and where to get it).
    """
    from nvsvideo.weights import require_weight, resolve_weights_dir
    from nvsvideo.weights.registry import DEFAULT_TRIPLANENET

    folder = resolve_weights_dir(weights_dir, os.environ)
    for path, what in ((triplanenet, "TriPlaneNet file"), (eg3d, "EG3D file")):
        if path is not None:
            check_input_file(path, what)
    if triplanenet is None:
        require_weight(f"triplanenet-{model or DEFAULT_TRIPLANENET}", folder)


def check_pose_weights(pose: str, weights_dir: Path | None) -> None:
    """`--pose deep3d` finds its checkpoint (`auto` needs none: without it the cameras come from the landmarks).

    Raises:
        UsageError: --weights is a file.
        WeightsError: the checkpoint is not in the weights folder (saying where to put it and where to get it).
    """
    if pose == "deep3d":
        from nvsvideo.weights import require_weight, resolve_weights_dir

        require_weight("deep3d-recon", resolve_weights_dir(weights_dir, os.environ))
