"""Head pose from MediaPipe's 468 3D mesh points, fitted against its canonical face.

The canonical face (`data/canonical_face_468.csv`, Apache-2.0) is moved into the frame of the
official crop's reference points by a similarity fitted on five of its points (`canonical_in_bfm`),
then turned by one calibrated constant, `CANONICAL_TO_BFM_ROTATION` (see its comment). The pose
(R, t) is fitted under the camera the official crop implies (focal 4.2647 x crop, Deep3D's camera
at distance 10), to every mesh point's image position and to its depth relative to the others,
with a Huber loss so a few misplaced points do not pull the fit, by the Newton solver of the 68-point fit
(`nvsvideo.face.pose`). The result goes through the official conversion (`eg3d.label_from_pose`), like the
68-point pose.
"""

from __future__ import annotations

import functools
from importlib.resources import files

import numpy as np
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import DEEP3D_CAMERA_DISTANCE, FOCAL, label_from_pose
from nvsvideo.face.crop import STANDARD_POINTS_3D, CropTransform, points_to_crop
from nvsvideo.face.pose import (
    FitTerms,
    HeadPose,
    Linearized,
    combined_terms,
    linearized_projection,
    newton_fit,
    project,
    rotation_curvature,
)

#: Mesh vertices behind the five official points: the eye contours (averaged into eye centres), the
#: nose tip and the mouth corners; eyes and mouth corners in image order (subject's right first).
RIGHT_EYE = (33, 160, 158, 133, 153, 144)
LEFT_EYE = (362, 385, 387, 263, 373, 380)
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)

#: The rotation between the canonical face (after `canonical_in_bfm`) and the frame Deep3DFaceRecon's
#: poses are in, as a rotation vector in degrees. The similarity fit on five points cannot set it (the
#: five points are nearly planar, and MediaPipe's face is tilted back relative to BFM's), so it is the
#: one rotation that best maps our fitted poses onto the official labels of the development set
#: (`bench/cameras.py --calibrate` prints it; chordal mean over the seven photos).
CANONICAL_TO_BFM_ROTATION = (2.236, 0.163, 0.667)
#: Weight of the depth residuals against the image residuals: 1, as both are crop pixels. On the development
#: set (each weight with its own calibration) image residuals alone give 3.12° mean rotation error, weights
#: 0.5 to 2 give 2.79-2.81°: the depths help, and their exact weight matters little.
DEPTH_WEIGHT = 1.0
#: Huber scale of the residuals, crop pixels: beyond it a point counts linearly, not quadratically.
HUBER_PX = 2.0


