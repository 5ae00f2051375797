"""Camera paths over a video: plain functions from frame times to a batch of EG3D labels.

Every path takes `times` [T] (seconds, or frame indices if all durations are given in frames too)
and returns labels [T, 25]. Angles are in degrees with the meaning of `eg3d.lookat_cam2world`:
yaw h = pi/2 + yaw (positive = camera towards the subject's left, world +x), pitch v = pi/2 - pitch
(positive = camera above the face), on the radius-2.7 sphere about the origin, looking at (0, 0, 0.2).

`follow` and `frontal` start from the input's own per-frame cameras (smooth them first with
`nvsvideo.temporal.smoothing`); the other paths ignore the input and are absolute in the head's
canonical frame, so the head's own motion disappears from the rendered view.

`parse_camera_path` turns a command-line spec such as `orbit:period=4s,yaw=20` into a
`CameraPathSpec`, and `evaluate_camera_path` evaluates it for a video's frame times.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nvsvideo.cameras.eg3d import (
    FOCAL,
    PIVOT,
    RADIUS,
    intrinsics,
    lookat_angles,
    lookat_cam2world,
    make_label,
    rot_x,
    rot_y,
    split_label,
)
from nvsvideo.errors import InputError, UsageError

#: The official `gen_videos.py` orbit: yaw pi/2 + 0.35 sin, pitch parameter pi/2 - 0.05 + 0.25 cos.
ORBIT_YAW_AMPLITUDE = math.degrees(0.35)
ORBIT_PITCH_AMPLITUDE = math.degrees(0.25)
ORBIT_PITCH_CENTER = math.degrees(0.05)
#: The official orbit video: 480 frames at 120 fps.
ORBIT_PERIOD_SECONDS = 4.0


def orbit(
    times: np.ndarray,
    period: float = ORBIT_PERIOD_SECONDS,
    yaw_amplitude: float = ORBIT_YAW_AMPLITUDE,
    pitch_amplitude: float = ORBIT_PITCH_AMPLITUDE,
    pitch_center: float = ORBIT_PITCH_CENTER,
    focal: float = FOCAL,
) -> np.ndarray:
    """The official ellipse: yaw = A_y sin(2 pi t / P), pitch = c - A_p cos(2 pi t / P).

    At t = 0 the camera is at its lowest point and straight ahead; the yaw peaks at t = P / 4.

    Args:
        times: [T] times, in the same unit as `period`.
        period: duration of one loop.
        yaw_amplitude: peak yaw in degrees.
        pitch_amplitude: peak pitch excursion about `pitch_center`, degrees.
        pitch_center: mean pitch in degrees.
        focal: normalised focal length.

    Returns:
        [T, 25] labels.
    """
    if period <= 0:
        raise UsageError(f"the orbit period must be positive, got {period}.")
    phase = 2.0 * np.pi * np.asarray(times, dtype=np.float64) / period
    yaw = yaw_amplitude * np.sin(phase)
    pitch = pitch_center - pitch_amplitude * np.cos(phase)
    return _lookat_labels(yaw, pitch, focal)


def sweep(
    times: np.ndarray,
    start_yaw: float,
    end_yaw: float,
    pitch: float = 0.0,
    focal: float = FOCAL,
) -> np.ndarray:
    """Yaw moving linearly from `start_yaw` at the first time to `end_yaw` at the last.

    Args:
        times: [T] increasing times.
        start_yaw: yaw at times[0], degrees.
        end_yaw: yaw at times[-1], degrees.
        pitch: constant pitch, degrees.
        focal: normalised focal length.

    Returns:
        [T, 25] labels.
    """
    times = np.asarray(times, dtype=np.float64)
    span = times[-1] - times[0] if times.size > 1 else 0.0
    fraction = (times - times[0]) / span if span > 0 else np.zeros_like(times)
    yaw = start_yaw + (end_yaw - start_yaw) * fraction
    return _lookat_labels(yaw, np.full_like(yaw, pitch), focal)


def fixed(times: np.ndarray, yaw: float = 0.0, pitch: float = 0.0, focal: float = FOCAL) -> np.ndarray:
    """The same absolute camera for every frame.

    Args:
        times: [T] (only the count matters).
        yaw: degrees.
        pitch: degrees.
        focal: normalised focal length.

    Returns:
        [T, 25] labels.
    """
    n = len(np.asarray(times))
    return _lookat_labels(np.full(n, float(yaw)), np.full(n, float(pitch)), focal)


def retarget(labels: np.ndarray, yaw: np.ndarray | float, pitch: np.ndarray | float) -> np.ndarray:
    """Move each camera to new LookAt yaw/pitch, keeping its roll, aim and radius.

    A camera's orientation relative to the roll-free LookAt camera at its own position (its roll
    and its off-pivot aim) is carried over to the LookAt camera at the new position, so an
    estimated pose keeps its character.

    Args:
        labels: [T, 25] input cameras.
        yaw: [T] or scalar target yaw, degrees.
        pitch: [T] or scalar target pitch, degrees.

    Returns:
        [T, 25] labels with the same intrinsics.
    """
    cam2world, K = split_label(labels)
    current = lookat_angles(cam2world)
    radius = np.linalg.norm(cam2world[..., :3, 3], axis=-1)
    reference = lookat_cam2world(current[..., 0], current[..., 1], radius, PIVOT)
    relative = np.swapaxes(reference[..., :3, :3], -1, -2) @ cam2world[..., :3, :3]
    out = lookat_cam2world(yaw, pitch, radius, PIVOT)
    out[..., :3, :3] = out[..., :3, :3] @ relative
    return make_label(out, K)


def follow(labels: np.ndarray, yaw_offset: float = 0.0, pitch_offset: float = 0.0) -> np.ndarray:
    """The input's own cameras shifted by a yaw/pitch offset, so the head keeps moving naturally.

    Args:
        labels: [T, 25] per-frame input cameras (smoothed).
        yaw_offset: degrees added to each frame's yaw.
        pitch_offset: degrees added to each frame's pitch.

    Returns:
        [T, 25] labels.
    """
    angles = lookat_angles(split_label(labels)[0])
    return retarget(labels, angles[..., 0] + yaw_offset, angles[..., 1] + pitch_offset)


def frontal(labels: np.ndarray) -> np.ndarray:
    """A stabilised frontal view: yaw and pitch zero in every frame, the input's roll kept.

    The official crop is never rotated (a head's tilt stays in the image and in the camera), so
    keeping the (smoothed) roll keeps the rendered face tilted like the original one and the
    paste-back lines up.

    Args:
        labels: [T, 25] per-frame input cameras (smoothed).

    Returns:
        [T, 25] labels.
    """
    return retarget(labels, 0.0, 0.0)


@dataclass(frozen=True)
class Keyframes:
    """Camera keys: time (seconds) -> yaw, pitch (degrees) and zoom (focal multiplier)."""

    times: np.ndarray
    """[K] strictly increasing times in seconds."""
    yaw: np.ndarray
    """[K] degrees."""
    pitch: np.ndarray
    """[K] degrees."""
    zoom: np.ndarray
    """[K] focal length multipliers (1 = the official framing, 2 = twice as tight)."""


def load_keyframes(path: Path) -> Keyframes:
    """Read keys from JSON (`[{"time": 0, "yaw": 10, "pitch": 0, "zoom": 1}, ...]`, or the same
    list under a "keyframes" key) or CSV (header `time,yaw,pitch[,zoom]`). Missing yaw/pitch are
    0 and a missing zoom is 1.

    Args:
        path: the file.

    Returns:
        Keyframes sorted by time.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise InputError(f"cannot read the keyframe file {path}: {err.strerror}.") from None
    try:
        if path.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        else:
            data = json.loads(text)
            rows = data["keyframes"] if isinstance(data, dict) else data
        table = np.array(
            [[float(r["time"]), _number(r, "yaw", 0.0), _number(r, "pitch", 0.0), _number(r, "zoom", 1.0)]
             for r in rows],
            dtype=np.float64,
        ).reshape(-1, 4)
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(
            f"cannot parse the keyframe file {path} ({_keyframe_problem(err)}); expected rows of time, yaw, "
            "pitch, zoom."
        ) from None
    if len(table) == 0:
        raise InputError(f"the keyframe file {path} has no keys; add at least one row.")
    if not np.isfinite(table).all():
        raise InputError(f"the keyframe file {path} has a value that is not a finite number.")
    table = table[np.argsort(table[:, 0], kind="stable")]
    if np.any(np.diff(table[:, 0]) <= 0):
        raise InputError(f"the keyframe file {path} repeats a time; give each key its own time.")
    if np.any(table[:, 3] <= 0):
        raise InputError(f"the keyframe file {path} has a zoom <= 0; zoom multiplies the focal length.")
    return Keyframes(times=table[:, 0], yaw=table[:, 1], pitch=table[:, 2], zoom=table[:, 3])


def _keyframe_problem(err: Exception) -> str:
    """A parse error of a keyframe file in words (never a Python exception's repr)."""
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON: {err.msg.lower()} at line {err.lineno}, column {err.colno}"
    if isinstance(err, KeyError):
        return f"a key has no {err.args[0]!r}"
    if isinstance(err, ValueError):
        return f"a value is not a number: {str(err).removeprefix('could not convert string to float: ')}"
    return "expected a list of keys, each with a time"


def keyframes(times: np.ndarray, keys: Keyframes) -> np.ndarray:
    """Interpolate keys smoothly: view directions with a C2 rotation spline, zoom with PCHIP.

    Each key's (yaw, pitch) becomes the rotation that turns the frontal direction towards it;
    `scipy.spatial.transform.RotationSpline` interpolates those on SO(3) (passing through every
    key, continuous angular velocity), and the interpolated direction is converted back to a
    roll-free LookAt camera. Zoom multiplies the focal length; the radius stays 2.7 because the
    renderer's ray bounds (2.25 to 3.3) assume it. Times outside the keys hold the end keys.

    Args:
        times: [T] seconds.
        keys: the keyframes.

    Returns:
        [T, 25] labels.
    """
    # Imported here: scipy.interpolate costs most of a second, and every command imports this module.
    from scipy.interpolate import PchipInterpolator
    from scipy.spatial.transform import Rotation, RotationSpline

    t = np.clip(np.asarray(times, dtype=np.float64), keys.times[0], keys.times[-1])
    if len(keys.times) == 1:
        yaw, pitch, zoom = (np.full(t.shape, v[0]) for v in (keys.yaw, keys.pitch, keys.zoom))
    else:
        turns = rot_y(np.radians(keys.yaw)) @ rot_x(-_elevation(np.radians(keys.pitch)))
        spline = RotationSpline(keys.times, Rotation.from_matrix(turns))
        direction = spline(t).apply(np.array([0.0, 0.0, 1.0]))
        yaw = np.degrees(np.arctan2(direction[:, 0], direction[:, 2]))
        pitch = np.degrees(np.pi / 2 * np.clip(direction[:, 1], -1.0, 1.0))
        zoom = PchipInterpolator(keys.times, keys.zoom)(t)
    cam2world = lookat_cam2world(yaw, pitch, RADIUS, PIVOT)
    K = np.stack([intrinsics(FOCAL * z) for z in np.atleast_1d(zoom)])
    return make_label(cam2world, K)


@dataclass(frozen=True)
class CameraPathSpec:
    """A parsed `--camera-path` value."""

    kind: str
    """orbit | sweep | fixed | follow | frontal | keyframes."""
    params: Mapping[str, float] = field(default_factory=dict)
    """Numeric parameters (degrees; the orbit period in seconds unless `period_in_frames`)."""
    period_in_frames: bool = False
    """The orbit period was given in frames (`120f`) rather than seconds (`4s` or `4`)."""
    file: Path | None = None
    """The keyframe file, for `keyframes`."""


# Accepted parameters per path kind, in positional order, with defaults.
_PATH_PARAMS: dict[str, dict[str, float]] = {
    "orbit": {
        "period": ORBIT_PERIOD_SECONDS,
        "yaw": ORBIT_YAW_AMPLITUDE,
        "pitch": ORBIT_PITCH_AMPLITUDE,
        "center": ORBIT_PITCH_CENTER,
    },
    "sweep": {"from": -30.0, "to": 30.0, "pitch": 0.0},
    "fixed": {"yaw": 0.0, "pitch": 0.0},
    "follow": {"yaw": 0.0, "pitch": 0.0},
    "frontal": {},
}

#: Each kind's syntax with its defaults, one entry per kind (the CLI's help lists them a line each).
CAMERA_PATH_SYNTAX = (
    "orbit[:period=4s,yaw=20.05,pitch=14.32,center=2.86] (period: 4s or 120f)",
    "sweep[:from=-30,to=30,pitch=0]",
    "fixed[:yaw=0,pitch=0]",
    "follow[:yaw=0,pitch=0] (offsets from the input view)",
    "frontal",
    "keyframes:FILE (JSON/CSV time,yaw,pitch,zoom)",
)
CAMERA_PATH_HELP = (
    "Camera path: " + " | ".join(CAMERA_PATH_SYNTAX) + ". Angles in degrees; values may be "
    "given by position, e.g. sweep:-45,45."
)


def parse_camera_path(spec: str) -> CameraPathSpec:
    """Parse `KIND[:ARGS]` where ARGS are `key=value` pairs or positional values, comma separated.

    Args:
        spec: e.g. "orbit:period=120f,yaw=25", "sweep:-30,30", "follow:yaw=20", "keyframes:cam.json".

    Returns:
        The parsed spec with every default filled in.
    """
    kind, _, args = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind == "keyframes":
        if not args.strip():
            raise UsageError("the keyframes camera path needs a file: keyframes:PATH.json.")
        return CameraPathSpec(kind=kind, file=Path(args.strip()))
    if kind not in _PATH_PARAMS:
        raise UsageError(f"unknown camera path {kind!r}. {CAMERA_PATH_HELP}")
    defaults = _PATH_PARAMS[kind]
    params = dict(defaults)
    in_frames = False
    items = [item.strip() for item in args.split(",") if item.strip()]
    for position, item in enumerate(items):
        key, eq, value = item.rpartition("=")
        key = key.strip().lower() if eq else (list(defaults)[position] if position < len(defaults) else "")
        if key not in defaults:
            raise UsageError(f"camera path {kind!r} does not take {item!r}. {CAMERA_PATH_HELP}")
        value = value.strip().lower()
        if key == "period" and value[-1:] in ("s", "f"):
            in_frames, value = value.endswith("f"), value[:-1]
        try:
            params[key] = float(value)
        except ValueError:
            raise UsageError(f"camera path value {item!r} is not a number. {CAMERA_PATH_HELP}") from None
        if not math.isfinite(params[key]):
            raise UsageError(f"camera path value {item!r} is not a finite number.")
        if key == "period" and params[key] <= 0:
            raise UsageError(f"the orbit period must be positive, not {item!r}.")
    return CameraPathSpec(kind=kind, params=params, period_in_frames=in_frames)


def evaluate_camera_path(
    spec: CameraPathSpec,
    times: np.ndarray,
    fps: float,
    input_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Evaluate a parsed path at the frame times of a video.

    Args:
        spec: from `parse_camera_path`.
        times: [T] frame times in seconds.
        fps: frame rate, to convert periods given in frames.
        input_labels: [T, 25] smoothed input cameras, required by follow and frontal.

    Returns:
        [T, 25] labels.
    """
    p = spec.params
    if spec.kind == "orbit":
        period = p["period"] / fps if spec.period_in_frames else p["period"]
        return orbit(times, period, p["yaw"], p["pitch"], p["center"])
    if spec.kind == "sweep":
        return sweep(times, p["from"], p["to"], p["pitch"])
    if spec.kind == "fixed":
        return fixed(times, p["yaw"], p["pitch"])
    if spec.kind == "keyframes":
        assert spec.file is not None
        return keyframes(times, load_keyframes(spec.file))
    if input_labels is None or len(input_labels) != len(times):
        raise UsageError(f"the {spec.kind} camera path needs the input's per-frame cameras.")
    if spec.kind == "follow":
        return follow(input_labels, p["yaw"], p["pitch"])
    return frontal(input_labels)


def _lookat_labels(yaw: np.ndarray, pitch: np.ndarray, focal: float) -> np.ndarray:
    """[T] yaw, [T] pitch in degrees -> [T, 25] labels on the official sphere."""
    return make_label(lookat_cam2world(yaw, pitch, RADIUS, PIVOT), intrinsics(focal))


def _number(row: Mapping[str, object], key: str, default: float) -> float:
    """A keyframe field, or its default when absent or empty (CSV cells can be blank)."""
    value = row.get(key)
    return default if value is None or value == "" else float(value)  # type: ignore[arg-type]


def _elevation(pitch: np.ndarray | float) -> np.ndarray:
    """Geometric elevation (radians) of the camera position for a LookAt pitch parameter (radians)."""
    return np.arcsin(np.clip(2.0 * np.asarray(pitch) / np.pi, -1.0, 1.0))
