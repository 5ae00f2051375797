"""Head pose from 68 landmarks: synthetic projections of the mean face, the official example crop, the fit's
derivatives against finite differences, and real landmarks against scipy's converged fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy_pose import scipy_head_pose

from nvsvideo.cameras.eg3d import (
    euler_from_rotation,
    label_from_pose,
    lookat_angles,
    pose_from_label,
    rotation_angle_deg,
    rotation_from_euler,
    split_label,
)
from nvsvideo.face.pose import (
    POSE_POINTS,
    estimate_label,
    fit_terms,
    mean_face,
    project,
    rotation_from_vector,
    solve_head_pose,
)


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


@pytest.mark.parametrize("vector", [[0.0, 0.0, 0.0], [3e-9, -1e-8, 2e-9], [2e-4, 1e-3, -5e-4], [0.3, -1.2, 0.8],
                                    [0.0, 3.0, 0.0]])
def test_rotation_from_vector_is_scipys_rotvec(vector):
    from scipy.spatial.transform import Rotation

    np.testing.assert_allclose(rotation_from_vector(np.array(vector)), Rotation.from_rotvec(vector).as_matrix(),
                               rtol=0, atol=1e-15)


def _increment_residuals(model, target, rotation, translation, crop_size):
    """Residuals [2N] (u, then v) as functions of the six fit parameters at (R, t), through scipy's rotations."""
    from scipy.spatial.transform import Rotation

    def residuals(x: np.ndarray) -> np.ndarray:
        moved = Rotation.from_rotvec(x[:3]).as_matrix() @ rotation
        return (project(model, moved, translation + x[3:], crop_size) - target).T.ravel()

    return residuals


@pytest.mark.parametrize("crop_size", [512, 1024])
def test_fit_terms_match_finite_differences(crop_size):
    """The analytic Jacobian (through J^T J and J^T r) and the exact Hessian against central differences."""
    rng = np.random.default_rng(3)
    model = mean_face()[POSE_POINTS]
    rotation, translation = rotation_from_euler([12.0, -30.0, 7.0]), np.array([0.04, -0.02, 0.3])
    # Several px off, as real landmarks are, so that the residual-weighted second derivatives matter.
    target = project(model, rotation_from_euler([10.0, -27.0, 4.0]), np.array([0.05, 0.0, 0.1]), crop_size)
    target = target + rng.normal(0.0, 4.0 * crop_size / 512, target.shape)
    residuals = _increment_residuals(model, target, rotation, translation, crop_size)
    terms = fit_terms(model, target, rotation, translation, crop_size)

    step = 1e-6
    jacobian = np.stack([(residuals(step * e) - residuals(-step * e)) / (2 * step) for e in np.eye(6)], axis=1)
    r = residuals(np.zeros(6))
    assert terms.cost == pytest.approx(r @ r, rel=1e-12)
    np.testing.assert_allclose(terms.gradient, jacobian.T @ r, rtol=1e-6, atol=1e-6 * np.abs(jacobian.T @ r).max())
    gauss_newton = jacobian.T @ jacobian
    np.testing.assert_allclose(terms.gauss_newton, gauss_newton, rtol=1e-6, atol=1e-7 * np.abs(gauss_newton).max())

    def half_cost(x: np.ndarray) -> float:
        values = residuals(x)
        return 0.5 * float(values @ values)

    h = 1e-4
    basis = h * np.eye(6)
    hessian = np.array([[(half_cost(a + b) - half_cost(a - b) - half_cost(b - a) + half_cost(-a - b)) / (4 * h * h)
                         for b in basis] for a in basis])
    full = terms.gauss_newton + terms.second_order
    np.testing.assert_allclose(full, hessian, rtol=1e-4, atol=1e-5 * np.abs(hessian).max())
    # The second-order part is not negligible here: without it the check above would fail.
    assert np.abs(terms.second_order).max() > 1e-3 * np.abs(hessian).max()


