"""A synthetic job with the real job contract, for testing and benchmarking the batch machinery.

"Videos" here are `.npy` files holding a uint8 array of frames, shape (N, H, W, 3), so the executors,
retries, chunking and reports can be exercised in seconds without model weights or codecs. The job
does honest, deterministic work: it reads the input (a corrupt file raises `InputError`), blurs each
frame of its frame range `work` times with a kernel it "loads" once per worker into the model cache
(counting the loads, so tests can check the cache), and writes the result atomically.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nvsvideo.batch.jobs import JobSpec, WorkerContext
from nvsvideo.errors import InputError
from nvsvideo.files import atomic_output

SUFFIX = ".npy"
"""Suffix of synthetic videos and their outputs."""


def write_frames(path: Path, frames: np.ndarray) -> None:
    """Save frames (N, H, W, 3) uint8 atomically."""
    assert frames.ndim == 4 and frames.shape[-1] == 3 and frames.dtype == np.uint8, (
        frames.shape,
        frames.dtype,
    )
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, frames, allow_pickle=False)


def read_frames(path: Path, *, mmap: bool = False) -> np.ndarray:
    """Load frames (N, H, W, 3) uint8; anything else is an `InputError`."""
    try:
        frames = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise InputError(
            f"{path.name} is not a readable frame file ({type(err).__name__}); replace or remove it"
        ) from None
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"{path.name} holds {frames.dtype} {frames.shape}, not uint8 frames (N, H, W, 3)")
    return frames


def count_frames(spec: JobSpec) -> int:
    """Frames in a synthetic video, without reading them (`Chunking.count_frames`)."""
    return len(read_frames(spec.input, mmap=True))


def merge_parts(parts: Sequence[Path], spec: JobSpec) -> None:
    """Join part files, in the given order, into the video's output (`Chunking.merge`)."""
    write_frames(spec.output, np.concatenate([read_frames(p) for p in parts]))


def blur_job(spec: JobSpec, ctx: WorkerContext) -> dict[str, Any]:
    """Blur the frames of `spec` `spec.options["work"]` times (default 1) and write them to `spec.output`.

    Returns the job summary: frames written, seconds per stage, and how many times this worker has
    loaded its kernel (1 when the model cache works).
    """
    start = time.perf_counter()
    frames = read_frames(spec.input)
    if spec.frames is not None:
        frames = frames[spec.frames.start : spec.frames.stop]
    read_done = time.perf_counter()
    if "blur_kernel" not in ctx.models:
        ctx.models["blur_kernel"] = np.full((3, 3), 1.0 / 9.0, dtype=np.float32)
        ctx.models["loads"] = ctx.models.get("loads", 0) + 1
    out = box_blur(frames, ctx.models["blur_kernel"], repeats=int(spec.options.get("work", 1)))
    blur_done = time.perf_counter()
    write_frames(spec.output, out)
    return {
        "frames": len(out),
        "stages": {
            "read": read_done - start,
            "blur": blur_done - read_done,
            "write": time.perf_counter() - blur_done,
        },
        "loads": ctx.models["loads"],
        "device": ctx.device,
    }


def box_blur(frames: np.ndarray, kernel: np.ndarray, *, repeats: int) -> np.ndarray:
    """Convolve every frame with a 3x3 kernel `repeats` times, edges replicated.

    Args:
        frames: (N, H, W, 3) uint8.
        kernel: (3, 3) float32 weights.
        repeats: passes (0 returns a copy).

    Returns:
        (N, H, W, 3) uint8.
    """
    assert kernel.shape == (3, 3), kernel.shape
    x = frames.astype(np.float32)
    height, width = x.shape[1:3]
    for _ in range(repeats):
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
        x = sum(
            kernel[dy, dx] * padded[:, dy : dy + height, dx : dx + width]
            for dy in range(3)
            for dx in range(3)
        )
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def slow_job(spec: JobSpec, ctx: WorkerContext) -> dict[str, Any]:
    """Write `spec.output` atomically over `spec.options["seconds"]`: the temporary file exists meanwhile, as a
    video's does while it is encoded (for interruption tests)."""
    frames = read_frames(spec.input)
    deadline = time.monotonic() + float(spec.options.get("seconds", 0))
    with atomic_output(spec.output) as tmp, open(tmp, "wb") as fh:
        fh.write(b"partial")
        while time.monotonic() < deadline:
            time.sleep(0.05)
        fh.seek(0)
        np.save(fh, frames, allow_pickle=False)
    return {"frames": len(frames), "worker": ctx.worker}
