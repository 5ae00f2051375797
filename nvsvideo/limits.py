"""Ranges of the size-like options and the host memory a run needs, checked before any work.

A value far outside what the models can use (a 100000-pixel face, a billion depth samples per ray) would
otherwise run until the kernel kills the process, which ignores SIGTERM while it allocates. Torch-free, so a
refusal costs a second.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from nvsvideo.errors import DeviceError, UsageError


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of an option, and the unit its values are in (for messages)."""

    low: float
    high: float
    unit: str = ""

    def describe(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        return f"{_number(self.low)} to {_number(self.high)}{unit}"


#: Every size-like option's range (the README lists them). The upper bounds are far above what the released
#: models use (a 512 face, 128 rendering resolution, 2x samples) yet keep one frame's buffers in gigabytes.
RANGES: dict[str, Range] = {
    "--size": Range(64, 4096, "pixels"),
    "--samples": Range(0.1, 16, "x the model's depth samples"),
    "--render-resolution": Range(16, 512, "pixels"),
    "--batch-size": Range(1, 1024, "frames"),
    "--frames": Range(1, 1_000_000, "frames"),
    "--seconds": Range(0.01, 86_400, "seconds"),
    "--fps": Range(0.01, 1000, "frames per second"),
    "--smooth": Range(0, 60, "seconds"),
    "--chunk-frames": Range(1, 10_000_000, "frames"),
    "--truncation": Range(-10, 10),
    "--yaw": Range(-360, 360, "degrees"),
    "--pitch": Range(-90, 90, "degrees"),
}


def _number(value: float) -> str:
    """Whole numbers in full (100000, not 1e+05), others as short as they read."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def check_range(option: str, value: float | None) -> None:
    """`value` is a finite number within `RANGES[option]` (None: not given, nothing to check).

    Raises:
        UsageError: not finite, or out of range, naming the number and the range.
    """
    if value is None:
        return
    bounds = RANGES[option]
    if not math.isfinite(value):
        raise UsageError(f"{option} must be a finite number ({bounds.describe()}), not {value}")
    if not bounds.low <= value <= bounds.high:
        raise UsageError(f"{option} {_number(value)} is out of range: use {bounds.describe()}")


#: Depth samples per ray of EG3D's FFHQ renderer at multiplier 1 (48 coarse + 48 importance).
SAMPLES_PER_RAY = 96
#: The renderer's neural rendering resolution when none is given (EG3D FFHQ).
DEFAULT_RENDER_RESOLUTION = 128
#: Bytes per depth sample in one decoder pass (gathered plane features, the MLP's hidden layer, outputs).
BYTES_PER_DECODED_SAMPLE = 700
#: Samples decoded per pass (`nvsvideo.models.eg3d.renderer.DEFAULT_CHUNK_SAMPLES`).
CHUNK_SAMPLES = 128 * 128 * 48
#: Super-resolution activations of one 512x512 frame (float32, widest block about 256 channels).
SUPERRES_BYTES = 512 * 512 * 256 * 4
#: Models, libraries and the decoder's reader, whatever the settings.
BASE_BYTES = 1 << 30
#: Batches alive at once in the overlapped pass (decoded, rendering, composing/encoding).
BATCHES_IN_FLIGHT = 3


def output_hw(mode: str, frame_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(height, width) of an output video of layout `mode` (paste, crop, compare), from the input frame's."""
    if mode == "paste":
        return frame_hw
    return (size, 3 * size) if mode == "compare" else (size, size)


def estimate_run_bytes(*, batch: int, render_resolution: int | None, samples: float,
                       frame_hw: tuple[int, int], out_hw: tuple[int, int]) -> int:
    """Host memory a render needs at its peak, from its settings alone (an estimate, rounded up).

    Args:
        batch: frames rendered at once.
        render_resolution: neural rendering resolution (None: the model's default).
        samples: depth-sample multiplier.
        frame_hw: the input frame's (height, width).
        out_hw: the output frame's (height, width).
    """
    res = render_resolution or DEFAULT_RENDER_RESOLUTION
    per_ray = math.ceil(SAMPLES_PER_RAY * samples)
    rays = res * res
    # Each frame's random depth draws (float32, drawn up front) and its depths, weights and features per ray.
    draws = rays * per_ray * 4 * 3
    features = rays * 40 * 4 * 4
    # One decoder pass: a chunk of samples, or one whole ray when a ray holds more than a chunk.
    decoder = max(CHUNK_SAMPLES, per_ray) * BYTES_PER_DECODED_SAMPLE
    # Composition in float32 (a few copies of the output frame) and the uint8 frames queued between stages.
    compose = out_hw[0] * out_hw[1] * 3 * 4 * 4
    queued = BATCHES_IN_FLIGHT * (frame_hw[0] * frame_hw[1] + out_hw[0] * out_hw[1]) * 3
    return BASE_BYTES + decoder + batch * (draws + features + SUPERRES_BYTES + compose + queued)


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new allocation now (Linux: MemAvailable), None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(size: float) -> str:
    """`12580000` -> `'12.6 MB'`: decimal units, as disk sizes are sold and `df -H` shows them."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 999.95:  # what rounds to 1000.0 is shown in the next unit
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


def check_memory(needed: int, available: int | None, what: str) -> None:
    """Refuse a run whose estimated memory exceeds what the machine has free.

    Raises:
        DeviceError: `needed` > `available` (unknown availability passes).
    """
    if available is not None and needed > available:
        raise DeviceError(f"{what} needs about {format_bytes(needed)} of memory and {format_bytes(available)} "
                          "is free; lower --batch-size, --size, --samples or --render-resolution")


def check_render_memory(*, batch_size: int | str, render_resolution: int | None, samples: float,
                        frame_hw: tuple[int, int], output: str, size: int, what: str) -> None:
    """Refuse a render whose settings need more memory than is free (`estimate_run_bytes`).

    `batch_size` "auto" counts as 1 frame: the smallest batch auto sizing can choose.

    Raises:
        DeviceError: it would not fit.
    """
    batch = 1 if isinstance(batch_size, str) else batch_size
    needed = estimate_run_bytes(batch=batch, render_resolution=render_resolution, samples=samples,
                                frame_hw=frame_hw, out_hw=output_hw(output, frame_hw, size))
    check_memory(needed, available_memory(), what)

