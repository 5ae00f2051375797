"""The EG3D / TriPlaneNet in-the-wild face crop, with its exact forward and inverse transform.

The official preprocessing (Deep3DFaceRecon's `align_img`, then EG3D's `crop_images_in_the_wild.py`):
1. five points: eye centres, nose tip, mouth corners, with y flipped to point up (y' = H - 1 - y);
2. a weak-perspective fit (POS) of those points to five standard 3D face points gives a scale s
   (pixels per model unit) and the image position t of the model origin;
3. the image is resized by k = 300 / s (bicubic, sizes truncated to integers), a 1024 window is cut
   around t (offsets truncated to integers), its central 700 x 700 is resized to 512 (Lanczos).

The net effect is an axis-aligned square of (7/3)·s source pixels (no rotation: roll stays in the
picture and goes into the camera). We keep that geometry as one affine map and resample once, with
Lanczos over the exact source rectangle, instead of twice.

Coordinates: pixel centres at integers, x right, y down, in the frame and in the crop alike (the
convention of dlib's and FAN's landmarks). `CropTransform.matrix` maps frame -> crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from nvsvideo.compose.resample import cpu_threads, image_tensor, resample
from nvsvideo.compose.yuv import (
    CHROMA_ZERO,
    YuvPlanes,
    black_level,
    crop_picture,
    resample_planes,
    rgb_to_ycbcr,
)

#: Deep3DFaceRecon's five standard 3D landmarks (BFM units, y up, +z towards the camera), in the order
#: left eye, right eye, nose tip, left mouth corner, right mouth corner ("left" = smaller image x).
#: Full float32 precision, as its `load_lm3d` returns them: rounded to 4 decimals they move the official
#: fit's origin by up to 0.01 px.
STANDARD_POINTS_3D = np.array([
    [-0.3114865720272064, 0.29036077857017517, 0.13377952575683594],
    [0.30979886651039124, 0.289720356464386, 0.1317952573299408],
    [0.003253498813137412, -0.04617932438850403, 0.5524424314498901],
    [-0.25216928124427795, -0.3813391625881195, 0.22405731678009033],
    [0.24846619367599487, -0.38128235936164856, 0.22235769033432007],
])
ALIGN_WINDOW = 1024
"""Side of the official intermediate window (`target_size`)."""
ALIGN_RESCALE = 300.0
"""Official `rescale_factor`: the image is resized by ALIGN_RESCALE / s."""
CENTER_CROP = 700
"""Side of the centre square of the window that becomes the output: (7/3)·s source pixels."""
OUTPUT_SIZE = 512


@dataclass(frozen=True, eq=False)
class CropTransform:
    """An axis-aligned frame -> crop map (scale and translation per axis) and the crop's size."""

    matrix: np.ndarray
    """float64 [3, 3]: homogeneous (x, y, 1) in frame pixels -> crop pixels."""
    output_size: int
    """Side of the square crop in pixels."""

    def __post_init__(self) -> None:
        assert self.matrix.shape == (3, 3), self.matrix.shape
        assert self.matrix[0, 1] == 0 and self.matrix[1, 0] == 0, "crops are axis-aligned (no rotation)"
        assert self.matrix[0, 0] > 0 and self.matrix[1, 1] > 0, self.matrix

    @property
    def inverse(self) -> np.ndarray:
        """float64 [3, 3]: crop pixels -> frame pixels."""
        return np.linalg.inv(self.matrix)

    def to_json(self) -> dict:
        """Plain-JSON form (for tracks.json)."""
        return {"matrix": self.matrix.tolist(), "output_size": self.output_size}

    @classmethod
    def from_json(cls, data: dict) -> CropTransform:
        return cls(matrix=np.asarray(data["matrix"], np.float64), output_size=int(data["output_size"]))


