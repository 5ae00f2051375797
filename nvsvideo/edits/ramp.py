"""Strength ramps: a piecewise-linear multiplier of an edit's strength over the clip's time.

Spec: comma-separated `TIME:VALUE` keys, e.g. `0s:0,1s:1,4s:1,5s:0` (fade in over the first
second, hold, fade out by 5 s). TIME is a non-negative number with unit `s` (seconds) or `f`
(frames, converted with the video's frame rate); a bare number takes the unit the other keys use,
or seconds if none has one. One spec uses one unit. Keys must be strictly increasing in time.
Between keys the value is interpolated linearly; before the first key and after the last it is
held constant. The value multiplies `--strength`, so `--strength 2` with the ramp above peaks at 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from nvsvideo.errors import UsageError

TimeUnit = Literal["s", "f"]
_EXAMPLE = "e.g. 0s:0,1s:1,4s:1,5s:0 or 0f:0,30f:1"


def piecewise_linear(x: Tensor, key_x: Tensor, key_y: Tensor) -> Tensor:
    """Interpolate linearly between keys, holding the end values outside them.

    Args:
        x: [T] query points.
        key_x: [K] strictly increasing key positions, K >= 1.
        key_y: [K] values at the keys.

    Returns:
        [T] values, exactly `key_y[k]` where `x == key_x[k]`.
    """
    if key_x.numel() == 1:
        return key_y.expand_as(x).clone()
    right = torch.searchsorted(key_x, x, right=True).clamp(1, key_x.numel() - 1)
    x0, x1 = key_x[right - 1], key_x[right]
    weight = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
    # lerp returns the end value exactly at weight 1, so the last key is hit bit-for-bit.
    return torch.lerp(key_y[right - 1], key_y[right], weight)


@dataclass(frozen=True)
class Ramp:
    """A parsed strength ramp (see the module docstring for the spec)."""

    times: tuple[float, ...]
    """Key times, strictly increasing, in `unit`."""
    values: tuple[float, ...]
    """Strength multipliers at the keys."""
    unit: TimeUnit = "s"
    """`s` for seconds, `f` for frame numbers."""
    spec: str = ""
    """The text it was parsed from, for messages and summaries."""

    @property
    def peak(self) -> float:
        """Largest |value| the ramp reaches (always at a key, as it is piecewise linear)."""
        return max(abs(v) for v in self.values)

    def at(self, times_seconds: Tensor, fps: float | None = None) -> Tensor:
        """Ramp values at the given frame times.

        Args:
            times_seconds: [T] presentation times of the frames, in seconds.
            fps: frame rate; needed only when the keys are in frames.

        Returns:
            float32 [T] on the device of `times_seconds`.

        Raises:
            UsageError: frame keys without a usable frame rate.
        """
        assert times_seconds.ndim == 1, f"times_seconds must be [T], got {list(times_seconds.shape)}"
        key_times = torch.tensor(self.times, dtype=torch.float64, device=times_seconds.device)
        if self.unit == "f":
            if fps is None or not fps > 0:
                raise UsageError(f"the strength ramp '{self.spec}' counts frames, which needs the video's frame rate")
            key_times = key_times / fps
        key_values = torch.tensor(self.values, dtype=torch.float64, device=times_seconds.device)
        return piecewise_linear(times_seconds.to(torch.float64), key_times, key_values).to(torch.float32)


def _parse_key(text: str, spec: str) -> tuple[float, TimeUnit | None, float]:
    """One `TIME:VALUE` key -> (time, unit or None when bare, value)."""
    problem = f"bad key '{text.strip()}' in strength ramp '{spec}': write TIME:VALUE keys, {_EXAMPLE}"
    time_text, _, value_text = text.partition(":")
    time_text = time_text.strip().lower()
    unit: TimeUnit | None = "s" if time_text.endswith("s") else "f" if time_text.endswith("f") else None
    try:
        time, value = float(time_text[:-1] if unit else time_text), float(value_text)
    except ValueError:
        raise UsageError(problem) from None
    if not (math.isfinite(time) and math.isfinite(value)) or time < 0:
        raise UsageError(problem)
    return time, unit, value


def parse_ramp(spec: str) -> Ramp:
    """Parse a ramp spec such as `0s:0,1s:1,4s:1,5s:0`, `0:0,30f:1` or `2.5:1`.

    Raises:
        UsageError: empty spec, malformed key, mixed units, or times not strictly increasing.
    """
    pieces = [piece for piece in spec.split(",") if piece.strip()]
    if not pieces:
        raise UsageError(f"the strength ramp is empty: give TIME:VALUE keys, {_EXAMPLE}")
    keys = [_parse_key(piece, spec) for piece in pieces]
    units = {unit for _, unit, _ in keys if unit is not None}
    if len(units) > 1:
        raise UsageError(f"strength ramp '{spec}' mixes seconds and frames; use one unit for all keys")
    times = tuple(time for time, _, _ in keys)
    if any(later <= earlier for earlier, later in zip(times, times[1:], strict=False)):
        raise UsageError(f"strength ramp '{spec}' has key times that do not strictly increase")
    return Ramp(times=times, values=tuple(value for _, _, value in keys), unit=units.pop() if units else "s", spec=spec)
