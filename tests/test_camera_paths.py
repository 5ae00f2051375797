"""Camera paths: orbit extremes, sweep endpoints, follow/frontal, keyframe interpolation, the parser."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nvsvideo.cameras.eg3d import FOCAL, intrinsics, lookat_angles, lookat_cam2world, make_label, split_label
from nvsvideo.cameras.paths import (
    Keyframes,
    evaluate_camera_path,
    fixed,
    follow,
    frontal,
    keyframes,
    load_keyframes,
    orbit,
    parse_camera_path,
    sweep,
)
from nvsvideo.errors import InputError, UsageError


def angles(labels: np.ndarray) -> np.ndarray:
    """[T, 25] -> [T, 3] yaw, pitch, roll in degrees."""
    return lookat_angles(split_label(labels)[0])


def test_orbit_matches_the_official_ellipse_at_its_extremes():
    times = np.arange(480) / 120.0  # the official 480 frames at 120 fps: one loop of 4 s
    yaw, pitch, roll = angles(orbit(times, period=4.0)).T
    # yaw = 0.35 sin(2 pi t / T) rad: largest at a quarter period, smallest at three quarters.
    assert int(np.argmax(yaw)) == 120 and int(np.argmin(yaw)) == 360
    assert yaw[120] == pytest.approx(math.degrees(0.35), abs=1e-9)
    assert yaw[360] == pytest.approx(-math.degrees(0.35), abs=1e-9)
    # pitch parameter pi/2 - v = 0.05 - 0.25 cos: lowest at t = 0, highest at half a period.
    assert pitch[0] == pytest.approx(math.degrees(0.05 - 0.25), abs=1e-9)
    assert pitch[240] == pytest.approx(math.degrees(0.05 + 0.25), abs=1e-9)
    assert yaw[0] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(roll, 0.0, atol=1e-9)
    # The camera height for pitch -0.2 rad is 2.7 * 2 * (-0.2) / pi.
    assert split_label(orbit(times[:1], 4.0))[0][0, 1, 3] == pytest.approx(2.7 * 2 * -0.2 / math.pi, abs=1e-12)


def test_orbit_custom_amplitudes_and_period_in_frames():
    spec = parse_camera_path("orbit:period=60f,yaw=30,pitch=0,center=0")
    labels = evaluate_camera_path(spec, np.arange(60) / 30.0, fps=30.0)
    yaw, pitch, _ = angles(labels).T
    assert yaw[15] == pytest.approx(30.0, abs=1e-9) and yaw[45] == pytest.approx(-30.0, abs=1e-9)
    np.testing.assert_allclose(pitch, 0.0, atol=1e-9)


def test_sweep_hits_its_endpoints_exactly_and_is_linear():
    labels = sweep(np.linspace(0.0, 2.5, 76), -40.0, 25.0, pitch=5.0)
    yaw, pitch, _ = angles(labels).T
    assert yaw[0] == pytest.approx(-40.0, abs=1e-9) and yaw[-1] == pytest.approx(25.0, abs=1e-9)
    np.testing.assert_allclose(np.diff(yaw), 65.0 / 75, atol=1e-9)
    np.testing.assert_allclose(pitch, 5.0, atol=1e-9)
    np.testing.assert_allclose(angles(sweep(np.zeros(1), 10.0, 20.0))[:, 0], 10.0, atol=1e-9)


def test_fixed_is_one_camera():
    labels = fixed(np.arange(5), yaw=15.0, pitch=-5.0)
    expected = make_label(lookat_cam2world(15.0, -5.0), intrinsics())
    np.testing.assert_allclose(labels, np.broadcast_to(expected, (5, 25)), atol=0)


def _rolled_cameras() -> np.ndarray:
    """[6, 25] cameras with varying yaw/pitch and a roll about the optical axis, like real poses."""
    yaw, pitch, roll = np.linspace(-20, 30, 6), np.linspace(8, -6, 6), np.radians(np.linspace(-4, 6, 6))
    cam = lookat_cam2world(yaw, pitch)
    c, s = np.cos(roll), np.sin(roll)
    about_z = np.zeros((6, 3, 3))
    about_z[:, 0, 0], about_z[:, 0, 1], about_z[:, 1, 0], about_z[:, 1, 1], about_z[:, 2, 2] = c, -s, s, c, 1
    cam[:, :3, :3] = cam[:, :3, :3] @ about_z
    return make_label(cam, intrinsics())


def test_follow_adds_offsets_and_keeps_roll_and_radius():
    labels = _rolled_cameras()
    moved = follow(labels, yaw_offset=20.0, pitch_offset=-5.0)
    before, after = angles(labels), angles(moved)
    np.testing.assert_allclose(after[:, 0], before[:, 0] + 20.0, atol=1e-9)
    np.testing.assert_allclose(after[:, 1], before[:, 1] - 5.0, atol=1e-9)
    np.testing.assert_allclose(after[:, 2], before[:, 2], atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(split_label(moved)[0][:, :3, 3], axis=1), 2.7, atol=1e-12)
    np.testing.assert_allclose(follow(labels), labels, atol=1e-12)


def test_frontal_zeroes_yaw_and_pitch_but_keeps_roll():
    labels = _rolled_cameras()
    front = angles(frontal(labels))
    np.testing.assert_allclose(front[:, :2], 0.0, atol=1e-9)
    np.testing.assert_allclose(front[:, 2], angles(labels)[:, 2], atol=1e-9)


def _keys() -> Keyframes:
    return Keyframes(
        times=np.array([0.0, 1.0, 2.5, 3.0]),
        yaw=np.array([0.0, 35.0, -20.0, -10.0]),
        pitch=np.array([0.0, 10.0, -5.0, 0.0]),
        zoom=np.array([1.0, 1.5, 1.0, 1.2]),
    )


def test_keyframes_pass_through_every_key():
    keys = _keys()
    labels = keyframes(keys.times, keys)
    got = angles(labels)
    np.testing.assert_allclose(got[:, 0], keys.yaw, atol=1e-9)
    np.testing.assert_allclose(got[:, 1], keys.pitch, atol=1e-9)
    np.testing.assert_allclose(split_label(labels)[1][:, 0, 0], FOCAL * keys.zoom, atol=1e-12)
    # Before the first and after the last key the end keys hold.
    np.testing.assert_allclose(angles(keyframes(np.array([-1.0, 9.0]), keys))[:, :2], [[0, 0], [-10, 0]], atol=1e-9)


def _max_second_difference(values: np.ndarray) -> float:
    return float(np.abs(np.diff(values, n=2, axis=0)).max())


def test_keyframes_are_continuous_with_no_velocity_jump_at_keys():
    keys, dt = _keys(), 1e-3
    times = np.arange(0.0, 3.0 + dt / 2, dt)
    labels = keyframes(times, keys)
    yaw_pitch = angles(labels)[:, :2]
    zoom = split_label(labels)[1][:, 0, 0] / FOCAL
    # C0: neighbouring samples are close everywhere.
    assert np.abs(np.diff(yaw_pitch, axis=0)).max() < 0.2
    # C1: a kink of slope change s would make a second difference of about s * dt somewhere (tens of
    # degrees per second here, so ~0.03); a smooth curve keeps it of order dt^2.
    assert _max_second_difference(yaw_pitch) < 2e-3
    assert _max_second_difference(zoom) < 1e-4
    # The same check flags linear interpolation between the keys, so it can fail.
    linear = np.stack([np.interp(times, keys.times, keys.yaw), np.interp(times, keys.times, keys.pitch)], axis=1)
    assert _max_second_difference(linear) > 2e-2


def test_keyframe_files_json_and_csv(tmp_path):
    js = tmp_path / "keys.json"
    js.write_text(json.dumps({"keyframes": [{"time": 2, "yaw": -10}, {"time": 0, "yaw": 20, "pitch": 5, "zoom": 1.5}]}))
    keys = load_keyframes(js)
    np.testing.assert_array_equal(keys.times, [0, 2])
    np.testing.assert_array_equal(keys.yaw, [20, -10])
    np.testing.assert_array_equal(keys.pitch, [5, 0])
    np.testing.assert_array_equal(keys.zoom, [1.5, 1])
    table = tmp_path / "keys.csv"
    table.write_text("time,yaw,pitch,zoom\n0,20,5,1.5\n2,-10,0,\n")
    csv_keys = load_keyframes(table)
    np.testing.assert_array_equal(csv_keys.yaw, keys.yaw)
    np.testing.assert_array_equal(csv_keys.zoom, keys.zoom)
    spec = parse_camera_path(f"keyframes:{table}")
    labels = evaluate_camera_path(spec, np.array([0.0, 1.0, 2.0]), fps=1.0)
    np.testing.assert_allclose(angles(labels)[[0, 2], 0], [20, -10], atol=1e-9)


@pytest.mark.parametrize(
    "content",
    ["", "[]", "not json", '[{"yaw": 3}]', '[{"time": 0}, {"time": 0}]', '[{"time": 0, "zoom": 0}]'],
)
def test_bad_keyframe_files_are_input_errors(tmp_path, content):
    path = tmp_path / "keys.json"
    path.write_text(content)
    with pytest.raises(InputError):
        load_keyframes(path)
    with pytest.raises(InputError):
        load_keyframes(tmp_path / "missing.json")


def test_parser_defaults_positional_and_errors():
    assert parse_camera_path("orbit").params["yaw"] == pytest.approx(math.degrees(0.35))
    spec = parse_camera_path("sweep:-45,45")
    assert (spec.params["from"], spec.params["to"], spec.params["pitch"]) == (-45.0, 45.0, 0.0)
    spec = parse_camera_path("Follow: yaw=20")
    assert spec.kind == "follow" and spec.params == {"yaw": 20.0, "pitch": 0.0}
    assert parse_camera_path("orbit:period=2.5s").params["period"] == 2.5
    assert not parse_camera_path("orbit:period=2.5s").period_in_frames
    for bad in ["spiral", "fixed:roll=3", "fixed:1,2,3", "sweep:a,b", "keyframes:", "orbit:period=-1"]:
        with pytest.raises(UsageError):
            evaluate_camera_path(parse_camera_path(bad), np.arange(3.0), fps=30.0)


def test_follow_and_frontal_need_input_cameras():
    for kind in ("follow", "frontal"):
        with pytest.raises(UsageError):
            evaluate_camera_path(parse_camera_path(kind), np.arange(3.0), fps=30.0)
    labels = _rolled_cameras()
    out = evaluate_camera_path(parse_camera_path("follow:10"), np.arange(6.0), fps=30.0, input_labels=labels)
    np.testing.assert_allclose(angles(out)[:, 0], angles(labels)[:, 0] + 10.0, atol=1e-9)
