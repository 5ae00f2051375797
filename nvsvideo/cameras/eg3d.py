"""EG3D camera conventions as small pure functions (numpy, float64).

A camera label `c` is 25 numbers: the row-major 4x4 cam2world matrix (OpenCV camera axes: +x right,
+y down, +z forward) followed by the row-major 3x3 intrinsics normalised by the image size. World
frame: +y up, the face looks towards +z, the frontal camera sits at (0, 0, 2.7).

Yaw and pitch follow the official LookAt sampler: h = pi/2 + yaw, v = pi/2 - pitch, so positive yaw
moves the camera towards world +x (the subject's left) and positive pitch moves it up. The pitch is
the sampler's parameter, not the elevation: the camera height is radius * 2 * pitch / pi.

Head poses `(R, t)` use Deep3DFaceRecon's model, which the official in-the-wild preprocessing turns
into labels: a point X of the (mean-centred) face maps to R @ X + t in a y-up camera frame whose
camera sits at (0, 0, 10) looking down -z, in BFM units.
"""

from __future__ import annotations

import numpy as np

#: Normalised focal length of every official label: 2985.29 px over the 700-px crop.
FOCAL = 4.2647
#: Radius of the official camera sphere, centred at the world origin.
RADIUS = 2.7
#: The official look-at target for rendered views.
PIVOT = (0.0, 0.0, 0.2)
#: Constants of the official conversion from Deep3DFaceRecon poses (`3dface2idr_mat.py`).
DEEP3D_CAMERA_DISTANCE = 10.0
DEEP3D_TO_EG3D_SCALE = 0.27
DEEP3D_TO_EG3D_OFFSET = (0.0, 0.006, 0.161)

# Deep3D's camera is y-up looking down -z; OpenCV's is y-down looking down +z.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0])
# The sampler clamps its vertical parameter away from the poles.
_V_EPS = 1e-5


def intrinsics(focal: float = FOCAL, center: float = 0.5) -> np.ndarray:
    """Normalised pinhole intrinsics.

    Args:
        focal: focal length divided by the image size.
        center: principal point divided by the image size.

    Returns:
        [3, 3] matrix [[f, 0, c], [0, f, c], [0, 0, 1]].
    """
    return np.array([[focal, 0.0, center], [0.0, focal, center], [0.0, 0.0, 1.0]])


def lookat_cam2world(
    yaw_deg: float | np.ndarray,
    pitch_deg: float | np.ndarray,
    radius: float | np.ndarray = RADIUS,
    pivot: tuple[float, float, float] = PIVOT,
) -> np.ndarray:
    """Camera on the sphere about the world origin, looking at `pivot`, with no roll.

    Args:
        yaw_deg: [...] yaw in degrees (h = pi/2 + yaw); positive moves the camera to world +x.
        pitch_deg: [...] pitch in degrees (v = pi/2 - pitch); positive moves the camera up.
        radius: [...] or scalar distance of the camera from the world origin.
        pivot: the point the optical axis passes through.

    Returns:
        [..., 4, 4] cam2world matrices (OpenCV camera axes).
    """
    yaw, pitch, radius = np.broadcast_arrays(np.radians(yaw_deg), np.radians(pitch_deg), radius)
    theta = np.pi / 2 + yaw
    v = np.clip(np.pi / 2 - pitch, _V_EPS, np.pi - _V_EPS)
    phi = np.arccos(1.0 - 2.0 * v / np.pi)
    origin = radius[..., None] * np.stack(
        [-np.sin(phi) * np.cos(theta), np.cos(phi), np.sin(phi) * np.sin(theta)], axis=-1
    )
    forward = _normalize(np.asarray(pivot, dtype=np.float64) - origin)
    right = _normalize(np.cross(forward, np.array([0.0, 1.0, 0.0])))
    down = _normalize(np.cross(forward, right))
    return _rigid(np.stack([right, down, forward], axis=-1), origin)


