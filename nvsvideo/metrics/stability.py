"""Temporal stability: how much a video changes from one frame to the next, against its input.

A re-render should change as much as its input does; when the input holds still and the output
does not, the output flickers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def frame_change(previous: np.ndarray, current: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames of one shape, in levels (0-255), over pixels and channels."""
    if previous.shape != current.shape:
        raise ValueError(f"frames of different shapes: {previous.shape} and {current.shape}")
    return float(np.abs(current.astype(np.int16) - previous.astype(np.int16)).mean())


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def stability_summary(input_changes: Sequence[float | None], output_changes: Sequence[float | None]
                      ) -> dict[str, Any]:
    """Mean frame-to-frame change of input and output over the frame pairs measured in both, and their ratio.

    Args:
        input_changes, output_changes: per frame t, the change from frame t-1 (None where not measured,
            as for frame 0).
    Returns:
        {"pairs", "input_change", "output_change", "ratio"}: ratio = output / input (1 = as stable as the
        input, above 1 = the output flickers), None when the input never changes or no pair was measured.
    """
    both = [(a, b) for a, b in zip(input_changes, output_changes, strict=True) if a is not None and b is not None]
    mean_in = _mean([a for a, _ in both])
    mean_out = _mean([b for _, b in both])
    ratio = mean_out / mean_in if mean_in and mean_out is not None else None
    return {"pairs": len(both), "input_change": mean_in, "output_change": mean_out, "ratio": ratio}
