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
    residual: float
    """RMS reprojection error of the fitted points, in crop pixels."""

    @functools.cached_property
    def _angles(self) -> np.ndarray:
        # Only when asked for: the per-frame path needs the label, not these.
        return lookat_angles(split_label(label_from_pose(self.rotation, self.translation))[0])

    @property
    def yaw(self) -> float:
        """Degrees: LookAt yaw of the resulting camera (positive = camera towards the subject's left)."""
        return float(self._angles[0])

    @property
    def pitch(self) -> float:
        """Degrees: LookAt pitch of the resulting camera (positive = camera above the face)."""
        return float(self._angles[1])

    @property
    def roll(self) -> float:
        """Degrees: camera roll about its optical axis."""
        return float(self._angles[2])


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


#: The Newton iteration stops with a step that moves no parameter (radians, mean-face units) by more than this:
#: convergence is quadratic, so what is left after it is of the order of its square.
FINAL_STEP = 1e-5
#: At most this many trial steps (the fits seen take 3 to 5).
MAX_STEPS = 50


@dataclass(frozen=True)
class FitTerms:
    """What a Newton step needs at one pose: the cost and its first and second derivatives in the six
    parameters (rotation increment on the left of the current rotation, translation increment)."""

    cost: float
    """Sum of squared residuals, px^2."""
    gradient: np.ndarray
    """[6] J^T r."""
    gauss_newton: np.ndarray
    """[6, 6] J^T J."""
    second_order: np.ndarray
    """[6, 6] sum_i r_i Hess(r_i): needed for quadratic convergence, as the residuals are several px."""


