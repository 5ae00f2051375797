"""The head-pose fits as they were before issue 19's speed-ups: scipy's Levenberg-Marquardt (MINPACK) for the 68
points, its trust-region reflective method with a Huber loss for the mesh, both with finite-difference Jacobians.
Run to convergence they are the references the Newton solver must match (tests); with scipy's default tolerances,
as the package used them, they are the baselines of `bench/align_stage.py`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import DEEP3D_CAMERA_DISTANCE, FOCAL, label_from_pose
from nvsvideo.face.mesh_pose import DEPTH_WEIGHT, HUBER_PX, canonical_in_bfm
from nvsvideo.face.pose import POSE_POINTS, HeadPose, mean_face, project, weak_perspective_start


def scipy_head_pose(landmarks: np.ndarray, crop_size: int = 512, *,
                    converged: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, t) of the mean face fitted to 68 crop-pixel landmarks, and the residuals [51, 2] of `POSE_POINTS`.

    `converged`: central differences and tolerances at float precision, instead of the defaults (which stop
    up to ~1e-3 px short of the optimum on real landmarks).
    """
    model, target = mean_face()[POSE_POINTS], np.asarray(landmarks, np.float64)[POSE_POINTS]
    start_rotation, start_translation = weak_perspective_start(model, target, crop_size)

    def residuals(x: np.ndarray) -> np.ndarray:
        return (project(model, Rotation.from_rotvec(x[:3]).as_matrix() @ start_rotation, x[3:], crop_size)
                - target).ravel()

    options = {"jac": "3-point", "xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15} if converged else {}
    fit = least_squares(residuals, np.concatenate([np.zeros(3), start_translation]), method="lm", **options)
    return Rotation.from_rotvec(fit.x[:3]).as_matrix() @ start_rotation, fit.x[3:], fit.fun.reshape(-1, 2)


def scipy_estimate_label(landmarks: np.ndarray, crop_size: int = 512) -> tuple[np.ndarray, HeadPose]:
    """`nvsvideo.face.pose.estimate_label` with the scipy fit at its default tolerances."""
    rotation, translation, residuals = scipy_head_pose(landmarks, crop_size)
    rms = float(np.sqrt(np.mean(np.sum(residuals**2, axis=1))))
    return label_from_pose(rotation, translation), HeadPose(rotation=rotation, translation=translation, residual=rms)


def scipy_mesh_residuals(mesh: np.ndarray, start_rotation: np.ndarray,
                         crop_size: int = 512) -> Callable[[np.ndarray], np.ndarray]:
    """The mesh fit's residuals [2 x 468 image (u, v per point), then 468 relief] as a function of
    (rotation vector on the left of `start_rotation`, translation) [6]."""
    model, target = canonical_in_bfm(), np.asarray(mesh, np.float64)
    depth = -(target[:, 2] - target[:, 2].mean())
    focal = FOCAL * crop_size

    def residuals(x: np.ndarray) -> np.ndarray:
        rotation = Rotation.from_rotvec(x[:3]).as_matrix() @ start_rotation
        image = project(model, rotation, x[3:], crop_size) - target[:, :2]
        camera_z = model @ rotation[2] + x[5]
        pixels_per_unit = focal / (DEEP3D_CAMERA_DISTANCE - camera_z.mean())
        relief = pixels_per_unit * (camera_z - camera_z.mean()) - depth
        return np.concatenate([image.ravel(), DEPTH_WEIGHT * relief])

    return residuals


def scipy_mesh_pose(mesh: np.ndarray, crop_size: int = 512, *,
                    converged: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """`nvsvideo.face.mesh_pose.solve_mesh_pose` as scipy's Huber-loss fit: (R, t), RMS image residual.

    `converged`: central differences and tolerances at float precision, instead of the defaults.
    """
    model = canonical_in_bfm()
    start_rotation, start_translation = weak_perspective_start(model, np.asarray(mesh, np.float64)[:, :2], crop_size)
    options = {"jac": "3-point", "xtol": 1e-15, "ftol": 1e-15, "gtol": 1e-15} if converged else {}
    fit = least_squares(scipy_mesh_residuals(mesh, start_rotation, crop_size),
                        np.concatenate([np.zeros(3), start_translation]), loss="huber", f_scale=HUBER_PX, **options)
    image = fit.fun[: 2 * len(model)].reshape(-1, 2)
    rotation = Rotation.from_rotvec(fit.x[:3]).as_matrix() @ start_rotation
    return rotation, fit.x[3:], float(np.sqrt((image**2).sum(1).mean()))


def scipy_estimate_label_from_mesh(mesh: np.ndarray, crop_size: int = 512) -> tuple[np.ndarray, HeadPose]:
    """`nvsvideo.face.mesh_pose.estimate_label_from_mesh` with the scipy fit at its default tolerances."""
    rotation, translation, rms = scipy_mesh_pose(mesh, crop_size)
    return label_from_pose(rotation, translation), HeadPose(rotation=rotation, translation=translation, residual=rms)