@dataclass(frozen=True)
class CropSquare:
    """The crop as a square in the frame: the quantities a video smooths over time."""

    cx: float
    """Centre x in frame pixels."""
    cy: float
    """Centre y in frame pixels."""
    side: float
    """Side in frame pixels, (7/3)·s."""


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """The five alignment points from the 68 iBUG landmarks.

    Args:
        landmarks: float [68, 2].

    Returns:
        float64 [5, 2]: left eye centre (mean of 36-41), right eye centre (mean of 42-47), nose tip (30),
        left mouth corner (48), right mouth corner (54); "left" is the smaller image x.
    """
    assert landmarks.shape == (68, 2), landmarks.shape
    lm = landmarks.astype(np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def crop_five_points(landmarks: np.ndarray, crop_points: np.ndarray | None) -> np.ndarray:
    """The five points a face's crop is fitted to: `crop_points` where the backend gave them (`Face.crop_points`),
    else `five_points(landmarks)`."""
    return five_points(landmarks) if crop_points is None else np.asarray(crop_points, np.float64)


def fit_weak_perspective(points: np.ndarray, model: np.ndarray = STANDARD_POINTS_3D) -> tuple[np.ndarray, float]:
    """Least-squares weak-perspective (affine) projection of 3D model points onto image points (POS).

    Solves u_i = r1·X_i + t_x and v_i = r2·X_i + t_y for r1, r2 (3 each) and t; the scale is the mean
    of |r1| and |r2|.

    Args:
        points: float [N, 2] image points (N >= 4), in whatever 2D frame the caller wants t in.
        model: float [N, 3] corresponding 3D points.

    Returns:
        (t float64 [2]: where the model origin projects, s: pixels per model unit).
    """
    n = len(points)
    assert points.shape == (n, 2) and model.shape == (n, 3) and n >= 4, (points.shape, model.shape)
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = model
    a[0::2, 3] = 1.0
    a[1::2, 4:7] = model
    a[1::2, 7] = 1.0
    solution = np.linalg.lstsq(a, points.reshape(-1).astype(np.float64), rcond=None)[0]
    scale = (np.linalg.norm(solution[0:3]) + np.linalg.norm(solution[4:7])) / 2.0
    return np.array([solution[3], solution[7]]), float(scale)


def fit_five_points(points: np.ndarray, image_height: int) -> tuple[np.ndarray, float]:
    """The official fit: five points with y flipped up (y' = H - 1 - y), then POS.

    Args:
        points: float [5, 2] frame pixels (y down) in the order of `STANDARD_POINTS_3D`.
        image_height: frame height H.

    Returns:
        (t float64 [2] in the y-up frame, s pixels per model unit).
    """
    flipped = np.array(points, dtype=np.float64)
    flipped[:, 1] = image_height - 1 - flipped[:, 1]
    t, s = fit_weak_perspective(flipped)
    if not s > 0:
        raise ValueError(f"degenerate landmarks: the face fit has scale {s}")
    return t, s


@dataclass(frozen=True)
class AlignWindow:
    """Where the official `align_img` cuts its window: the whole frame resized, then a square cut from it."""

    resized: tuple[int, int]
    """(w, h) the whole frame is resized to (bicubic), truncated toward zero."""
    left: int
    """Column of the window's left edge in the resized frame (may be negative)."""
    top: int
    """Row of the window's top edge in the resized frame (may be negative)."""
    size: int
    """Side of the window."""


def align_window(t: np.ndarray, s: float, image_hw: tuple[int, int], size: int, rescale: float) -> AlignWindow:
    """The official window geometry for a POS fit (t y-up, s): resize by rescale / s, cut `size` around t.

    Sizes and offsets are truncated toward zero (not floored), as the official `astype(int32)` does.
    """
    h, w = image_hw
    k = rescale / s
    resized_w, resized_h = int(w * k), int(h * k)
    left = int(resized_w / 2 - size / 2 + (t[0] - w / 2) * k)
    top = int(resized_h / 2 - size / 2 + (h / 2 - t[1]) * k)
    return AlignWindow((resized_w, resized_h), left, top, size)


def cut_window(image: np.ndarray, window: AlignWindow) -> np.ndarray:
    """The official pixels of `window`: Pillow bicubic resize of the whole frame, then the cut (black outside).

    Two resamplings cost more than `apply_crop`'s one, but this is what networks trained on the official
    crops saw, level for level.

    Args:
        image: uint8 [H, W, 3] RGB.
        window: from `align_window`.

    Returns:
        uint8 [size, size, 3].
    """
    resized = Image.fromarray(image).resize(window.resized, Image.Resampling.BICUBIC)
    box = (window.left, window.top, window.left + window.size, window.top + window.size)
    return np.asarray(resized.crop(box))


def crop_square_from_points(points: np.ndarray, image_height: int) -> CropSquare:
    """The official crop square of five points, without the integer truncations of its resize-then-cut code.

    The official crop spans `CENTER_CROP / k` = (7/3)·s pixels; its centre is at pixel x = t_x - 1/2,
    y = H - t_y - 1/2 (the official code mixes pixel-centre and pixel-corner conventions there).

    Args:
        points: float [5, 2] frame pixels, in the order of `STANDARD_POINTS_3D`.
        image_height: frame height H (the official fit flips y about it).
    """
    t, s = fit_five_points(points, image_height)
    return CropSquare(cx=float(t[0] - 0.5), cy=float(image_height - t[1] - 0.5), side=CENTER_CROP * s / ALIGN_RESCALE)


def crop_square_from_landmarks(landmarks: np.ndarray, image_height: int) -> CropSquare:
    """`crop_square_from_points` of the five points of 68 landmarks [68, 2]."""
    return crop_square_from_points(five_points(landmarks), image_height)


def _transform_from_corner_map(sx: float, sy: float, bx: float, by: float, output_size: int) -> CropTransform:
    """Build a `CropTransform` from a map in pixel-corner coordinates, q = s·p + b.

    With corners at integers a pixel centre sits at +1/2, so in centre coordinates q = s·p + b + (s - 1)/2.
    """
    matrix = np.array([[sx, 0.0, bx + (sx - 1.0) / 2.0],
                       [0.0, sy, by + (sy - 1.0) / 2.0],
                       [0.0, 0.0, 1.0]])
    return CropTransform(matrix=matrix, output_size=output_size)


def _corner_map(tf: CropTransform) -> tuple[float, float, float, float]:
    """Inverse of `_transform_from_corner_map`: (sx, sy, bx, by) of q = s·p + b in corner coordinates."""
    sx, sy = tf.matrix[0, 0], tf.matrix[1, 1]
    return sx, sy, tf.matrix[0, 2] - (sx - 1.0) / 2.0, tf.matrix[1, 2] - (sy - 1.0) / 2.0


def crop_transform_from_square(square: CropSquare, output_size: int = OUTPUT_SIZE) -> CropTransform:
    """Map the square `square` onto an `output_size` crop (for smoothed squares in videos)."""
    a = output_size / square.side
    # Corner coordinates: the square's centre (cx + 1/2) goes to the crop centre output_size / 2.
    return _transform_from_corner_map(a, a, output_size / 2 - a * (square.cx + 0.5),
                                      output_size / 2 - a * (square.cy + 0.5), output_size)


def crop_transform_from_landmarks(landmarks: np.ndarray, image_hw: tuple[int, int],
                                  output_size: int = OUTPUT_SIZE) -> CropTransform:
    """`crop_transform_from_points` of the five points of 68 landmarks [68, 2]."""
    return crop_transform_from_points(five_points(landmarks), image_hw, output_size)


def crop_transform_from_points(points: np.ndarray, image_hw: tuple[int, int],
                               output_size: int = OUTPUT_SIZE) -> CropTransform:
    """The exact official crop of one image, integer truncations included.

    The official resized image size and window offset are truncated to integers, which moves points
    of the frame by less than 1.5 pixels of the 1024 window, i.e. under 1.1 output pixels, against
    `crop_transform_from_square(crop_square_from_points(...))`; videos use that continuous form,
    whose square can be smoothed over time.

    Args:
        points: float [5, 2] frame pixels, in the order of `STANDARD_POINTS_3D`.
        image_hw: (H, W) of the frame.
        output_size: side of the output crop (official: 512).
    """
    h, w = image_hw
    t, s = fit_five_points(points, h)
    window = align_window(t, s, image_hw, ALIGN_WINDOW, ALIGN_RESCALE)
    (resized_w, resized_h), left, top = window.resized, window.left, window.top
    inner = int(ALIGN_WINDOW / 2 - CENTER_CROP / 2)
    zoom = output_size / CENTER_CROP
    return _transform_from_corner_map(resized_w / w * zoom, resized_h / h * zoom,
                                      -(left + inner) * zoom, -(top + inner) * zoom, output_size)


def points_to_crop(points: np.ndarray, tf: CropTransform) -> np.ndarray:
    """Frame pixels -> crop pixels. points: float [N, 2]; returns float64 [N, 2]."""
    return points @ tf.matrix[:2, :2].T + tf.matrix[:2, 2]


def points_from_crop(points: np.ndarray, tf: CropTransform) -> np.ndarray:
    """Crop pixels -> frame pixels. points: float [N, 2]; returns float64 [N, 2]."""
    inverse = tf.inverse
    return points @ inverse[:2, :2].T + inverse[:2, 2]


def offset_from_identity(tf: CropTransform, image_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """How far `tf` is from the identity, for an image that is an official crop already.

    Re-cropping an official crop with its own five points gives the identity (up to the official
    integer truncations: under 0.75 output pixels of offset, scale in steps of 1/700 at 512), so this is
    how far a landmark backend's crop is from the official one.

    Args:
        tf: the crop found in the image.
        image_hw: (H, W) of the image.

    Returns:
        (offset float64 [2]: where the image's centre lands in the crop, relative to the crop's centre,
        in crop pixels (x right, y down); scale error: the crop's magnification over the identity's, minus 1).
    """
    h, w = image_hw
    centre = points_to_crop(np.array([[(w - 1) / 2, (h - 1) / 2]]), tf)[0]
    return centre - (tf.output_size - 1) / 2, float(tf.matrix[0, 0] * w / tf.output_size - 1)


def crop_box(tf: CropTransform) -> tuple[float, float, float, float]:
    """The crop's square in the frame, (x0, y0, x1, y1) in pixel-corner coordinates."""
    sx, sy, bx, by = _corner_map(tf)
    size = tf.output_size
    return -bx / sx, -by / sy, (size - bx) / sx, (size - by) / sy


def crop_face(frame: torch.Tensor | YuvPlanes, tf: CropTransform) -> torch.Tensor:
    """Cut the crop out of a frame (Lanczos, black outside the frame), on the frame's device.

    Args:
        frame: uint8 [H, W, 3] RGB frame, or its decoded 4:2:0 picture (`crop_picture`).
        tf: frame -> crop transform.

    Returns:
        uint8 [S, S, 3] RGB with S = tf.output_size.
    """
    if isinstance(frame, YuvPlanes):
        with cpu_threads(frame.y.device):
            return crop_picture(frame, crop_box(tf), tf.output_size)
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == torch.uint8, (frame.shape, frame.dtype)
    size = tf.output_size
    with cpu_threads(frame.device):
        return resample(frame, crop_box(tf), (size, size), dtype=torch.uint8)


def apply_crop(image: np.ndarray, tf: CropTransform) -> np.ndarray:
    """`crop_face` of a numpy frame: uint8 [H, W, 3] -> uint8 [S, S, 3] (a new array)."""
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8, (image.shape, image.dtype)
    return crop_face(image_tensor(image), tf).numpy()


def feather_weights(coords: np.ndarray, size: int, feather: float) -> np.ndarray:
    """Blend weight along one crop axis: 1 inside, easing to 0 at the crop's edges.

    Args:
        coords: float [N] pixel-corner coordinates in the crop (0 .. size).
        size: crop side.
        feather: width of the ramp as a fraction of `size` (0 = hard edge).

    Returns:
        float32 [N] in [0, 1]: a smoothstep of the distance to the nearer edge.
    """
    inside = np.minimum(coords, size - coords)
    if feather <= 0:
        return (inside > 0).astype(np.float32)
    ramp = np.clip(inside / (feather * size), 0.0, 1.0)
    return (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)


def paste_face_(frame: torch.Tensor, crop_image: torch.Tensor, tf: CropTransform,
                mask_feather: float = 0.1) -> torch.Tensor:
    """Put a (re-rendered) crop back where it came from in the frame, in place, through the exact inverse map.

    Only the crop's footprint in the frame is read and written; the feather mask is the outer product
    of one weight per row and one per column, never a full-frame image.

    Args:
        frame: uint8 [H, W, 3] frame, changed in place.
        crop_image: uint8 [S, S, 3] crop in the geometry of `tf`, on the frame's device.
        tf: the frame -> crop transform the crop was made with.
        mask_feather: width of the soft blend at the crop's border, as a fraction of the crop side.

    Returns:
        `frame`; pixels outside the crop's footprint are unchanged.
    """
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == torch.uint8, (frame.shape, frame.dtype)
    footprint = _footprint(tf, crop_image, frame.shape[:2])
    if footprint is None:
        return frame
    (x0, x1, y0, y1), weights = footprint, _feather_axes(tf, footprint, mask_feather, frame.device)
    with cpu_threads(frame.device):
        patch = resample(crop_image, _frame_box(tf, footprint), (x1 - x0, y1 - y0))
        _blend_(frame[y0:y1, x0:x1], patch, *weights)
    return frame


def paste_face_yuv_(planes: YuvPlanes, crop_image: torch.Tensor, tf: CropTransform,
                    mask_feather: float = 0.1) -> None:
    """`paste_face_` into a decoded 4:2:0 picture, in place: the crop is converted to YCbCr and each plane
    resampled onto the picture's own samples and blended into them.

    A sample takes the feather weight at its own site (chroma: on the even columns, halfway between two
    rows, as `crop_picture` reads them), so samples where the mask is 0 keep their decoded values exactly;
    elsewhere the result is within a level or two of converting `paste_face_`'s frame to 4:2:0 (a few more
    at strong colour edges, `tests/test_compose_yuv.py`). One full-size plane and two quarter-size ones are
    resampled, against three full-size channels in RGB.

    Args:
        planes: the picture (`i420_planes`), changed in place.
        crop_image: uint8 [S, S, 3] RGB crop in the geometry of `tf`, on the planes' device.
        tf: the frame -> crop transform the crop was made with.
        mask_feather: as `paste_face_`'s.
    """
    footprint = _footprint(tf, crop_image, planes.y.shape)
    if footprint is None:
        return
    x0, x1, y0, y1 = footprint
    sx, sy, bx, by = _corner_map(tf)
    size, device = tf.output_size, planes.y.device
    # The chroma samples of the 2x2 blocks the footprint touches; sample (i, j) is centred on the frame's
    # pixel-corner point (2j + 1/2, 2i + 1) and covers [2j - 1/2, 2j + 3/2) x [2i, 2i + 2).
    cx0, cx1, cy0, cy1 = x0 // 2, (x1 + 1) // 2, y0 // 2, (y1 + 1) // 2
    chroma_box = (sx * (2 * cx0 - 0.5) + bx, sy * 2 * cy0 + by, sx * (2 * cx1 - 0.5) + bx, sy * 2 * cy1 + by)
    wy, wx = _feather_axes(tf, footprint, mask_feather, device)
    wcx = feather_weights(sx * (2 * np.arange(cx0, cx1) + 0.5) + bx, size, mask_feather)
    wcy = feather_weights(sy * (2 * np.arange(cy0, cy1) + 1.0) + by, size, mask_feather)
    with cpu_threads(device):
        luma, cb, cr = rgb_to_ycbcr(crop_image.to(torch.float32), planes.colour)
        patch = resample_planes([luma], _frame_box(tf, footprint), (x1 - x0, y1 - y0), black_level(planes.colour))
        _blend_(planes.y[y0:y1, x0:x1], patch[..., 0], wy, wx)
        chroma = resample_planes([cb, cr], chroma_box, (cx1 - cx0, cy1 - cy0), CHROMA_ZERO)
        wcy_t, wcx_t = torch.from_numpy(wcy).to(device), torch.from_numpy(wcx).to(device)
        for plane, values in ((planes.u, chroma[..., 0]), (planes.v, chroma[..., 1])):
            _blend_(plane[cy0:cy1, cx0:cx1], values, wcy_t, wcx_t)


def _footprint(tf: CropTransform, crop_image: torch.Tensor, frame_hw: tuple[int, int]
               ) -> tuple[int, int, int, int] | None:
    """(x0, x1, y0, y1): the whole frame pixels inside the crop's footprint, clipped to the frame; None if none."""
    size = tf.output_size
    assert crop_image.shape == (size, size, 3) and crop_image.dtype == torch.uint8, crop_image.shape
    sx, sy, bx, by = _corner_map(tf)
    h, w = frame_hw
    x0, x1 = max(math.ceil(-bx / sx), 0), min(math.floor((size - bx) / sx), w)
    y0, y1 = max(math.ceil(-by / sy), 0), min(math.floor((size - by) / sy), h)
    return None if x0 >= x1 or y0 >= y1 else (x0, x1, y0, y1)


def _frame_box(tf: CropTransform, footprint: tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """The crop-pixel rectangle (corner coordinates) that frame pixels [x0, x1) x [y0, y1) cover."""
    sx, sy, bx, by = _corner_map(tf)
    x0, x1, y0, y1 = footprint
    return sx * x0 + bx, sy * y0 + by, sx * x1 + bx, sy * y1 + by


def _feather_axes(tf: CropTransform, footprint: tuple[int, int, int, int], mask_feather: float,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row weights, column weights) of the feather mask at the footprint's frame pixel centres."""
    sx, sy, bx, by = _corner_map(tf)
    x0, x1, y0, y1 = footprint
    # Pixel centres (corner coordinate + 1/2), mapped into the crop.
    wx = feather_weights(sx * (np.arange(x0, x1) + 0.5) + bx, tf.output_size, mask_feather)
    wy = feather_weights(sy * (np.arange(y0, y1) + 0.5) + by, tf.output_size, mask_feather)
    return torch.from_numpy(wy).to(device), torch.from_numpy(wx).to(device)


def _blend_(region: torch.Tensor, patch: torch.Tensor, wy: torch.Tensor, wx: torch.Tensor) -> None:
    """region <- round(lerp(region, patch, wy ⊗ wx)) in place: uint8 [h, w(, c)], float levels, weights [h], [w].

    Where the weight is 1 the result is the rounded patch (lerp returns its end exactly there): copying it
    skips most of a face's area, and only the feathered band blends. Where it is 0, the region is unchanged.
    """
    extra = (None,) * (region.ndim - 2)
    full_y, full_x = torch.nonzero(wy == 1.0).flatten(), torch.nonzero(wx == 1.0).flatten()
    if len(full_x) and len(full_y):
        iy0, iy1, ix0, ix1 = int(full_y[0]), int(full_y[-1]) + 1, int(full_x[0]), int(full_x[-1]) + 1
        region[iy0:iy1, ix0:ix1].copy_(patch[iy0:iy1, ix0:ix1].add(0.5).clamp_(0.0, 255.0))
        bands = [(slice(0, iy0), slice(None)), (slice(iy1, None), slice(None)),
                 (slice(iy0, iy1), slice(0, ix0)), (slice(iy0, iy1), slice(ix1, None))]
    else:
        bands = [(slice(None), slice(None))]
    for rows, columns in bands:
        # Rounding half up: the float -> uint8 copy truncates.
        part = region[rows, columns]
        weight = wy[(rows, None, *extra)] * wx[(None, columns, *extra)]
        part.copy_(part.to(torch.float32).lerp_(patch[rows, columns], weight).add_(0.5).clamp_(0.0, 255.0))


def paste_back(frame: np.ndarray, crop_image: np.ndarray, tf: CropTransform, mask_feather: float = 0.1) -> np.ndarray:
    """`paste_face_` of numpy images into a copy of the frame: uint8 [H, W, 3] and [S, S, 3] -> a new frame."""
    out = frame.copy()
    paste_face_(torch.from_numpy(out), image_tensor(np.ascontiguousarray(crop_image)), tf, mask_feather)
    return out
