"""Head pose from 68 landmarks of an aligned crop, and its EG3D camera label.

The pose is a perspective-n-point fit of a 3D mean face (`data/mean_face_68.csv`, derived from the
Apache-2.0 MediaPipe canonical face model and moved into the frame of the official crop's reference
landmarks) to the landmarks, under the camera the official pipeline implies for its crops: focal
4.2647 x crop size, principal point at the crop centre, the face about 10 units away (Deep3D's
camera). The fitted (R, t) then goes through the official conversion (`eg3d.label_from_pose`), so
our labels mean what the official preprocessing's labels mean.

The jaw contour (points 0-16) is left out of the fit: it is a silhouette that slides over the
cheek as the head turns, so no fixed 3D point matches it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import DEEP3D_CAMERA_DISTANCE, FOCAL, label_from_pose, lookat_angles, split_label

#: Landmarks used in the fit: brows, nose, eyes and mouth (not the jaw silhouette).
POSE_POINTS = np.arange(17, 68)


@dataclass(frozen=True, eq=False)
class HeadPose:
    """A fitted head pose and how well it explains the landmarks."""

    rotation: np.ndarray
    """[3, 3] R: face frame to Deep3D's camera frame (y up, camera looking down -z)."""
    translation: np.ndarray
    """[3] t in mean-face units; the face sits at depth 10 - t_z from the camera."""
    yaw: float
    """Degrees: LookAt yaw of the resulting camera (positive = camera towards the subject's left)."""
    pitch: float
    """Degrees: LookAt pitch of the resulting camera (positive = camera above the face)."""
    roll: float
    """Degrees: camera roll about its optical axis."""
    residual: float
    """RMS reprojection error of the fitted points, in crop pixels."""


@functools.cache
def mean_face() -> np.ndarray:
    """The 68-point 3D mean face (read-only).

    Returns:
        [68, 3] points (x = subject's left, y = up, z = out of the face) in the units of the official
        crop's reference landmarks.
    """
    text = files("nvsvideo.face").joinpath("data/mean_face_68.csv").read_text()
    points = np.loadtxt(text.splitlines(), delimiter=",", comments="#", usecols=(0, 1, 2))
    assert points.shape == (68, 3), points.shape
    points.setflags(write=False)
    return points


def project(points: np.ndarray, rotation: np.ndarray, translation: np.ndarray, crop_size: int = 512) -> np.ndarray:
    """Project face points into the crop through Deep3D's camera at the official focal length.

    Args:
        points: [N, 3] face-frame points.
        rotation: [3, 3] head rotation R.
        translation: [3] head translation t.
        crop_size: crop side in pixels.

    Returns:
        [N, 2] (x right, y down) crop pixels, pixel centres at integers.
    """
    camera = points @ rotation.T + translation
    depth = DEEP3D_CAMERA_DISTANCE - camera[:, 2]
    focal, center = FOCAL * crop_size, (crop_size - 1) / 2.0
    return np.stack([center + focal * camera[:, 0] / depth, center - focal * camera[:, 1] / depth], axis=1)


def solve_head_pose(
    landmarks: np.ndarray, crop_size: int = 512, points: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit (R, t) so that the projected mean face matches the landmarks.

    A weak-perspective linear fit gives the start; Levenberg-Marquardt then refines a rotation
    increment (axis-angle, applied on the left of the start rotation) and the translation.

    Args:
        landmarks: [68, 2] crop pixels (x right, y down).
        crop_size: crop side in pixels.
        points: [68, 3] 3D model; the built-in mean face if None.

    Returns:
        rotation [3, 3], translation [3], RMS residual in pixels over `POSE_POINTS`.
    """
    assert landmarks.shape == (68, 2), landmarks.shape
    model = (mean_face() if points is None else points)[POSE_POINTS]
    target = np.asarray(landmarks, dtype=np.float64)[POSE_POINTS]
    start_rotation, start_translation = weak_perspective_start(model, target, crop_size)

    def residuals(x: np.ndarray) -> np.ndarray:
        rotation = Rotation.from_rotvec(x[:3]).as_matrix() @ start_rotation
        return (project(model, rotation, x[3:], crop_size) - target).ravel()

    fit = least_squares(residuals, np.concatenate([np.zeros(3), start_translation]), method="lm")
    rotation = Rotation.from_rotvec(fit.x[:3]).as_matrix() @ start_rotation
    rms = float(np.sqrt(np.mean(fit.fun.reshape(-1, 2) ** 2) * 2))
    return rotation, fit.x[3:], rms


def estimate_label(
    landmarks: np.ndarray, crop_size: int = 512, points: np.ndarray | None = None
) -> tuple[np.ndarray, HeadPose]:
    """EG3D camera label of an aligned crop from its 68 landmarks.

    Args:
        landmarks: [68, 2] landmarks in crop pixels (x right, y down, pixel centres at integers).
        crop_size: crop side in pixels (512 for the official crop).
        points: [68, 3] 3D model; the built-in mean face if None.

    Returns:
        label [25] (official format: cam2world row-major, then K with f = 4.2647) and the pose.
    """
    rotation, translation, rms = solve_head_pose(landmarks, crop_size, points)
    label = label_from_pose(rotation, translation)
    yaw, pitch, roll = lookat_angles(split_label(label)[0])
    pose = HeadPose(
        rotation=rotation,
        translation=translation,
        yaw=float(yaw),
        pitch=float(pitch),
        roll=float(roll),
        residual=rms,
    )
    return label, pose


def weak_perspective_start(
    model: np.ndarray, target: np.ndarray, crop_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form start: an affine camera fitted by least squares, made a rotation and a depth.

    Args:
        model: [N, 3] face points.
        target: [N, 2] crop pixels.
        crop_size: crop side in pixels.

    Returns:
        rotation [3, 3] and translation [3].
    """
    focal, center = FOCAL * crop_size, (crop_size - 1) / 2.0
    # Camera-plane coordinates with y up, as the rotation's rows expect.
    image = np.stack([target[:, 0] - center, center - target[:, 1]], axis=1)
    design = np.concatenate([model, np.ones((len(model), 1))], axis=1)
    affine, *_ = np.linalg.lstsq(design, image, rcond=None)  # [4, 2]
    rows = affine[:3].T  # [2, 3]: scale * first two rows of R
    norms = np.linalg.norm(rows, axis=1)
    unit = rows / norms[:, None]
    u, _, vt = np.linalg.svd(np.stack([unit[0], unit[1], np.cross(unit[0], unit[1])]))
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    depth = focal / float(norms.mean())
    translation = np.array([*(affine[3] * depth / focal), DEEP3D_CAMERA_DISTANCE - depth])
    return rotation, translation
