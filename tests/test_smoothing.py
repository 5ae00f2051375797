"""Temporal smoothing: jitter reduction without lag, SO(3) handling, gaps, the causal one-euro mode."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import intrinsics, lookat_angles, lookat_cam2world, make_label, split_label
from nvsvideo.temporal.smoothing import (
    OneEuroFilter,
    align_quaternions,
    jitter,
    lag_frames,
    one_euro_labels,
    one_euro_series,
    sigma_frames,
    smooth_crop,
    smooth_labels,
    smooth_series,
)

FPS = 30.0
T = 150


def trajectory() -> tuple[np.ndarray, np.ndarray]:
    """A smooth crop track: centres [T, 2] in pixels and sizes [T] (a head drifting and nodding)."""
    t = np.arange(T) / FPS
    centers = np.stack([320 + 40 * np.sin(2 * np.pi * 0.3 * t), 180 + 15 * np.sin(2 * np.pi * 0.5 * t + 1)], 1)
    sizes = 200 * np.exp(0.1 * np.sin(2 * np.pi * 0.2 * t))
    return centers, sizes


def test_sigma_knob():
    assert sigma_frames(0.1, 30.0) == pytest.approx(3.0)
    assert sigma_frames(0.0, 25.0) == 0.0
    with pytest.raises(ValueError):
        sigma_frames(-1.0, 30.0)


def test_linear_motion_passes_unchanged_even_at_the_ends():
    line = np.stack([np.arange(40.0) * 1.5 - 3, np.full(40, 7.0)], axis=1)
    np.testing.assert_allclose(smooth_series(line, 4.0), line, atol=1e-9)


def test_crop_jitter_is_reduced_3x_with_no_lag():
    rng = np.random.default_rng(0)
    centers, sizes = trajectory()
    noisy_centers = centers + rng.normal(0, 2.0, centers.shape)
    noisy_sizes = sizes * np.exp(rng.normal(0, 0.01, T))
    smooth_centers, smooth_sizes = smooth_crop(noisy_centers, noisy_sizes, sigma_frames(0.1, FPS))
    assert jitter(noisy_centers) / jitter(smooth_centers) >= 3.0
    assert jitter(noisy_sizes) / jitter(smooth_sizes) >= 3.0
    assert abs(lag_frames(noisy_centers, smooth_centers)) <= 1.0
    assert abs(lag_frames(noisy_sizes, smooth_sizes)) <= 1.0
    # Closer to the truth than the measurements were.
    assert np.abs(smooth_centers - centers).mean() < 0.5 * np.abs(noisy_centers - centers).mean()


def test_lag_metric_measures_a_known_delay():
    rng = np.random.default_rng(1)
    signal = np.cumsum(rng.normal(size=300))
    delayed = np.concatenate([np.full(3, signal[0]), signal[:-3]])
    assert lag_frames(signal, delayed) == pytest.approx(3.0, abs=0.1)
    assert lag_frames(signal, signal) == pytest.approx(0.0, abs=1e-9)


def test_invalid_frames_are_ignored_and_filled():
    centers, _ = trajectory()
    valid = np.ones(T, dtype=bool)
    valid[[0, 1, 50, 51, 52, 53, 100]] = False
    corrupted = centers.copy()
    corrupted[~valid] = 1e6  # whatever a failed detection left there
    smoothed = smooth_series(corrupted, 2.0, valid)
    assert np.abs(smoothed - centers).max() < 1.0
    # With smoothing off, invalid frames are still filled by interpolation.
    filled = smooth_series(corrupted, 0.0, valid)
    np.testing.assert_array_equal(filled[valid], centers[valid])
    assert np.abs(filled[2:] - centers[2:]).max() < 1.0
    np.testing.assert_array_equal(filled[:2], centers[[2, 2]])  # held before the first valid frame
    with pytest.raises(ValueError):
        smooth_series(corrupted, 2.0, np.zeros(T, dtype=bool))


@pytest.mark.parametrize("with_gaps", [False, True])
def test_columns_smoothed_together_equal_each_smoothed_alone(with_gaps):
    """Exactly: the crop's and the camera's series are smoothed in one pass each, and the streamed track must
    equal the whole one bit for bit."""
    rng = np.random.default_rng(7)
    values = rng.normal(0.0, 1.0, (40, 5)).cumsum(axis=0)
    valid = rng.random(40) > 0.3 if with_gaps else None
    together = smooth_series(values, 2.5, valid)
    for d in range(values.shape[1]):
        np.testing.assert_array_equal(together[:, d], smooth_series(values[:, d], 2.5, valid))


def test_quaternion_sign_alignment():
    rng = np.random.default_rng(2)
    q = Rotation.from_euler("y", np.linspace(0, 1, 20)[:, None]).as_quat()
    signs = rng.choice([-1.0, 1.0], size=(20, 1))
    aligned = align_quaternions(q * signs)
    assert np.all(np.sum(aligned[1:] * aligned[:-1], axis=1) > 0)
    np.testing.assert_allclose(np.abs(aligned), np.abs(q))


def test_rotation_smoothing_across_the_quaternion_sign_flip():
    # Turning about y through 270 degrees: the quaternion scipy derives from a matrix flips sign
    # where its largest component changes from y to w.
    rng = np.random.default_rng(3)
    truth = Rotation.from_euler("y", np.linspace(240, 300, T)[:, None], degrees=True)
    noisy = Rotation.from_rotvec(rng.normal(0, np.radians(1.0), (T, 3))) * truth
    quats = Rotation.from_matrix(noisy.as_matrix()).as_quat()
    assert np.sum(np.sum(quats[1:] * quats[:-1], axis=1) < 0) >= 1, "the test needs a sign flip"
    cam2world = np.repeat(np.eye(4)[None], T, axis=0)
    cam2world[:, :3, :3], cam2world[:, 2, 3] = noisy.as_matrix(), 2.7
    smoothed = split_label(smooth_labels(make_label(cam2world, intrinsics()), 3.0))[0][:, :3, :3]
    error = (Rotation.from_matrix(smoothed) * truth.inv()).magnitude()
    noisy_error = (noisy * truth.inv()).magnitude()
    assert np.degrees(error.max()) < 3.0  # mixing q and -q gives ~11 degrees here
    assert error.mean() < 0.5 * noisy_error.mean()


def noisy_cameras(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clean and jittered [T, 25] cameras: a head turning and nodding, with pose noise of ~1 degree."""
    t = np.arange(T) / FPS
    clean = make_label(lookat_cam2world(25 * np.sin(2 * np.pi * 0.25 * t), 8 * np.cos(2 * np.pi * 0.4 * t)), intrinsics())
    cam, K = split_label(clean)
    jitter_rotation = Rotation.from_rotvec(rng.normal(0, np.radians(1.0), (T, 3)))
    noisy = cam.copy()
    noisy[:, :3, :3] = jitter_rotation.as_matrix() @ cam[:, :3, :3]
    noisy[:, :3, 3] = jitter_rotation.apply(cam[:, :3, 3])
    return clean, make_label(noisy, K)