def five_points_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """The official crop's five points from mesh points [468, >=2]: float64 [5, 2] (or [5, 3])."""
    return np.stack([mesh[list(RIGHT_EYE)].mean(0), mesh[list(LEFT_EYE)].mean(0), mesh[NOSE_TIP],
                     mesh[MOUTH_CORNERS[0]], mesh[MOUTH_CORNERS[1]]]).astype(np.float64)


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity target ~ s R source + t (Umeyama 1991).

    Args:
        source: [N, 3].
        target: [N, 3].

    Returns:
        scale s, rotation R [3, 3], translation t [3].
    """
    mu_s, mu_t = source.sum(0) / len(source), target.sum(0) / len(target)  # np.mean's overhead is twice this
    a, b = source - mu_s, target - mu_t
    u, d, vt = np.linalg.svd(b.T @ a / len(a))
    sign = np.sign(np.linalg.det(u @ vt))  # -1: the best orthogonal map is a reflection; flip the weakest axis
    rotation = (u * [1.0, 1.0, sign]) @ vt
    scale = float((d[0] + d[1] + sign * d[2]) / (np.vdot(a, a) / len(a)))
    return scale, rotation, mu_t - scale * rotation @ mu_s


@functools.cache
def canonical_face() -> np.ndarray:
    """MediaPipe's canonical face, [468, 3] centimetres (x = subject's left, y up, z out); read-only."""
    text = files("nvsvideo.face").joinpath("data/canonical_face_468.csv").read_text()
    points = np.loadtxt(text.splitlines(), delimiter=",", comments="#")
    assert points.shape == (468, 3), points.shape
    points.setflags(write=False)
    return points


@functools.cache
def mirror_vertices() -> np.ndarray:
    """Each mesh vertex's mirror partner (itself on the midline): int [468], read-only.

    The canonical face is exactly left-right symmetric, so the partner of a vertex is the vertex at its
    position with x negated; a mesh of a mirrored image, re-indexed by this and mirrored back, is comparable
    vertex by vertex with the mesh of the image.
    """
    points = canonical_face()
    distance = np.linalg.norm(points[None, :, :] - (points * [-1.0, 1.0, 1.0])[:, None, :], axis=2)
    partner = distance.argmin(1)
    assert distance[np.arange(len(points)), partner].max() < 1e-6, "the canonical face is not symmetric"
    partner.setflags(write=False)
    return partner


@functools.cache
def canonical_in_bfm() -> np.ndarray:
    """The canonical face in the official crop's reference frame and units, calibration included.

    Returns:
        [468, 3] read-only.
    """
    points = canonical_face()
    scale, rotation, shift = umeyama(five_points_from_mesh(points), STANDARD_POINTS_3D)
    calibration = Rotation.from_rotvec(np.radians(CANONICAL_TO_BFM_ROTATION)).as_matrix()
    moved = (scale * points @ rotation.T + shift) @ calibration.T
    moved.setflags(write=False)
    return moved


def solve_mesh_pose(mesh: np.ndarray, crop_size: int = 512,
                    model: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit (R, t) so that the model face, seen through the official camera, matches the mesh.

    The cost is Huber's loss (`HUBER_PX`) of every point's two image residuals and of its `DEPTH_WEIGHT`-weighted
    relief residual (`linearized_relief`), minimised by `pose.newton_fit` (the analytic derivatives, the exact
    Hessian) from `orthographic_start`: the mesh's own points only, no state from other frames.

    Args:
        mesh: [468, 3] crop pixels: x right, y down, z on the x scale (smaller = nearer).
        crop_size: crop side in pixels.
        model: [468, 3] face points; `canonical_in_bfm()` if None.

    Returns:
        rotation [3, 3], translation [3], RMS image residual in crop pixels over all points.
    """
    model = canonical_in_bfm() if model is None else model
    target = np.asarray(mesh, np.float64)
    image_target = target[:, :2]
    depth = -(target[:, 2] - target[:, 2].mean())  # nearer = larger, as the camera frame's z

    def terms_at(rotation: np.ndarray, translation: np.ndarray) -> FitTerms:
        return combined_terms([linearized_projection(model, image_target, rotation, translation, crop_size),
                               linearized_relief(model, depth, rotation, translation, crop_size)], HUBER_PX)

    rotation, translation = newton_fit(terms_at, *orthographic_start(model, target, crop_size))
    image = project(model, rotation, translation, crop_size) - image_target
    return rotation, translation, float(np.sqrt(np.vdot(image, image) / len(image)))


