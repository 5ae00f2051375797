"""The mesh head-pose fit's own solver: Huber's loss, the analytic derivatives of the image and relief residuals
against finite differences of scipy's residual function (tests/scipy_pose.py), and the optimum against scipy's
converged fit on synthetic and unfacelike meshes (real meshes: tests/test_face_mesh.py, with the model files)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy_pose import scipy_mesh_pose, scipy_mesh_residuals

from nvsvideo.cameras.eg3d import FOCAL, label_from_pose, rotation_from_euler
from nvsvideo.face.mesh_pose import HUBER_PX, canonical_in_bfm, linearized_relief, solve_mesh_pose
from nvsvideo.face.pose import combined_terms, linearized_projection, project, robust_loss


def test_huber_loss_by_hand():
    cost, influence, curvature = robust_loss(np.array([-5.0, -1.0, 0.0, 1.5, 3.0]), 2.0)
    assert cost == pytest.approx(16.0 + 1.0 + 0.0 + 2.25 + 8.0)  # r^2 within 2, 4 |r| - 4 beyond
    np.testing.assert_allclose(influence, [-2.0, -1.0, 0.0, 1.5, 2.0])
    np.testing.assert_array_equal(curvature, [0.0, 1.0, 1.0, 1.0, 0.0])
    squares = robust_loss(np.array([-5.0, 3.0]), None)
    assert squares[0] == 34.0 and squares[2] is None


def _mesh(crop_size: int, seed: int) -> np.ndarray:
    """A mesh of the canonical face at a turned pose, its depths as the landmark model gives them (smaller =
    nearer, on the x scale), moved by a few px so that residuals lie on both sides of the Huber scale."""
    model = canonical_in_bfm()
    rotation, translation = rotation_from_euler([10.0, -27.0, 4.0]), np.array([0.05, 0.0, 0.1])
    image = project(model, rotation, translation, crop_size)
    camera_z = model @ rotation[2] + translation[2]
    z = -(FOCAL * crop_size / (10 - camera_z.mean())) * (camera_z - camera_z.mean())
    noise = np.random.default_rng(seed).normal(0.0, 3.0 * crop_size / 512, (len(model), 3))
    return np.column_stack([image, z]) + noise


@pytest.mark.parametrize("crop_size", [512, 1024])
def test_mesh_fit_derivatives_match_finite_differences(crop_size):
    """Jacobian, Huber-weighted gradient and Gauss-Newton part, and the residual-weighted second derivatives of
    the image and relief residuals, at a pose away from the optimum."""
    model, mesh = canonical_in_bfm(), _mesh(crop_size, 3)
    rotation, translation = rotation_from_euler([11.0, -28.0, 5.0]), np.array([0.05, -0.01, 0.15])
    depth = -(mesh[:, 2] - mesh[:, 2].mean())
    parts = [linearized_projection(model, mesh[:, :2], rotation, translation, crop_size),
             linearized_relief(model, depth, rotation, translation, crop_size)]
    # scipy's residuals are u, v per point, then the reliefs; ours all u, all v, then the reliefs.
    n = len(model)
    order = np.concatenate([np.arange(0, 2 * n, 2), np.arange(1, 2 * n, 2), np.arange(2 * n, 3 * n)])
    reference = scipy_mesh_residuals(mesh, rotation, crop_size)
    start = np.concatenate([np.zeros(3), translation])

    def residuals(x: np.ndarray) -> np.ndarray:
        return reference(start + x)[order]

    r = residuals(np.zeros(6))
    np.testing.assert_allclose(np.concatenate([p.residuals for p in parts]), r, rtol=0, atol=1e-9)
    step = 1e-6
    jacobian = np.stack([(residuals(step * e) - residuals(-step * e)) / (2 * step) for e in np.eye(6)])
    ours = np.concatenate([p.jacobian for p in parts], axis=1)
    np.testing.assert_allclose(ours, jacobian, rtol=0, atol=1e-6 * np.abs(jacobian).max())

    terms = combined_terms(parts, HUBER_PX)
    inside = np.abs(r) <= HUBER_PX
    assert 0.1 < inside.mean() < 0.9  # both sides of the Huber scale are exercised
    influence = np.clip(r, -HUBER_PX, HUBER_PX)
    assert terms.cost == pytest.approx(float(np.sum(np.where(inside, r**2, 2 * HUBER_PX * np.abs(r) - HUBER_PX**2))),
                                       rel=1e-12)
    np.testing.assert_allclose(terms.gradient, jacobian @ influence, rtol=0, atol=1e-6 * np.abs(jacobian @ influence).max())
    gauss_newton = (jacobian * inside) @ jacobian.T
    np.testing.assert_allclose(terms.scaling, (jacobian**2).sum(1), rtol=1e-6)
    np.testing.assert_allclose(terms.gauss_newton, gauss_newton, rtol=0, atol=1e-6 * np.abs(gauss_newton).max())

    # sum_i w_i Hess(r_i) with the Huber weights is the Hessian of w . r(x) with w held fixed.
    def weighted(x: np.ndarray) -> float:
        return float(influence @ residuals(x))

    h = 1e-4
    basis = h * np.eye(6)
    hessian = np.array([[(weighted(a + b) - weighted(a - b) - weighted(b - a) + weighted(-a - b)) / (4 * h * h)
                         for b in basis] for a in basis])
    np.testing.assert_allclose(terms.second_order, hessian, rtol=0, atol=1e-5 * np.abs(hessian).max())


def _label_difference(mesh: np.ndarray) -> float:
    rotation, translation, rms = solve_mesh_pose(mesh)
    ref_rotation, ref_translation, ref_rms = scipy_mesh_pose(mesh, converged=True)
    assert rms == pytest.approx(ref_rms, abs=1e-6)
    return float(np.abs(label_from_pose(rotation, translation) - label_from_pose(ref_rotation, ref_translation)).max())


@pytest.mark.parametrize("case", ["noisy", "eight times too large", "mirrored", "flat", "half badly placed"])
def test_mesh_fit_reaches_scipys_converged_optimum(case):
    """Far from a normal mesh the steps need damping or the start is poor; the fit must still reach scipy's
    optimum (scipy stops short of it by ~1e-7 in the labels at float tolerances: its gradient there is
    1e4 times ours). With half the points 40 px off, at the start no residual within the Huber scale moves
    one of the parameters and the Hessian is not positive definite: damping must not scale with the
    Gauss-Newton part's diagonal then, which is zero there."""
    mesh = _mesh(512, 0)
    mesh = {"noisy": mesh,
            "eight times too large": np.column_stack([(mesh[:, :2] - 255.5) * 8 + 255.5, mesh[:, 2] * 8]),
            "mirrored": np.column_stack([511 - mesh[:, 0], mesh[:, 1:]]),
            "flat": np.column_stack([mesh[:, :2], np.zeros(len(mesh))]),
            "half badly placed": np.where(np.arange(len(mesh))[:, None] < 200, mesh + 40.0, mesh)}[case]
    assert _label_difference(mesh) < 2e-7


def test_mesh_fit_is_a_function_of_its_own_mesh():
    """No state between calls: a fit gives the same bits whatever was fitted before (`batch --chunk-frames`)."""
    first, second = _mesh(512, 1), _mesh(512, 2)
    alone = solve_mesh_pose(second)
    solve_mesh_pose(first)
    again = solve_mesh_pose(second)
    np.testing.assert_array_equal(alone[0], again[0])
    np.testing.assert_array_equal(alone[1], again[1])
    assert alone[2] == again[2]
