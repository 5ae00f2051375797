"""The official in-the-wild crop: fit, geometry, resampling and the inverse used for pasting back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from nvsvideo.face.crop import (
    ALIGN_RESCALE,
    ALIGN_WINDOW,
    CENTER_CROP,
    STANDARD_POINTS_3D,
    CropSquare,
    CropTransform,
    apply_crop,
    crop_square_from_landmarks,
    crop_square_from_points,
    crop_transform_from_landmarks,
    crop_transform_from_square,
    fit_weak_perspective,
    five_points,
    offset_from_identity,
    paste_back,
    points_from_crop,
    points_to_crop,
)


@pytest.fixture(scope="module")
def dlib_backend():
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from nvsvideo.face.backends.dlib_backend import DlibBackend

    return DlibBackend()


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """float [3, 3] rotation R_z(roll) R_y(yaw) R_x(pitch), angles in radians."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def landmarks_with_five(points: np.ndarray) -> np.ndarray:
    """68 landmarks whose five alignment points are exactly `points` [5, 2] (the rest at the nose)."""
    lm = np.tile(points[2], (68, 1))
    lm[36:42], lm[42:48], lm[30], lm[48], lm[54] = points[0], points[1], points[2], points[3], points[4]
    return lm


def test_five_points_uses_eye_means_nose_tip_and_mouth_corners():
    lm = np.arange(136, dtype=float).reshape(68, 2)
    got = five_points(lm)
    np.testing.assert_allclose(got[0], lm[36:42].mean(0))
    np.testing.assert_allclose(got[1], lm[42:48].mean(0))
    np.testing.assert_allclose(got[2:], lm[[30, 48, 54]])


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (0.4, -0.2, 0.1), (-0.6, 0.3, -0.25)])
def test_weak_perspective_fit_recovers_scale_and_origin(angles):
    r = rotation(*angles)
    s, t = 87.5, np.array([301.25, 170.5])
    points = s * STANDARD_POINTS_3D @ r[:2].T + t
    t_fit, s_fit = fit_weak_perspective(points)
    np.testing.assert_allclose(t_fit, t, atol=1e-9)
    assert s_fit == pytest.approx(s, rel=1e-12)


def test_crop_square_hand_checked_for_a_frontal_face():
    # Frontal face, 100 px per model unit, model origin at pixel (320, 200) of a 640x360 frame.
    h = 360
    points_up = 100.0 * STANDARD_POINTS_3D[:, :2] + np.array([320.0, h - 1 - 200.0])
    points = points_up * [1, -1] + [0, h - 1]  # back to y down
    square = crop_square_from_landmarks(landmarks_with_five(points), h)
    # side (7/3)*s; centre half a pixel left of / below the origin (official convention mix, facts §4.2).
    assert square.side == pytest.approx(700 / 3, abs=1e-9)
    assert (square.cx, square.cy) == pytest.approx((319.5, 200.5), abs=1e-9)
    tf = crop_transform_from_square(square)
    a = 512 / (700 / 3)
    np.testing.assert_allclose(tf.matrix[:2, :2], np.diag([a, a]), atol=1e-12)
    np.testing.assert_allclose(points_to_crop(np.array([[319.5, 200.5]]), tf), [[255.5, 255.5]], atol=1e-9)
    # The official transform (integer truncations) is within 1.1 crop px of the continuous one.
    official = crop_transform_from_landmarks(landmarks_with_five(points), (h, 640))
    corners = np.array([[0.0, 0.0], [639.0, 359.0], [320.0, 200.0]])
    assert np.abs(points_to_crop(corners, official) - points_to_crop(corners, tf)).max() < 1.1


def test_square_from_points_is_the_square_of_the_five_points_of_68():
    rng = np.random.default_rng(5)
    points = 80.0 * STANDARD_POINTS_3D[:, :2] * [1, -1] + [200.0, 150.0] + rng.normal(0, 2, (5, 2))
    assert crop_square_from_points(points, 300) == crop_square_from_landmarks(landmarks_with_five(points), 300)