def test_camera_smoothing_reduces_pose_jitter_3x_with_no_lag():
    clean, noisy = noisy_cameras(np.random.default_rng(4))
    valid = np.ones(T, dtype=bool)
    valid[70:73] = False
    smoothed = smooth_labels(noisy, sigma_frames(0.1, FPS), valid)
    raw_angles, smooth_angles = lookat_angles(split_label(noisy)[0]), lookat_angles(split_label(smoothed)[0])
    assert jitter(raw_angles, valid) / jitter(smooth_angles, valid) >= 3.0
    assert abs(lag_frames(raw_angles, smooth_angles)) <= 1.0
    np.testing.assert_allclose(np.linalg.norm(split_label(smoothed)[0][:, :3, 3], axis=1), 2.7, atol=1e-9)
    np.testing.assert_array_equal(split_label(smoothed)[1], np.broadcast_to(intrinsics(), (T, 3, 3)))
    clean_angles = lookat_angles(split_label(clean)[0])
    assert np.abs(smooth_angles - clean_angles)[valid].mean() < 0.5 * np.abs(raw_angles - clean_angles)[valid].mean()


def test_one_euro_is_causal_and_reduces_jitter():
    rng = np.random.default_rng(5)
    centers, _ = trajectory()
    noisy = centers + rng.normal(0, 2.0, centers.shape)
    out = one_euro_series(noisy, FPS, min_cutoff=1.0, beta=0.01)
    assert jitter(noisy) / jitter(out) >= 3.0
    # Changing the future never changes the past.
    changed = noisy.copy()
    changed[100:] += 50.0
    np.testing.assert_array_equal(one_euro_series(changed, FPS, min_cutoff=1.0, beta=0.01)[:100], out[:100])
    # It does lag, unlike the zero-phase smoother, and the lag metric sees it on a clean signal.
    assert lag_frames(centers, one_euro_series(centers, FPS, min_cutoff=1.0, beta=0.0)) > 1.0


def test_one_euro_filter_streams_and_resets():
    filt = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    assert filt(np.array([5.0]), 1 / FPS)[0] == 5.0
    step = [filt(np.array([10.0]), 1 / FPS)[0] for _ in range(60)]
    assert 5.0 < step[0] < step[-1] < 10.0 + 1e-9 and step[-1] > 9.9
    filt.reset()
    assert filt(np.array([-3.0]), 1 / FPS)[0] == -3.0


def test_one_euro_cameras_stay_on_the_sphere_and_hold_over_gaps():
    _, noisy = noisy_cameras(np.random.default_rng(6))
    valid = np.ones(T, dtype=bool)
    valid[40:45] = False
    out = one_euro_labels(noisy, FPS, valid=valid)
    np.testing.assert_allclose(np.linalg.norm(split_label(out)[0][:, :3, 3], axis=1), 2.7, atol=1e-9)
    np.testing.assert_array_equal(out[40:45], np.broadcast_to(out[39], (5, 25)))
    raw_angles, out_angles = lookat_angles(split_label(noisy)[0]), lookat_angles(split_label(out)[0])
    assert jitter(raw_angles, valid) / jitter(out_angles, valid) >= 3.0
