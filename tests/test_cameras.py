"""EG3D camera math against hand-computed values and the official example label."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nvsvideo.cameras.eg3d import (
    euler_from_rotation,
    intrinsics,
    label_from_pose,
    lookat_angles,
    lookat_cam2world,
    make_label,
    mirror_label,
    pose_from_label,
    rotation_angle_deg,
    rotation_from_euler,
    split_label,
)


def official_label(fixtures_dir) -> np.ndarray:
    data = json.loads((fixtures_dir / "eg3d_example_dataset.json").read_text())
    return np.array(data["labels"][0][1], dtype=np.float64)


def test_intrinsics_are_the_official_normalised_matrix():
    np.testing.assert_array_equal(intrinsics(), [[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]])


def test_frontal_lookat_is_the_documented_matrix():
    expected = [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]]
    np.testing.assert_allclose(lookat_cam2world(0.0, 0.0), expected, atol=1e-12)


def test_yaw_90_by_hand():
    # h = pi: camera at (2.7, 0, 0) looking at the pivot (0, 0, 0.2).
    norm = math.sqrt(2.7**2 + 0.2**2)
    forward = [-2.7 / norm, 0.0, 0.2 / norm]
    right = [-0.2 / norm, 0.0, -2.7 / norm]  # forward x (0, 1, 0)
    down = [0.0, -1.0, 0.0]
    expected = np.eye(4)
    expected[:3, :3] = np.array([right, down, forward]).T
    expected[:3, 3] = [2.7, 0.0, 0.0]
    np.testing.assert_allclose(lookat_cam2world(90.0, 0.0), expected, atol=1e-12)


def test_positive_yaw_moves_the_camera_to_plus_x():
    origin = lookat_cam2world(30.0, 0.0)[:3, 3]
    np.testing.assert_allclose(origin, [1.35, 0.0, 2.7 * math.cos(math.radians(30))], atol=1e-12)


def test_positive_pitch_moves_the_camera_up_and_is_not_the_elevation():
    # v = pi/2 - pi/4 -> phi = arccos(1 - 2v/pi) = pi/3 -> height 2.7 cos(pi/3) = 1.35 (world +y is up).
    cam = lookat_cam2world(0.0, 45.0)
    np.testing.assert_allclose(cam[:3, 3], [0.0, 1.35, 2.7 * math.sin(math.pi / 3)], atol=1e-12)
    assert cam[1, 2] < 0  # looking down
    assert cam[1, 1] < 0  # the camera's +y (image down) points to world -y


def test_lookat_angles_invert_lookat():
    yaw, pitch = np.array([-70.0, -10.0, 0.0, 25.0, 60.0]), np.array([20.0, -30.0, 0.0, 5.0, -12.0])
    angles = lookat_angles(lookat_cam2world(yaw, pitch))
    np.testing.assert_allclose(angles, np.stack([yaw, pitch, np.zeros(5)], axis=1), atol=1e-9)


def test_label_layout_round_trip():
    cam, K = lookat_cam2world(10.0, 5.0), intrinsics()
    label = make_label(cam, K)
    assert label.shape == (25,)
    assert label[3] == cam[0, 3] and label[16] == 4.2647 and label[-1] == 1.0
    back_cam, back_K = split_label(label)
    np.testing.assert_array_equal(back_cam, cam)
    np.testing.assert_array_equal(back_K, K)
    with pytest.raises(ValueError):
        split_label(np.zeros(16))


def test_mirror_of_yaw_is_negative_yaw():
    for yaw, pitch in [(25.0, 0.0), (-40.0, 10.0), (5.0, -8.0)]:
        mirrored = mirror_label(make_label(lookat_cam2world(yaw, pitch), intrinsics()))
        np.testing.assert_allclose(mirrored, make_label(lookat_cam2world(-yaw, pitch), intrinsics()), atol=1e-12)


def test_mirror_negates_the_documented_entries(fixtures_dir):
    label = official_label(fixtures_dir)
    mirrored = mirror_label(label)
    flipped = {1, 2, 4, 8, 3}  # [0,1], [0,2], [1,0], [2,0] and the x translation [0,3]
    for i in range(25):
        assert mirrored[i] == (-label[i] if i in flipped else label[i])
    np.testing.assert_array_equal(mirror_label(mirrored), label)


def test_frontal_head_pose_gives_the_documented_label():
    label = label_from_pose(np.eye(3), np.zeros(3))
    cam, K = split_label(label)
    np.testing.assert_array_equal(cam[:3, :3], np.diag([1.0, -1.0, -1.0]))
    # p = (0, 0.006, 0.27 * 10 + 0.161) pushed onto the radius-2.7 sphere.
    p = np.array([0.0, 0.006, 2.861])
    np.testing.assert_allclose(cam[:3, 3], 2.7 * p / np.linalg.norm(p), rtol=0, atol=1e-15)
    np.testing.assert_allclose(cam[:3, 3], [0.0, 0.00566, 2.69999], atol=1e-5)
    np.testing.assert_array_equal(K, intrinsics())


def test_pose_label_pose_round_trip():
    rng = np.random.default_rng(1)
    for _ in range(20):
        rotation = rotation_from_euler(rng.uniform([-25, -60, -20], [25, 60, 20]))
        translation = np.array([*rng.normal(0, 0.1, 2), 0.0])
        back_rotation, back_translation = pose_from_label(label_from_pose(rotation, translation))
        np.testing.assert_allclose(back_rotation, rotation, atol=1e-12)
        np.testing.assert_allclose(back_translation, translation, atol=1e-10)


def test_official_label_round_trips_and_reads_as_documented(fixtures_dir):
    label = official_label(fixtures_dir)
    np.testing.assert_allclose(label_from_pose(*pose_from_label(label)), label, atol=1e-6)
    yaw, pitch, roll = lookat_angles(split_label(label)[0])
    # The facts: about h = pi/2 + 0.54 and v = pi/2 - 0.16, with a small roll.
    assert abs(math.radians(yaw) - 0.54) < 0.01 and abs(math.radians(pitch) - 0.16) < 0.01
    assert abs(roll) < 3.0


def test_euler_angles_round_trip_and_geodesic_angle():
    angles = np.array([12.0, -35.0, 4.0])
    rotation = rotation_from_euler(angles)
    np.testing.assert_allclose(euler_from_rotation(rotation), angles, atol=1e-10)
    np.testing.assert_allclose(rotation_angle_deg(rotation_from_euler([0, 10, 0]), np.eye(3)), 10.0, atol=1e-10)