def test_offset_from_identity_hand_checked():
    size = 512
    identity = CropTransform(np.eye(3), size)
    offset, scale = offset_from_identity(identity, (size, size))
    assert offset.tolist() == [0.0, 0.0] and scale == 0.0
    # Our square sits 3 px right of and 2 px above the photo's centre, 2 % smaller: the photo's centre lands
    # 3 x 1.02 px left of and 2 x 1.02 px below the crop's centre, at 1.02 x the identity's magnification.
    tf = crop_transform_from_square(CropSquare(cx=258.5, cy=253.5, side=size / 1.02))
    offset, scale = offset_from_identity(tf, (size, size))
    np.testing.assert_allclose(offset, [-3.06, 2.04], atol=1e-9)
    assert scale == pytest.approx(0.02, abs=1e-12)
    # A 1024 photo whose official crop is 512: the identity is a halving.
    offset, scale = offset_from_identity(crop_transform_from_square(CropSquare(511.5, 511.5, 1024.0)), (1024, 1024))
    np.testing.assert_allclose(offset, [0.0, 0.0], atol=1e-9)
    assert scale == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("shift", [-0.3, -0.1, 0.0, 0.1, 0.3])
def test_recropping_an_ideal_official_crop_is_the_identity_up_to_the_official_truncations(shift):
    # Five points exactly where the official crop puts the standard face: s = 300 / (700 / 512), origin at the
    # centre (pixel centres, y up: t = (256, 256), i.e. y down 255), moved by a fraction of a pixel.
    s = ALIGN_RESCALE * 512 / CENTER_CROP
    points = s * STANDARD_POINTS_3D[:, :2] * [1, -1] + [256.0 + shift, 255.0 + shift]
    square = crop_square_from_points(points, 512)
    assert (square.cx, square.cy, square.side) == pytest.approx((255.5 + shift, 255.5 + shift, 512.0), abs=1e-9)
    offset, scale = offset_from_identity(crop_transform_from_landmarks(landmarks_with_five(points), (512, 512)),
                                         (512, 512))
    # The official code cuts at whole pixels of its 700-pixel window: offsets in steps of 512 / 700 px, at most one.
    steps = offset / (512 / CENTER_CROP)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)
    assert np.abs(np.round(steps)).max() <= 1 and scale == pytest.approx(0.0, abs=1e-12)


def test_round_trip_points():
    tf = crop_transform_from_square(CropSquare(cx=123.4, cy=-56.7, side=89.1), output_size=512)
    pts = np.random.default_rng(0).uniform(-500, 1500, size=(100, 2))
    np.testing.assert_allclose(points_from_crop(points_to_crop(pts, tf), tf), pts, atol=1e-6)
    np.testing.assert_allclose(CropTransform.from_json(tf.to_json()).matrix, tf.matrix)


