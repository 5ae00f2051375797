"""Box arithmetic for finding faces fast: detection on a reduced frame, boxes carried by landmarks.

Boxes are float [4] x1, y1, x2, y2 in frame pixels (pixel centres at integers), as in `Face.box`.
"""

from __future__ import annotations

import numpy as np


def box_of_points(points: np.ndarray) -> np.ndarray:
    """Tight box around points.

    Args:
        points: float [N, 2] (x, y).

    Returns:
        float64 [4]: x1, y1, x2, y2.
    """
    return np.concatenate([points.min(axis=0), points.max(axis=0)]).astype(np.float64)


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes float [4] (x1, y1, x2, y2)."""
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def reduction_factor(height: int, width: int, working_size: int) -> int:
    """The integer factor that shrinks a frame to no less than `working_size` on its longest side.

    An integer factor makes the reduced pixel grid an exact subsampling of the frame's, so boxes map back
    without resampling error; rounding down keeps the smallest findable face at most `working_size`-relative.
    0 (or a frame already that small) means no reduction: factor 1.
    """
    if working_size <= 0:
        return 1
    return max(1, max(height, width) // working_size)


def box_from_reduced(box: np.ndarray, factor: float) -> np.ndarray:
    """A box found in a frame reduced `factor` times (each pixel the mean of a factor x factor block), in frame pixels.

    Reduced pixel i averages frame pixels factor·i .. factor·i + factor - 1, whose centre is factor·i + (factor - 1)/2.
    The same holds for a non-integer factor (a resized region whose pixel covers `factor` frame pixels).
    """
    return np.asarray(box, np.float64) * factor + (factor - 1) / 2


def box_relation(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Where `box` lies relative to `landmarks`: its centre's offset from their mean, and its size.

    Returns:
        float64 [4]: offset (x, y) of the box centre from the landmarks' mean, box width and height, in pixels.
    """
    box = np.asarray(box, np.float64)
    return np.concatenate([(box[:2] + box[2:]) / 2 - landmarks.mean(axis=0), box[2:] - box[:2]])


def box_from_relation(relation: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The box that stands in `relation` (see `box_relation`) to `landmarks`: moved with them, same size."""
    middle, half = landmarks.mean(axis=0) + relation[:2], relation[2:] / 2
    return np.concatenate([middle - half, middle + half])


def region_around(box: np.ndarray, margin: float, height: int, width: int) -> tuple[int, int, int, int]:
    """Integer pixel region (x1, y1, x2, y2, end-exclusive) around `box`, grown by `margin` box sides, inside the frame."""
    side = max(box[2] - box[0], box[3] - box[1])
    x1 = int(np.clip(np.floor(box[0] - margin * side), 0, width))
    y1 = int(np.clip(np.floor(box[1] - margin * side), 0, height))
    x2 = int(np.clip(np.ceil(box[2] + margin * side) + 1, 0, width))
    y2 = int(np.clip(np.ceil(box[3] + margin * side) + 1, 0, height))
    return x1, y1, x2, y2