@pytest.fixture(scope="module")
def real_crop_landmarks(fixtures_dir) -> list[tuple[np.ndarray, int]]:
    """dlib's 68 points in the 512 crops of real faces: frames of the talking-face clip, the faces of the group
    photo, and the official example crop (at its own size)."""
    pytest.importorskip("dlib")
    from PIL import Image

    from nvsvideo.face.backends.dlib_backend import DlibBackend
    from nvsvideo.face.crop import crop_transform_from_landmarks, points_to_crop
    from nvsvideo.video import VideoReader

    backend = DlibBackend()
    images = [batch.frames[0] for batch in VideoReader(fixtures_dir / "single_face.mp4", batch_size=9)]
    images.append(np.asarray(Image.open(fixtures_dir / "multi_face.jpg").convert("RGB")))
    found = []
    for image in images:
        for face in backend.detect(image[None])[0]:
            tf = crop_transform_from_landmarks(face.landmarks, image.shape[:2])
            found.append((points_to_crop(face.landmarks, tf), tf.output_size))
    example = np.asarray(Image.open(fixtures_dir / "eg3d_example.png").convert("RGB"))
    found.extend((face.landmarks, example.shape[0]) for face in backend.detect(example[None])[0])
    assert len(found) >= 12
    return found


def test_pose_fit_of_real_landmarks_matches_scipys_converged_fit(real_crop_landmarks):
    model = mean_face()[POSE_POINTS]
    for landmarks, crop_size in real_crop_landmarks:
        rotation, translation, rms = solve_head_pose(landmarks, crop_size)
        ref_rotation, ref_translation, ref_residuals = scipy_head_pose(landmarks, crop_size, converged=True)
        residuals = project(model, rotation, translation, crop_size) - landmarks[POSE_POINTS]
        # scipy's method converges only linearly on residuals this large (several px) and stops ~1e-6 px short.
        np.testing.assert_allclose(residuals, ref_residuals, rtol=0, atol=2e-6)
        np.testing.assert_allclose(label_from_pose(rotation, translation), label_from_pose(ref_rotation, ref_translation),
                                   rtol=0, atol=1e-7)
        assert rms == pytest.approx(float(np.sqrt(np.mean(np.sum(ref_residuals**2, axis=1)))), abs=1e-9)
        # And ours is the nearer to the optimum: its gradient is the smaller (about 1e-4 of the reference's).
        gradient = fit_terms(model, landmarks[POSE_POINTS], rotation, translation, crop_size).gradient
        ref_gradient = fit_terms(model, landmarks[POSE_POINTS], ref_rotation, ref_translation, crop_size).gradient
        assert np.abs(gradient).max() <= max(np.abs(ref_gradient).max(), 1e-6)


@pytest.mark.parametrize("case", ["eight times too large", "mirrored", "random points"])
def test_pose_fit_of_unfacelike_landmarks_matches_scipys_converged_fit(case):
    """Far from a normal crop the Newton steps need damping (the first case: the Hessian is not positive
    definite at the start and steps get rejected); the fit must still reach scipy's optimum."""
    face = project(mean_face(), np.eye(3), np.zeros(3))
    landmarks = {"eight times too large": (face - 255.5) * 8 + 255.5,
                 "mirrored": np.column_stack([511 - face[:, 0], face[:, 1]]),
                 "random points": np.random.default_rng(5).uniform(0, 512, (68, 2))}[case]
    rotation, translation, rms = solve_head_pose(landmarks)
    ref_rotation, ref_translation, ref_residuals = scipy_head_pose(landmarks, converged=True)
    np.testing.assert_allclose(label_from_pose(rotation, translation), label_from_pose(ref_rotation, ref_translation),
                               rtol=0, atol=1e-6)
    assert rms <= float(np.sqrt(np.mean(np.sum(ref_residuals**2, axis=1)))) * (1 + 1e-9)