def official_two_step_crop(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The official resize-then-cut procedure (facts §4.2), written independently of nvsvideo.face.crop."""
    h, w = image.shape[:2]
    points = five_points(landmarks)
    points[:, 1] = h - 1 - points[:, 1]
    t, s = fit_weak_perspective(points)
    k = ALIGN_RESCALE / s
    rw, rh = int(w * k), int(h * k)
    left = int(rw / 2 - ALIGN_WINDOW / 2 + (t[0] - w / 2) * k)
    up = int(rh / 2 - ALIGN_WINDOW / 2 + (h / 2 - t[1]) * k)
    big = Image.fromarray(image).resize((rw, rh), Image.Resampling.BICUBIC)
    window = big.crop((left, up, left + ALIGN_WINDOW, up + ALIGN_WINDOW))
    inner = (ALIGN_WINDOW - CENTER_CROP) // 2
    centre = window.crop((inner, inner, inner + CENTER_CROP, inner + CENTER_CROP))
    return np.asarray(centre.resize((512, 512), Image.Resampling.LANCZOS))


def subpixel_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(a.mean(2), b.mean(2), upsample_factor=20)
    return shift


def test_crop_matches_the_official_procedure_on_astronaut(dlib_backend):
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    face = dlib_backend.detect(image[None])[0][0]
    ours = apply_crop(image, crop_transform_from_landmarks(face.landmarks, image.shape[:2]))
    official = official_two_step_crop(image, face.landmarks)
    assert ours.shape == official.shape == (512, 512, 3)
    # Same geometry (sub-pixel registration), same content up to one resampling fewer.
    assert np.abs(subpixel_shift(ours, official)).max() <= 0.1
    assert np.abs(ours.astype(float) - official).mean() < 3.0


def test_recropping_an_official_crop_is_close_to_identity(fixtures_dir, dlib_backend):
    image = np.asarray(Image.open(fixtures_dir / "eg3d_example.png").convert("RGB"))
    face = dlib_backend.detect(image[None])[0][0]
    tf = crop_transform_from_landmarks(face.landmarks, image.shape[:2])
    scale = tf.matrix[0, 0]
    shift = points_to_crop(np.array([[255.5, 255.5]]), tf)[0] - 255.5
    print(f"eg3d_example re-crop: scale {scale:.4f}, centre shift {shift.round(2)} px")
    # The official crop came from MTCNN's five points, ours from dlib's 68: close, not equal.
    assert abs(scale - 1) < 0.06
    assert np.abs(shift).max() < 4.0


@pytest.mark.parametrize("side", [150.0, 700.0])  # crop upsampled / downsampled from the frame
def test_marker_drawn_in_the_crop_lands_where_the_inverse_says(side):
    frame = np.full((360, 640, 3), 90, np.uint8)
    tf = crop_transform_from_square(CropSquare(cx=330.3, cy=170.8, side=side))
    crop = apply_crop(frame, tf)
    marker = np.array([300.0, 210.0])
    yy, xx = np.mgrid[0:512, 0:512]
    crop[(xx - marker[0]) ** 2 + (yy - marker[1]) ** 2 <= 12**2] = 255
    pasted = paste_back(frame, crop, tf, mask_feather=0.1).astype(float)
    # The marker is the only thing much brighter than the grey frame (the crop's black outside-the-frame
    # part is not pasted, but its Lanczos ringing touches the frame's edges).
    weight = np.clip(pasted.mean(2) - 90 - 40, 0, None)
    ys, xs = np.nonzero(weight)
    found = np.array([(xs * weight[ys, xs]).sum(), (ys * weight[ys, xs]).sum()]) / weight[ys, xs].sum()
    np.testing.assert_allclose(found, points_from_crop(marker[None], tf)[0], atol=0.1)


def test_paste_back_of_an_untouched_crop_restores_the_frame(dlib_backend):
    skimage_data = pytest.importorskip("skimage.data")
    image = skimage_data.astronaut()
    face = dlib_backend.detect(image[None])[0][0]
    tf = crop_transform_from_landmarks(face.landmarks, image.shape[:2])
    pasted = paste_back(image, apply_crop(image, tf), tf)
    x0, y0 = np.ceil(points_from_crop(np.array([[0.0, 0.0]]), tf)[0]).astype(int)
    x1, y1 = np.floor(points_from_crop(np.array([[511.0, 511.0]]), tf)[0]).astype(int)
    inside = (slice(max(y0, 0), min(y1, 512)), slice(max(x0, 0), min(x1, 512)))
    assert np.abs(pasted[inside].astype(float) - image[inside]).mean() < 2.0
    # Outside the footprint nothing changes.
    untouched = np.ones(image.shape[:2], bool)
    untouched[max(y0 - 1, 0):y1 + 2, max(x0 - 1, 0):x1 + 2] = False
    np.testing.assert_array_equal(pasted[untouched], image[untouched])


def test_crop_outside_the_frame_is_black():
    frame = np.full((100, 100, 3), 200, np.uint8)
    tf = crop_transform_from_square(CropSquare(cx=0.0, cy=50.0, side=100.0), output_size=64)
    crop = apply_crop(frame, tf)
    # Left of the frame's edge (crop x ~ 31.7) black, right of it the frame; rows away from the top/bottom edges.
    assert crop[8:-8, :28].max() == 0 and crop[8:-8, 36:].min() >= 199


def test_official_truncations_stay_within_the_documented_bound():
    rng = np.random.default_rng(3)
    worst = 0.0
    for _ in range(200):
        h, w = rng.integers(200, 2000, size=2)
        s = rng.uniform(20, 400)
        origin = rng.uniform([0, 0], [w, h])
        points = s * STANDARD_POINTS_3D[:, :2] * [1, -1] + origin
        lm = landmarks_with_five(points)
        official = crop_transform_from_landmarks(lm, (h, w))
        smooth = crop_transform_from_square(crop_square_from_landmarks(lm, h))
        corners = np.array([[0.0, 0.0], [w - 1.0, h - 1.0]])
        worst = max(worst, np.abs(points_to_crop(corners, official) - points_to_crop(corners, smooth)).max())
    assert worst < 1.1
