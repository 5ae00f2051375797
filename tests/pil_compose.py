"""The crop and paste-back as they were before issue 19 (Pillow's Lanczos, numpy blend): the reference the
torch versions must match within one 8-bit level (tests) and the baseline of `bench/host.py`."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from nvsvideo.face.crop import CropTransform, _corner_map, crop_box, feather_weights


def pil_resample(image: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]) -> np.ndarray:
    """Pillow's Lanczos resize of the corner-coordinate rectangle `box` of a uint8 [H, W, C] image to `size`
    (w, h), black outside the image: the rectangle plus the filter's reach is copied into a zero window."""
    x0, y0, x1, y1 = box
    margin = math.ceil(3.0 * max(1.0, 1.0 / min(size[0] / (x1 - x0), size[1] / (y1 - y0)))) + 1
    left, top = math.floor(x0) - margin, math.floor(y0) - margin
    right, bottom = math.ceil(x1) + margin, math.ceil(y1) + margin
    window = np.zeros((bottom - top, right - left, image.shape[2]), np.uint8)
    h, w = image.shape[:2]
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(right, w), min(bottom, h)
    if sx0 < sx1 and sy0 < sy1:
        window[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1]
    resized = Image.fromarray(window).resize(size, Image.Resampling.LANCZOS,
                                             box=(x0 - left, y0 - top, x1 - left, y1 - top))
    return np.array(resized)


def pil_crop(image: np.ndarray, tf: CropTransform) -> np.ndarray:
    """The crop of a uint8 [H, W, 3] frame with Pillow."""
    return pil_resample(image, crop_box(tf), (tf.output_size, tf.output_size))


def pil_paste_back(frame: np.ndarray, crop_image: np.ndarray, tf: CropTransform, mask_feather: float = 0.1) -> np.ndarray:
    """The feathered paste-back with Pillow and a float32 numpy blend, into a copy of the frame."""
    size = tf.output_size
    sx, sy, bx, by = _corner_map(tf)
    h, w = frame.shape[:2]
    x0, x1 = max(math.ceil(-bx / sx), 0), min(math.floor((size - bx) / sx), w)
    y0, y1 = max(math.ceil(-by / sy), 0), min(math.floor((size - by) / sy), h)
    out = frame.copy()
    if x0 >= x1 or y0 >= y1:
        return out
    box = (sx * x0 + bx, sy * y0 + by, sx * x1 + bx, sy * y1 + by)
    patch = pil_resample(crop_image, box, (x1 - x0, y1 - y0)).astype(np.float32)
    wx = feather_weights(sx * (np.arange(x0, x1) + 0.5) + bx, size, mask_feather)
    wy = feather_weights(sy * (np.arange(y0, y1) + 0.5) + by, size, mask_feather)
    weight = (wy[:, None] * wx[None, :])[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.rint(region + weight * (patch - region)).clip(0, 255).astype(np.uint8)
    return out
