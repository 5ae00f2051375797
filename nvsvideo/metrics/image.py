"""Pixel measures of a reconstruction against its input: PSNR and SSIM, computed by scikit-image.

Both take uint8 [H, W, 3] images (data range 255), as written to and read from videos, so the numbers
match what one gets by hand from saved frames.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from nvsvideo.errors import UsageError

#: SSIM as Wang et al. (2004) define it and most papers report it: an 11x11 Gaussian window of sigma
#: 1.5 and population covariances (scikit-image's defaults are a 7x7 box with sample covariances).
SSIM_OPTIONS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def _skimage_metrics() -> ModuleType:
    try:
        from skimage import metrics
    except ImportError as err:
        raise UsageError("PSNR and SSIM need scikit-image; install it with: pip install 'nvsvideo[metrics]'") from err
    return metrics


def _check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape or reference.dtype != np.uint8 or test.dtype != np.uint8:
        raise ValueError(f"expected two uint8 images of one shape, got {reference.dtype}{list(reference.shape)} "
                         f"and {test.dtype}{list(test.shape)}")


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, 10·log10(255² / MSE) over every pixel and channel; inf when equal."""
    _check_pair(reference, test)
    if np.array_equal(reference, test):
        return math.inf  # scikit-image would divide by zero with a warning
    return float(_skimage_metrics().peak_signal_noise_ratio(reference, test, data_range=255))


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Structural similarity (1 = identical), per channel and averaged, with `SSIM_OPTIONS`."""
    _check_pair(reference, test)
    return float(_skimage_metrics().structural_similarity(reference, test, data_range=255, channel_axis=-1,
                                                          **SSIM_OPTIONS))
