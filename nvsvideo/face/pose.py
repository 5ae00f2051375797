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
from collections.abc import Callable
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
    parameters (rotation increment on the left of the current rotation, translation increment).

    With a robust loss the cost is the sum of rho(r) (r^2 within the loss's scale), `gradient` and the
    Hessian parts are half its derivatives: rho'(r)/2 takes the place of r, rho''(r)/2 weighs J^T J."""

    cost: float
    """Sum of squared residuals (or their robust loss), px^2."""
    gradient: np.ndarray
    """[6] J^T r."""
    gauss_newton: np.ndarray
    """[6, 6] J^T J."""
    second_order: np.ndarray
    """[6, 6] sum_i r_i Hess(r_i): needed for quadratic convergence, as the residuals are several px."""
    scaling: np.ndarray
    """[6] diag(J^T J) of all residuals, the damping's scale per parameter (Marquardt's). Not `gauss_newton`'s
    diagonal: with a robust loss that can be zero (every residual a parameter moves beyond the loss's scale),
    and damping would then not make the Hessian positive definite."""


@dataclass(frozen=True)
class Linearized:
    """Residuals of a pose fit at one pose, with what their derivatives in the six parameters need."""

    residuals: np.ndarray
    """[M] px."""
    jacobian: np.ndarray
    """[6, M] d residual / d parameter, transposed (rows: the parameters)."""
    second_order: Callable[[np.ndarray], np.ndarray]
    """Weights w [M] -> sum_i w_i Hess(r_i) [6, 6]."""


def solve_head_pose(
    landmarks: np.ndarray, crop_size: int = 512, points: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit (R, t) so that the projected mean face matches the landmarks (least squares in crop pixels).

    A weak-perspective linear fit gives the start, `newton_fit` refines it. Each fit starts from its own
    landmarks only, so a frame's pose never depends on its neighbours.

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
    rotation, translation = newton_fit(lambda r, t: fit_terms(model, target, r, t, crop_size),
                                       *weak_perspective_start(model, target, crop_size))
    residuals = project(model, rotation, translation, crop_size) - target
    return rotation, translation, float(np.sqrt(np.mean(np.sum(residuals**2, axis=1))))


def newton_fit(terms_at: Callable[[np.ndarray, np.ndarray], FitTerms], rotation: np.ndarray,
               translation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimise a cost of the pose from (R, t) by Newton's method with its exact Hessian.

    The step is a rotation increment (axis-angle, applied on the left of the current rotation) and a
    translation increment, damped (Levenberg-Marquardt) where the Hessian is not positive definite or a
    step would not lower the cost.

    Args:
        terms_at: the cost's `FitTerms` at a pose (R [3, 3], t [3]).
        rotation: [3, 3] start.
        translation: [3] start.

    Returns:
        rotation [3, 3] and translation [3] at the minimum.
    """
    terms = terms_at(rotation, translation)
    damping = 0.0
    for _ in range(MAX_STEPS):
        hessian = terms.gauss_newton + terms.second_order
        if damping:
            hessian = hessian + damping * np.diag(terms.scaling)
        try:
            np.linalg.cholesky(hessian)  # Newton's step only where the model has a minimum
        except np.linalg.LinAlgError:
            damping = max(10.0 * damping, 1e-3)
            continue
        step = -np.linalg.solve(hessian, terms.gradient)
        size = float(np.abs(step).max())
        moved = rotation_from_vector(step[:3]) @ rotation, translation + step[3:]
        if damping == 0.0 and size <= FINAL_STEP:
            return moved
        trial = terms_at(*moved)
        if trial.cost <= terms.cost:
            (rotation, translation), terms = moved, trial
            damping = damping / 10.0 if damping > 1e-6 else 0.0
        elif size < 1e-15:  # no step lowers the cost any more: rounding noise
            break
        else:
            damping = max(10.0 * damping, 1e-3)
    return rotation, translation


def robust_loss(residuals: np.ndarray, scale: float | None) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Huber's loss of residuals and its derivatives, in the scaling of squares.

    Args:
        residuals: [M].
        scale: beyond it a residual counts linearly (rho = 2 scale |r| - scale^2), within it as r^2;
            None: squares everywhere.

    Returns:
        the summed loss; rho'/2 per residual (r clipped to +-scale) [M]; rho''/2 per residual (1 within the
        scale, 0 beyond) [M], or None for squares (1 everywhere).
    """
    if scale is None:
        return float(residuals @ residuals), residuals, None
    influence = np.minimum(np.maximum(residuals, -scale), scale)  # np.clip's overhead is twice this
    # influence (2 r - influence) is r^2 within the scale and 2 scale |r| - scale^2 beyond.
    cost = float(influence @ (2.0 * residuals - influence))
    return cost, influence, (np.abs(residuals) <= scale).astype(np.float64)


def fit_terms(model: np.ndarray, target: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
              crop_size: int) -> FitTerms:
    """Cost, gradient and Hessian parts of the least-squares reprojection fit at (R, t), analytically."""
    return combined_terms([linearized_projection(model, target, rotation, translation, crop_size)], None)


def combined_terms(parts: list[Linearized], huber: float | None) -> FitTerms:
    """`FitTerms` of the sum of the loss of all the parts' residuals.

    Args:
        parts: residuals at one pose, with their derivatives.
        huber: the scale of a Huber loss on each residual (`robust_loss`); None for least squares.
    """
    if len(parts) == 1:
        residuals, jacobian = parts[0].residuals, parts[0].jacobian
    else:
        residuals = np.concatenate([part.residuals for part in parts])
        jacobian = np.concatenate([part.jacobian for part in parts], axis=1)
    cost, influence, curvature = robust_loss(residuals, huber)
    if curvature is None:
        gauss_newton = jacobian @ jacobian.T
        scaling = np.diag(gauss_newton)
    else:
        gauss_newton, scaling = (jacobian * curvature) @ jacobian.T, (jacobian * jacobian).sum(1)
    second_order, start = np.zeros((6, 6)), 0
    for part in parts:
        second_order += part.second_order(influence[start: start + len(part.residuals)])
        start += len(part.residuals)
    return FitTerms(cost=cost, gradient=jacobian @ influence, gauss_newton=gauss_newton, second_order=second_order,
                    scaling=scaling)


def linearized_projection(model: np.ndarray, target: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
                          crop_size: int) -> Linearized:
    """The reprojection residuals [2N] (all u, then all v) of model points [N, 3] against target [N, 2] at (R, t).

    With q = R m a model point turned, the camera point is p = exp([d]) q + t + e for a rotation increment
    d and a translation increment e; at d = e = 0, dp = d x q + e, so the derivative of any a . p is the
    row [q x a, a] ("lifted" a). A residual is u - target with u = c + f X / D, or c - f Y / D for v
    (D = 10 - Z): du/dp = (f / D, 0, f X / D^2), dv/dp = (0, -f / D, -f Y / D^2). Its second derivative has a
    part through the projection (u is curved in X and Z) and one through the rotation
    (exp([d]) q = q + d x q + d x (d x q) / 2 + ...).
    """
    focal, center = FOCAL * crop_size, (crop_size - 1) / 2.0
    turned = rotation @ model.T  # [3, N]
    q_x, q_y, q_z = turned
    camera_x, camera_y = q_x + translation[0], q_y + translation[1]
    inverse_depth = 1.0 / (DEEP3D_CAMERA_DISTANCE - translation[2] - q_z)
    scale = focal * inverse_depth  # f / D
    x_z = scale * camera_x * inverse_depth  # du/dZ
    y_z = scale * camera_y * inverse_depth  # -dv/dZ
    residuals = np.empty((2, len(model)))
    residuals[0] = center + scale * camera_x - target[:, 0]
    residuals[1] = center - scale * camera_y - target[:, 1]
    jacobian = np.zeros((6, 2, len(model)))  # lifted du/dp, dv/dp
    jacobian[0, 0], jacobian[1, 0], jacobian[2, 0] = q_y * x_z, q_z * scale - q_x * x_z, -q_y * scale
    jacobian[3, 0], jacobian[5, 0] = scale, x_z
    jacobian[0, 1], jacobian[1, 1], jacobian[2, 1] = q_z * scale - q_y * y_z, q_x * y_z, -q_x * scale
    jacobian[4, 1], jacobian[5, 1] = -scale, -y_z
    flat = jacobian.reshape(6, -1)
    # The weighted second derivatives of the projection, sum over u, v of w Hess_p, are c e_z^T + e_z c^T with
    # c = (w_u du/dp + w_v dv/dp) / D; the rotation's own curvature is weighted by b = w_u du/dp + w_v dv/dp.
    # Both sums over the points, of lifted c times lifted e_z = [q_y, -q_x, 0, 0, 0, 1] and of b q^T, are one
    # product of the weighted Jacobian with these columns per point: lifted e_z's nonzero entries / D, then q.
    columns = np.empty((len(model), 6))
    columns[:, 0], columns[:, 1], columns[:, 2] = q_y * inverse_depth, -q_x * inverse_depth, inverse_depth
    columns[:, 3:] = turned.T

    def second_order(weights: np.ndarray) -> np.ndarray:
        sums = (jacobian * weights.reshape(2, -1)).sum(1) @ columns
        total = np.zeros((6, 6))
        total[:, 0], total[:, 1], total[:, 5] = sums[:, 0], sums[:, 1], sums[:, 2]
        total += total.T
        total[:3, :3] += rotation_curvature(sums[3:, 3:])
        return total

    return Linearized(residuals=residuals.reshape(-1), jacobian=flat, second_order=second_order)


def rotation_curvature(outer: np.ndarray) -> np.ndarray:
    """Second derivative in a left rotation increment d of sum_i a_i . exp([d]) q_i at d = 0, from the sum of
    outer products sum_i a_i q_i^T [3, 3]: (A + A^T) / 2 - trace(A) I, as d x (d x q) = d (d . q) - q |d|^2."""
    curvature = 0.5 * (outer + outer.T)
    trace = outer[0, 0] + outer[1, 1] + outer[2, 2]  # scalar indexing: a third of np.trace's and np.eye's cost
    curvature[0, 0] -= trace
    curvature[1, 1] -= trace
    curvature[2, 2] -= trace
    return curvature


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
