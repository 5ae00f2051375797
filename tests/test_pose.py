"""Head pose from 68 landmarks: synthetic projections of the mean face, and the official example crop."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nvsvideo.cameras.eg3d import (
    euler_from_rotation,
    label_from_pose,
    lookat_angles,
    pose_from_label,
    rotation_angle_deg,
    rotation_from_euler,
    split_label,
)
from nvsvideo.face.pose import estimate_label, mean_face, project


def test_mean_face_is_in_the_official_reference_frame():
    points = mean_face()
    assert points.shape == (68, 3) and not points.flags.writeable
    left_eye, right_eye = points[42:48].mean(0), points[36:42].mean(0)
    assert left_eye[0] > 0 > right_eye[0]  # +x is the subject's left
    assert 0.55 < np.linalg.norm(left_eye - right_eye) < 0.7  # the reference eyes are 0.62 apart
    assert points[30, 2] > points[36:48, 2].max()  # the nose tip is in front of the eyes (+z)
    assert points[8, 1] < points[57, 1] < points[30, 1] < points[27, 1]  # chin, lip, nose, bridge: upwards


def test_projection_of_the_frontal_face_is_centred():
    uv = project(mean_face(), np.eye(3), np.zeros(3))
    centre = (512 - 1) / 2
    assert uv[27, 0] == pytest.approx(centre, abs=2.0)  # nose bridge on the vertical midline
    assert uv[8, 1] > uv[57, 1] > uv[30, 1] > uv[27, 1]  # image y grows downwards


@pytest.mark.parametrize(
    "angles, translation",
    [
        ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]),
        ([10.0, -35.0, 5.0], [0.05, -0.03, 0.2]),
        ([-15.0, 40.0, -8.0], [-0.04, 0.06, -0.3]),
        ([20.0, 15.0, 12.0], [0.0, 0.02, 0.1]),
    ],
)
def test_pose_of_a_synthetic_projection_is_recovered(angles, translation):
    rotation, translation = rotation_from_euler(angles), np.array(translation)
    landmarks = project(mean_face(), rotation, translation)
    label, pose = estimate_label(landmarks)
    assert rotation_angle_deg(pose.rotation, rotation) < 0.5
    assert pose.residual < 1e-3
    np.testing.assert_allclose(label, label_from_pose(rotation, translation), atol=1e-6)
    np.testing.assert_allclose([pose.yaw, pose.pitch, pose.roll], lookat_angles(split_label(label)[0]), atol=1e-9)


def test_pose_survives_landmark_noise():
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(10):
        rotation = rotation_from_euler(rng.uniform([-20, -45, -15], [20, 45, 15]))
        translation = rng.normal(0.0, 0.05, 3)
        landmarks = project(mean_face(), rotation, translation) + rng.normal(0.0, 1.0, (68, 2))
        errors.append(rotation_angle_deg(estimate_label(landmarks)[1].rotation, rotation))
    assert max(errors) < 1.5, errors


def test_official_example_crop_against_its_official_label(fixtures_dir):
    """dlib's 68 points on the official 512 crop -> our label, compared with Deep3DFaceRecon's."""
    dlib = pytest.importorskip("dlib")
    from importlib.resources import files

    from PIL import Image

    predictor_file = files("face_recognition_models") / "models" / "shape_predictor_68_face_landmarks.dat"
    image = np.asarray(Image.open(fixtures_dir / "eg3d_example.png").convert("RGB"))
    faces = dlib.get_frontal_face_detector()(image, 1)
    assert len(faces) == 1
    shape = dlib.shape_predictor(str(predictor_file))(image, faces[0])
    landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    label, pose = estimate_label(landmarks, crop_size=image.shape[0])
    official = np.array(json.loads((fixtures_dir / "eg3d_example_dataset.json").read_text())["labels"][0][1])

    camera_error = lookat_angles(split_label(label)[0]) - lookat_angles(split_label(official)[0])
    ours_rotation, official_rotation = pose_from_label(label)[0], pose_from_label(official)[0]
    head_error = euler_from_rotation(ours_rotation) - euler_from_rotation(official_rotation)
    geodesic = rotation_angle_deg(ours_rotation, official_rotation)
    print(
        f"\neg3d_example.png vs official label: camera yaw/pitch/roll error (LookAt params) "
        f"{camera_error.round(2).tolist()} deg; head rotation pitch/yaw/roll error "
        f"{head_error.round(2).tolist()} deg; geodesic {geodesic:.2f} deg; residual {pose.residual:.2f} px"
    )
    assert np.all(np.abs(head_error) < 5.0)
    assert geodesic < 5.0
    assert abs(camera_error[0]) < 5.0 and abs(camera_error[2]) < 5.0
    # The LookAt pitch parameter is about 1.6x the elevation angle, so it gets a wider bound.
    assert abs(camera_error[1]) < 7.0