def lookat_angles(cam2world: np.ndarray) -> np.ndarray:
    """Yaw, pitch (the LookAt parameters of the camera position) and roll, in degrees.

    Yaw and pitch invert `lookat_cam2world` exactly for the camera position; roll is the rotation
    of the camera's x axis about its optical axis away from the roll-free (horizontal) direction,
    positive when the x axis tips downwards.

    Args:
        cam2world: [..., 4, 4].

    Returns:
        [..., 3] (yaw, pitch, roll) in degrees.
    """
    rotation, origin = cam2world[..., :3, :3], cam2world[..., :3, 3]
    yaw = np.arctan2(origin[..., 0], origin[..., 2])
    pitch = np.pi / 2 * origin[..., 1] / np.linalg.norm(origin, axis=-1)
    forward, x_axis = rotation[..., 2], rotation[..., 0]
    level_right = _normalize(np.cross(forward, np.array([0.0, 1.0, 0.0])))
    level_down = np.cross(forward, level_right)
    roll = np.arctan2(np.sum(x_axis * level_down, -1), np.sum(x_axis * level_right, -1))
    return np.degrees(np.stack([yaw, pitch, roll], axis=-1))


def make_label(cam2world: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Flatten cameras into EG3D labels.

    Args:
        cam2world: [..., 4, 4].
        K: [..., 3, 3] normalised intrinsics (broadcast against cam2world).

    Returns:
        [..., 25] labels.
    """
    batch = np.broadcast_shapes(cam2world.shape[:-2], K.shape[:-2])
    pose = np.broadcast_to(cam2world, (*batch, 4, 4)).reshape(*batch, 16)
    k = np.broadcast_to(K, (*batch, 3, 3)).reshape(*batch, 9)
    return np.concatenate([pose, k], axis=-1).astype(np.float64)


def split_label(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `make_label`.

    Args:
        label: [..., 25].

    Returns:
        cam2world [..., 4, 4] and K [..., 3, 3].
    """
    label = np.asarray(label, dtype=np.float64)
    if label.shape[-1] != 25:
        raise ValueError(f"an EG3D label has 25 numbers, got shape {label.shape}")
    return label[..., :16].reshape(*label.shape[:-1], 4, 4), label[..., 16:].reshape(*label.shape[:-1], 3, 3)


def mirror_label(label: np.ndarray) -> np.ndarray:
    """Camera of the horizontally flipped image: pose F @ P @ F with F = diag(-1, 1, 1, 1).

    Reflecting world x and the camera's x axis together keeps the rotation proper.

    Args:
        label: [..., 25].

    Returns:
        [..., 25] with the same intrinsics.
    """
    cam2world, K = split_label(label)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    return make_label(flip @ cam2world @ flip, K)


def label_from_pose(rotation: np.ndarray, translation: np.ndarray, focal: float = FOCAL) -> np.ndarray:
    """EG3D label from a Deep3DFaceRecon-style head pose, as the official preprocessing computes it.

    The camera rotation is R^T expressed in OpenCV axes; its position R^T((0, 0, 10) - t) is moved
    to EG3D units (x 0.27, plus the official offsets) and then pushed onto the radius-2.7 sphere
    ("orig" mode: the rotation is not re-aimed, so roll and off-centre aim are kept).

    Args:
        rotation: [..., 3, 3] head rotation R (face frame to Deep3D camera frame).
        translation: [..., 3] head translation t in BFM units.
        focal: normalised focal length of the label.

    Returns:
        [..., 25] labels.
    """
    rotation_t = np.swapaxes(rotation, -1, -2)
    eye = np.array([0.0, 0.0, DEEP3D_CAMERA_DISTANCE]) - translation
    position = DEEP3D_TO_EG3D_SCALE * np.einsum("...ij,...j->...i", rotation_t, eye)
    position = position + np.asarray(DEEP3D_TO_EG3D_OFFSET)
    position = RADIUS * _normalize(position)
    return make_label(_rigid(rotation_t @ _GL_TO_CV, position), intrinsics(focal))


def pose_from_label(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `label_from_pose` for a face at the Deep3D reference depth.

    The label keeps only the direction of the camera position, so the distance is fixed by
    assuming t_z = 0 (the face at Deep3D's reference depth, which its normalised crop implies).

    Args:
        label: [..., 25].

    Returns:
        rotation [..., 3, 3] and translation [..., 3] with translation[..., 2] == 0.
    """
    cam2world, _ = split_label(label)
    rotation = _GL_TO_CV @ np.swapaxes(cam2world[..., :3, :3], -1, -2)
    direction = _normalize(cam2world[..., :3, 3])
    offset = np.asarray(DEEP3D_TO_EG3D_OFFSET)
    # Choose the scale of the position so that the recovered t_z is zero.
    rot_dir = np.einsum("...ij,...j->...i", rotation, direction)
    rot_off = np.einsum("...ij,...j->...i", rotation, np.broadcast_to(offset, direction.shape))
    scale = (DEEP3D_TO_EG3D_SCALE * DEEP3D_CAMERA_DISTANCE + rot_off[..., 2]) / rot_dir[..., 2]
    eye = (scale[..., None] * rot_dir - rot_off) / DEEP3D_TO_EG3D_SCALE
    translation = np.array([0.0, 0.0, DEEP3D_CAMERA_DISTANCE]) - eye
    translation[..., 2] = 0.0  # exact zero instead of a rounding residue
    return rotation, translation


def euler_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's angles of a head rotation R = Rz(roll) @ Ry(yaw) @ Rx(pitch), in degrees.

    Args:
        rotation: [..., 3, 3].

    Returns:
        [..., 3] (pitch about x, yaw about y, roll about z) in degrees, as Deep3D orders them.
    """
    pitch = np.arctan2(rotation[..., 2, 1], rotation[..., 2, 2])
    yaw = np.arcsin(np.clip(-rotation[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(rotation[..., 1, 0], rotation[..., 0, 0])
    return np.degrees(np.stack([pitch, yaw, roll], axis=-1))


def rotation_from_euler(angles_deg: np.ndarray) -> np.ndarray:
    """Inverse of `euler_from_rotation`.

    Args:
        angles_deg: [..., 3] (pitch, yaw, roll) in degrees.

    Returns:
        [..., 3, 3] rotation Rz(roll) @ Ry(yaw) @ Rx(pitch).
    """
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    return rot_z(a[..., 2]) @ rot_y(a[..., 1]) @ rot_x(a[..., 0])


def rotation_angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations.

    Args:
        a: [..., 3, 3].
        b: [..., 3, 3].

    Returns:
        [...] angle of a @ b^T in degrees.
    """
    trace = np.trace(a @ np.swapaxes(b, -1, -2), axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def rot_x(angle: np.ndarray | float) -> np.ndarray:
    """Right-handed rotation about x.

    Args:
        angle: [...] radians.

    Returns:
        [..., 3, 3].
    """
    c, s, o, i = _trig(angle)
    return np.stack([i, o, o, o, c, -s, o, s, c], axis=-1).reshape(*np.shape(angle), 3, 3)


def rot_y(angle: np.ndarray | float) -> np.ndarray:
    """Right-handed rotation about y; rot_y(a) @ (0, 0, 1) = (sin a, 0, cos a).

    Args:
        angle: [...] radians.

    Returns:
        [..., 3, 3].
    """
    c, s, o, i = _trig(angle)
    return np.stack([c, o, s, o, i, o, -s, o, c], axis=-1).reshape(*np.shape(angle), 3, 3)


def rot_z(angle: np.ndarray | float) -> np.ndarray:
    """Right-handed rotation about z.

    Args:
        angle: [...] radians.

    Returns:
        [..., 3, 3].
    """
    c, s, o, i = _trig(angle)
    return np.stack([c, -s, o, s, c, o, o, o, i], axis=-1).reshape(*np.shape(angle), 3, 3)


def _trig(angle: np.ndarray | float) -> tuple[np.ndarray, ...]:
    a = np.asarray(angle, dtype=np.float64)
    return np.cos(a), np.sin(a), np.zeros_like(a), np.ones_like(a)


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rigid(rotation: np.ndarray, position: np.ndarray) -> np.ndarray:
    """[..., 3, 3] and [..., 3] -> [..., 4, 4] homogeneous transform."""
    batch = np.broadcast_shapes(rotation.shape[:-2], position.shape[:-1])
    out = np.zeros((*batch, 4, 4))
    out[..., :3, :3] = rotation
    out[..., :3, 3] = position
    out[..., 3, 3] = 1.0
    return out
