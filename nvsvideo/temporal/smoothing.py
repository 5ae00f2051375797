"""Temporal smoothing of per-frame face tracks and cameras, and how to measure it.

Offline (the default) is zero-phase: every frame is replaced by a Gaussian-weighted local *linear*
fit over its neighbours, past and future alike, so nothing is delayed, and linear motion passes
through unchanged, also at the ends of the clip and next to gaps. Rotations are smoothed on SO(3):
unit quaternions are sign-aligned along time (q and -q are the same rotation), smoothed component
wise and renormalised, which for the small per-frame changes of a head is a close approximation of
the rotation mean and never mixes up Euler angles.

The strength knob is `smooth`, the Gaussian sigma in seconds (`sigma_frames` converts it; 0 turns
smoothing off). About 0.1 s removes landmark jitter while keeping nods and quick turns.

Streaming (causal) mode uses the one-euro filter (Casiez, Roussel and Vogel, CHI 2012): a low-pass
whose cut-off rises with speed, so it is smooth at rest and responsive in motion, at the price of a
small lag.

Frames can be marked invalid (no face): they never contribute, and their values are filled from
the valid neighbours (within the kernel, else by linear interpolation, holding at the ends).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import correlate1d
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import make_label, split_label

# The Gaussian kernel is cut at this many sigmas (weights below 3e-4 of the peak).
_TRUNCATE = 4.0


def kernel_radius(sigma: float) -> int:
    """Frames each side of a frame that `smooth_series` reads (its kernel's support): a stream that waits
    this many frames ahead (twice, for a series computed from another smoothed one) reproduces the
    whole-series result exactly, since nothing beyond the radius contributes."""
    return max(1, int(math.ceil(_TRUNCATE * sigma)))


def sigma_frames(smooth: float, fps: float) -> float:
    """Convert the `smooth` knob (Gaussian sigma in seconds) to frames.

    Args:
        smooth: sigma in seconds; 0 = off.
        fps: frames per second.

    Returns:
        sigma in frames.
    """
    if smooth < 0 or fps <= 0:
        raise ValueError(f"smooth must be >= 0 and fps > 0, got smooth={smooth}, fps={fps}")
    return smooth * fps


def smooth_series(values: np.ndarray, sigma: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Zero-phase smoothing by Gaussian-weighted local linear regression.

    Args:
        values: [T] or [T, D] samples, one row per frame.
        sigma: Gaussian sigma in frames; 0 only fills invalid frames.
        valid: [T] bool, False where a frame has no measurement; all valid if None.

    Returns:
        Array shaped like `values`, with invalid frames filled.
    """
    x = np.asarray(values, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    mask = _valid_mask(valid, len(x))
    if sigma <= 0:
        return _fill_invalid(flat, mask).reshape(x.shape)
    radius = kernel_radius(sigma)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    m = mask.astype(np.float64)
    y = np.where(mask[:, None], flat, 0.0)

    def window_sum(signal: np.ndarray, weights: np.ndarray) -> np.ndarray:
        # Sum over u of weights[u] * signal[t + u]: correlation, so positive offsets look ahead.
        return correlate1d(signal, weights, axis=0, mode="constant", cval=0.0)

    # The weights and the samples through each kernel in one call (columns are filtered independently).
    both = np.column_stack([m, y])
    sums0, sums1 = window_sum(both, kernel), window_sum(both, kernel * offsets)
    w0, y0 = sums0[:, 0], sums0[:, 1:]
    w1, y1 = sums1[:, 0], sums1[:, 1:]
    w2 = window_sum(m, kernel * offsets**2)
    det = w0 * w2 - w1**2
    # A line needs two distinct frames in the window; with one, the weighted mean is all there is.
    linear = det > 1e-9 * np.maximum(w0, 1e-300) ** 2
    safe_det = np.where(linear, det, 1.0)
    safe_w0 = np.where(w0 > 0, w0, 1.0)
    fit = np.where(
        linear[:, None],
        (w2[:, None] * y0 - w1[:, None] * y1) / safe_det[:, None],
        y0 / safe_w0[:, None],
    )
    supported = w0 > 1e-12
    return _fill_invalid(fit, supported).reshape(x.shape)


def align_quaternions(quaternions: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Flip signs so that consecutive valid quaternions lie in the same hemisphere.

    Args:
        quaternions: [T, 4].
        valid: [T] bool; invalid rows are aligned to the last valid one but do not set the reference.

    Returns:
        [T, 4] quaternions for the same rotations.
    """
    q = np.array(quaternions, dtype=np.float64)
    mask = _valid_mask(valid, len(q))
    reference = None
    for i in range(len(q)):
        if reference is not None and np.dot(q[i], reference) < 0:
            q[i] = -q[i]
        if mask[i]:
            reference = q[i]
    return q


def smooth_labels(labels: np.ndarray, sigma: float, valid: np.ndarray | None = None) -> np.ndarray:
    """Zero-phase smoothing of EG3D cameras: rotation on SO(3), position direction and radius.

    Args:
        labels: [T, 25].
        sigma: Gaussian sigma in frames.
        valid: [T] bool.

    Returns:
        [T, 25] labels with the input's intrinsics (filled for invalid frames).
    """
    cam2world, K = split_label(labels)
    # The rotation as sign-aligned quaternions (renormalised after smoothing); the position, which lives on
    # a sphere, as its direction and its radius. One pass smooths them all: columns are independent.
    quaternions = align_quaternions(Rotation.from_matrix(cam2world[:, :3, :3]).as_quat(), valid)
    position = cam2world[:, :3, 3]
    radius = np.linalg.norm(position, axis=1)
    smoothed = smooth_series(np.column_stack([quaternions, position / radius[:, None], radius]), sigma, valid)
    direction = smoothed[:, 4:7] / np.linalg.norm(smoothed[:, 4:7], axis=1, keepdims=True)
    out = np.repeat(np.eye(4)[None], len(labels), axis=0)
    out[:, :3, :3] = Rotation.from_quat(smoothed[:, :4]).as_matrix()
    out[:, :3, 3] = direction * smoothed[:, 7:]
    return make_label(out, _hold_invalid(K, valid))


def smooth_crop(
    centers: np.ndarray, sizes: np.ndarray, sigma: float, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-phase smoothing of crop squares; the size is smoothed in log space (zooms are ratios).

    Args:
        centers: [T, 2] crop centres in frame pixels.
        sizes: [T] crop sides in frame pixels (> 0).
        sigma: Gaussian sigma in frames.
        valid: [T] bool.

    Returns:
        centers [T, 2] and sizes [T].
    """
    smoothed = smooth_series(np.column_stack([centers, np.log(sizes)]), sigma, valid)  # one pass for all three
    return smoothed[:, :2], np.exp(smoothed[:, 2])


class OneEuroFilter:
    """Causal one-euro low-pass for a stream of vectors (Casiez et al. 2012).

    The cut-off is `min_cutoff + beta * |speed|` (Hz), speed being the derivative low-passed at
    `d_cutoff`; a vector's speed is its Euclidean norm, so all components share one cut-off.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        """
        Args:
            min_cutoff: cut-off at rest in Hz; lower is smoother and slower.
            beta: how fast the cut-off rises with speed (per unit of the signal per second).
            d_cutoff: cut-off in Hz of the speed estimate.
        """
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"OneEuroFilter(min_cutoff={self.min_cutoff}, beta={self.beta}, d_cutoff={self.d_cutoff})"

    def reset(self) -> None:
        """Forget the history (e.g. after a cut or a long gap)."""
        self._value = None
        self._speed = None

    def __call__(self, x: np.ndarray, dt: float) -> np.ndarray:
        """Filter one sample.

        Args:
            x: [D] the new measurement.
            dt: seconds since the previous sample (> 0).

        Returns:
            [D] the filtered value.
        """
        x = np.asarray(x, dtype=np.float64)
        if self._value is None or self._speed is None:
            self._value, self._speed = x.copy(), np.zeros_like(x)
            return x.copy()
        speed = (x - self._value) / dt
        self._speed = self._speed + _alpha(self.d_cutoff, dt) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * float(np.linalg.norm(self._speed))
        self._value = self._value + _alpha(cutoff, dt) * (x - self._value)
        return self._value.copy()


def one_euro_series(
    values: np.ndarray,
    fps: float,
    min_cutoff: float = 1.0,
    beta: float = 0.05,
    d_cutoff: float = 1.0,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Causal smoothing of a whole series with one `OneEuroFilter` (each output sees only the past).

    Invalid frames hold the last output (the filter is not fed); time keeps running across them.

    Args:
        values: [T] or [T, D].
        fps: frames per second.
        min_cutoff, beta, d_cutoff: see `OneEuroFilter`.
        valid: [T] bool.

    Returns:
        Array shaped like `values`.
    """
    x = np.asarray(values, dtype=np.float64)
    flat = x.reshape(len(x), -1)
    return _causal_series(flat, fps, valid, OneEuroFilter(min_cutoff, beta, d_cutoff)).reshape(x.shape)


def one_euro_labels(
    labels: np.ndarray,
    fps: float,
    min_cutoff: float = 1.0,
    beta: float = 0.05,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Causal camera smoothing for streaming: one-euro on aligned quaternions and on the position.

    Args:
        labels: [T, 25].
        fps: frames per second.
        min_cutoff, beta: see `OneEuroFilter`.
        valid: [T] bool.

    Returns:
        [T, 25] labels.
    """
    return _causal_series(np.asarray(labels, dtype=np.float64), fps, valid, OneEuroCameras(min_cutoff, beta))


class OneEuroCameras:
    """Causal one-euro smoothing of a stream of EG3D cameras, one at a time: the rotation as a sign-aligned
    quaternion, the position as a direction and a radius (labels live on a sphere), each its own filter."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05) -> None:
        self._rotation = OneEuroFilter(min_cutoff, beta)
        self._direction = OneEuroFilter(min_cutoff, beta)
        self._radius = OneEuroFilter(min_cutoff, beta)
        self._reference: np.ndarray | None = None  # the last quaternion, sign-aligned

    def __call__(self, label: np.ndarray, dt: float) -> np.ndarray:
        """Filter one [25] label, `dt` seconds after the previous one; returns the [25] smoothed label."""
        cam2world, K = split_label(np.asarray(label, dtype=np.float64))
        q = Rotation.from_matrix(cam2world[:3, :3]).as_quat()
        if self._reference is not None and np.dot(q, self._reference) < 0:
            q = -q
        self._reference = q
        position = cam2world[:3, 3]
        radius = np.linalg.norm(position, keepdims=True)
        direction = self._direction(position / radius, dt)
        out = np.eye(4)
        out[:3, :3] = Rotation.from_quat(self._rotation(q, dt)).as_matrix()
        out[:3, 3] = direction / np.linalg.norm(direction) * self._radius(radius, dt)
        return make_label(out, K)


def jitter(values: np.ndarray, valid: np.ndarray | None = None) -> float:
    """RMS of second differences over runs of three valid frames.

    Args:
        values: [T] or [T, D]; the second difference of a frame is the Euclidean norm over D.
        valid: [T] bool.

    Returns:
        The RMS, in the unit of `values` per frame squared (NaN with fewer than three frames).
    """
    flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    mask = _valid_mask(valid, len(flat))
    second = flat[2:] - 2.0 * flat[1:-1] + flat[:-2]
    ok = mask[2:] & mask[1:-1] & mask[:-2]
    if not ok.any():
        return float("nan")
    return float(np.sqrt(np.mean(np.sum(second[ok] ** 2, axis=1))))


def lag_frames(raw: np.ndarray, smoothed: np.ndarray, max_lag: int = 10) -> float:
    """Delay of `smoothed` behind `raw`, from the cross-correlation peak of their first differences.

    Args:
        raw: [T] or [T, D] (complete: fill gaps first).
        smoothed: same shape.
        max_lag: largest delay searched, in frames, each way.

    Returns:
        Frames (positive = smoothed is late), refined to sub-frame by a parabola through the peak.
    """
    a = np.diff(np.asarray(raw, dtype=np.float64).reshape(len(raw), -1), axis=0)
    b = np.diff(np.asarray(smoothed, dtype=np.float64).reshape(len(smoothed), -1), axis=0)
    a, b = a - a.mean(0), b - b.mean(0)
    n = len(a)
    max_lag = min(max_lag, n - 2)
    if max_lag < 1:
        return 0.0
    lags = np.arange(-max_lag, max_lag + 1)
    score = np.array(
        [np.sum(a[max(0, -k) : n - max(0, k)] * b[max(0, k) : n - max(0, -k)]) / (n - abs(k)) for k in lags]
    )
    i = int(np.argmax(score))
    if 0 < i < len(lags) - 1:
        left, mid, right = score[i - 1 : i + 2]
        curvature = left - 2.0 * mid + right
        if curvature < 0:
            return float(lags[i] + 0.5 * (left - right) / curvature)
    return float(lags[i])


def _hold_invalid(intrinsics: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """[T, 3, 3] intrinsics; invalid frames take those of the nearest earlier valid frame (or the first)."""
    if valid is None:
        return intrinsics
    mask = _valid_mask(valid, len(intrinsics))
    if not mask.any():
        raise ValueError("no valid frame to smooth")
    source = np.maximum.accumulate(np.where(mask, np.arange(len(mask)), -1))
    return intrinsics[np.where(source >= 0, source, int(np.argmax(mask)))]


def _alpha(cutoff: float, dt: float) -> float:
    """Exponential-smoothing factor of a first-order low-pass at `cutoff` Hz for a step of `dt` s."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def _valid_mask(valid: np.ndarray | None, n: int) -> np.ndarray:
    if valid is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(valid, dtype=bool)
    assert mask.shape == (n,), (mask.shape, n)
    return mask


def _causal_series(rows: np.ndarray, fps: float, valid: np.ndarray | None,
                   filt: OneEuroFilter | OneEuroCameras) -> np.ndarray:
    """[T, D] rows through a causal filter; invalid rows hold the last output (the filter is not fed) while
    time keeps running across them."""
    mask = _valid_mask(valid, len(rows))
    if not mask.any():
        raise ValueError("no valid frame to smooth")
    out = np.empty_like(rows)
    # Frames before the first valid one take its value: there is nothing earlier to hold.
    last, gap = rows[int(np.argmax(mask))], 1
    for i in range(len(rows)):
        if mask[i]:
            last, gap = filt(rows[i], gap / fps), 1
        else:
            gap += 1
        out[i] = last
    return out


def _fill_invalid(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[T, D] values; rows where mask is False get linear interpolation of the others, held at the ends."""
    if mask.all():
        return values.copy()
    if not mask.any():
        raise ValueError("no valid frame to smooth")
    frames = np.arange(len(values))
    return np.stack(
        [np.interp(frames, frames[mask], values[mask, d]) for d in range(values.shape[1])], axis=1
    )
