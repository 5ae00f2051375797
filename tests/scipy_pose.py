"""The head-pose fit as it was before issue 19's speed-up: scipy's Levenberg-Marquardt (MINPACK) with a
finite-difference Jacobian. Run to convergence it is the reference the Newton solver must match (tests); with
scipy's default tolerances, as the package used it, it is the baseline of `bench/align_stage.py`."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import label_from_pose
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