def orthographic_start(model: np.ndarray, mesh: np.ndarray, crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form start: the similarity that best maps the model onto the mesh in 3D (`umeyama`), made a pose.

    The mesh's depths pin the head's pitch, which the image positions alone leave loose (the 2D
    `pose.weak_perspective_start` is 3-5 degrees off the optimum on real meshes, this one under 1).

    Args:
        model: [N, 3] face points.
        mesh: [N, 3] crop pixels: x right, y down, z on the x scale (smaller = nearer).
        crop_size: crop side in pixels.

    Returns:
        rotation [3, 3] and translation [3].
    """
    center = (crop_size - 1) / 2.0
    camera = np.column_stack([mesh[:, 0] - center, center - mesh[:, 1], mesh[:, 2].mean() - mesh[:, 2]])
    scale, rotation, shift = umeyama(model, camera)  # scale: pixels per model unit, f / depth of the centroid
    # camera ~ scale (R m + t): t = shift / scale in x and y; in z the centroid's depth 10 - (R mean(m) + t)_z is
    # f / scale, and (R mean(m))_z = -shift_z / scale as the mesh's depths have mean 0.
    translation = shift / scale
    translation[2] += DEEP3D_CAMERA_DISTANCE - FOCAL * crop_size / scale
    return rotation, translation


def linearized_relief(model: np.ndarray, depth: np.ndarray, rotation: np.ndarray, translation: np.ndarray,
                      crop_size: int) -> Linearized:
    """Each point's relief residual [N] at (R, t): its camera depth relative to the points' mean, in crop pixels
    at the face's mean depth, minus the mesh's `depth` (relative to its mean, nearer = larger), x DEPTH_WEIGHT.

    With q_i = R m_i, u_i = q_i - mean(q) and a_i = u_i . e_z, the residual is w (k a_i - depth_i), where
    k = f / (10 - Z) is the scale at the mean camera depth Z = mean(q) . e_z + t_z. Derivatives in the rotation
    increment d and translation increment e (as in `pose.linearized_projection`): da_i = [u_i x e_z, 0],
    dZ = g = [mean(q) x e_z, e_z], dk = k g / (10 - Z); second derivatives of a_i and Z through the rotation
    (`pose.rotation_curvature`), and of k: 2 k g g^T / (10 - Z)^2 + k Hess(Z) / (10 - Z).
    """
    turned = rotation @ model.T  # [3, N]
    centre = turned.sum(1) / len(model)  # np.mean's overhead is twice this
    centred = turned - centre[:, None]
    distance = DEEP3D_CAMERA_DISTANCE - centre[2] - translation[2]
    k = FOCAL * crop_size / distance
    relief = centred[2]
    mean_row = np.array([centre[1], -centre[0], 0.0, 0.0, 0.0, 1.0])  # g
    k_row = (k / distance) * mean_row  # dk
    jacobian = np.outer(k_row, relief)  # a_i dk + k da_i
    jacobian[0] += k * centred[1]
    jacobian[1] -= k * centred[0]

    def second_order(weights: np.ndarray) -> np.ndarray:
        # sum_i w_i Hess(k a_i) = k sum_i w_i Hess(a_i) + A dk^T + dk A^T + (sum_i w_i a_i) Hess(k), with
        # A = sum_i w_i da_i; both rotation curvatures are about e_z, so they add up before `rotation_curvature`.
        summed = centred @ weights  # sum_i w_i u_i
        summed_relief = summed[2]
        rows = np.zeros(6)
        rows[0], rows[1] = summed[1], -summed[0]
        total = np.outer(rows, k_row)
        total += total.T + (summed_relief * 2.0 * k / distance**2) * np.outer(mean_row, mean_row)
        total[:3, :3] += rotation_curvature(np.outer([0.0, 0.0, 1.0], k * summed + (summed_relief * k / distance) * centre))
        return DEPTH_WEIGHT * total

    return Linearized(residuals=DEPTH_WEIGHT * (k * relief - depth), jacobian=DEPTH_WEIGHT * jacobian,
                      second_order=second_order)


def mesh_in_crop(mesh: np.ndarray, tf: CropTransform) -> np.ndarray:
    """Frame mesh [468, 3] -> crop pixels: x, y through the crop map, z scaled like x."""
    return np.column_stack([points_to_crop(mesh[:, :2], tf), mesh[:, 2] * tf.matrix[0, 0]])


def estimate_label_from_mesh(mesh: np.ndarray, crop_size: int = 512) -> tuple[np.ndarray, HeadPose]:
    """EG3D camera label of an aligned crop from its mesh (crop pixels); see `pose.estimate_label`."""
    rotation, translation, rms = solve_mesh_pose(mesh, crop_size)
    return label_from_pose(rotation, translation), HeadPose(rotation=rotation, translation=translation, residual=rms)