def solve_head_pose(
    landmarks: np.ndarray, crop_size: int = 512, points: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit (R, t) so that the projected mean face matches the landmarks (least squares in crop pixels).

    A weak-perspective linear fit gives the start; Newton's method with the exact Hessian of the squared
    residuals then refines a rotation increment (axis-angle, applied on the left of the current rotation)
    and the translation, damped (Levenberg-Marquardt) where the Hessian is not positive definite or a step
    would not lower the cost. Each fit starts from its own landmarks only, so a frame's pose never depends
    on its neighbours.

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
    rotation, translation = weak_perspective_start(model, target, crop_size)
    terms = fit_terms(model, target, rotation, translation, crop_size)
    damping = 0.0
    for _ in range(MAX_STEPS):
        hessian = terms.gauss_newton + terms.second_order
        if damping:
            hessian = hessian + damping * np.diag(np.diag(terms.gauss_newton))
        try:
            np.linalg.cholesky(hessian)  # Newton's step only where the model has a minimum
        except np.linalg.LinAlgError:
            damping = max(10.0 * damping, 1e-3)
            continue
        step = -np.linalg.solve(hessian, terms.gradient)
        size = float(np.abs(step).max())
        moved = rotation_from_vector(step[:3]) @ rotation, translation + step[3:]
        if damping == 0.0 and size <= FINAL_STEP:
            rotation, translation = moved
            break
        trial = fit_terms(model, target, *moved, crop_size)
        if trial.cost <= terms.cost:
            (rotation, translation), terms = moved, trial
            damping = damping / 10.0 if damping > 1e-6 else 0.0
        elif size < 1e-15:  # no step lowers the cost any more: rounding noise
            break
        else:
            damping = max(10.0 * damping, 1e-3)
    residuals = project(model, rotation, translation, crop_size) - target
    return rotation, translation, float(np.sqrt(np.mean(np.sum(residuals**2, axis=1))))


def fit_terms(model: np.ndarray, target: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
              crop_size: int) -> FitTerms:
    """Cost, gradient and Hessian parts of the reprojection fit at (R, t), analytically.

    With q = R m a model point turned, the camera point is p = exp([d]) q + t + e for a rotation increment
    d and a translation increment e; at d = e = 0, dp = d x q + e, so the derivative of any a . p is the
    row [q x a, a] ("lifted" a). A residual is u - target with u = c + f X / (10 - Z), or c - f Y / (10 - Z)
    for v. Its second derivative has a part through the projection (u is curved in X and Z) and one
    through the rotation (exp([d]) q = q + d x q + d x (d x q) / 2 + ...).
    """
    focal, center = FOCAL * crop_size, (crop_size - 1) / 2.0
    turned = model @ rotation.T
    camera = turned + translation
    inverse_depth = 1.0 / (DEEP3D_CAMERA_DISTANCE - camera[:, 2])
    scale = focal * inverse_depth  # f / D
    x_z = scale * camera[:, 0] * inverse_depth  # du/dZ = f X / D^2
    y_z = scale * camera[:, 1] * inverse_depth  # -dv/dZ
    residual_u = center + scale * camera[:, 0] - target[:, 0]
    residual_v = center - scale * camera[:, 1] - target[:, 1]
    # Per point, the 3-vectors to lift: du/dp, dv/dp, then c and e_z such that the residual-weighted
    # second derivatives of the projection, sum over u, v of r Hess_p, are c e_z^T + e_z c^T.
    vectors = np.zeros((4, len(model), 3))
    vectors[0, :, 0], vectors[0, :, 2] = scale, x_z
    vectors[1, :, 1], vectors[1, :, 2] = -scale, -y_z
    vectors[2, :, 0] = residual_u * scale * inverse_depth
    vectors[2, :, 1] = -residual_v * scale * inverse_depth
    vectors[2, :, 2] = (residual_u * x_z - residual_v * y_z) * inverse_depth
    vectors[3, :, 2] = 1.0
    # Lifted rows [q x a, a], with the residual appended to the Jacobian's rows: one product then gives
    # J^T J, J^T r and r^T r.
    rows = np.zeros((4, len(model), 7))
    rows[..., 3:6] = vectors
    q_x, q_y, q_z = turned[:, 0], turned[:, 1], turned[:, 2]
    rows[..., 0] = q_y * vectors[..., 2] - q_z * vectors[..., 1]
    rows[..., 1] = q_z * vectors[..., 0] - q_x * vectors[..., 2]
    rows[..., 2] = q_x * vectors[..., 1] - q_y * vectors[..., 0]
    rows[0, :, 6], rows[1, :, 6] = residual_u, residual_v
    jacobian = rows[:2].reshape(-1, 7)
    products = jacobian.T @ jacobian
    projection = rows[2, :, :6].T @ rows[3, :, :6]
    # The rotation's own curvature, weighted by b = r_u du/dp + r_v dv/dp: sum (b q^T + q b^T) / 2 - (b . q) I.
    turning = (residual_u[:, None] * vectors[0] + residual_v[:, None] * vectors[1]).T @ turned
    second_order = projection + projection.T
    second_order[:3, :3] += 0.5 * (turning + turning.T) - np.trace(turning) * np.eye(3)
    return FitTerms(cost=float(products[6, 6]), gradient=products[:6, 6], gauss_newton=products[:6, :6],
                     second_order=second_order)


def rotation_from_vector(vector: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (Rodrigues' formula).

    Args:
        vector: [3] axis times angle in radians.

    Returns:
        [3, 3] rotation.
    """
    angle = float(np.sqrt(vector @ vector))
    x, y, z = vector
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])
    if angle < 1e-6:  # the series to the order that float64 resolves there
        return np.eye(3) + cross + 0.5 * (cross @ cross)
    return np.eye(3) + (np.sin(angle) / angle) * cross + ((1.0 - np.cos(angle)) / angle**2) * (cross @ cross)


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
    return label_from_pose(rotation, translation), HeadPose(rotation=rotation, translation=translation, residual=rms)


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
    (a0, a1, a2), (b0, b1, b2) = unit
    # Their cross product, written out (numpy's `cross` costs a third of this function).
    u, _, vt = np.linalg.svd(np.array([unit[0], unit[1], [a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0]]))
    rotation = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    depth = focal / float(norms.mean())
    translation = np.array([*(affine[3] * depth / focal), DEEP3D_CAMERA_DISTANCE - depth])
    return rotation, translation
