"""The contract between the batch machinery and a single-video pipeline.

A pipeline plugs into `run_batch` as a *job function* `process_fn(spec, ctx) -> summary`:

- `spec` (`JobSpec`) says what to do: the input, the final output path, the per-video options and,
  for chunked execution, the range of frames to produce.
- `ctx` (`WorkerContext`) is what the worker owns: its device and a model cache that lives as long as
  the worker, so weights are loaded once per worker process (or Ray actor), not once per video.
- The function writes `spec.output` with `nvsvideo.files.atomic_output` and returns a summary dict;
  the batch reads `"frames"` (int) and `"stages"` (name -> seconds) from it and keeps the rest.
- A problem with this one video is raised as an `NvsError` subclass; the batch records its sentence
  and goes on with the next video.

The function must be importable by name (a module-level function), because process workers and Ray
actors receive it by reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FrameRange:
    """Half-open range of frame indices `[start, stop)` in decode order."""

    start: int
    """First frame to produce."""
    stop: int
    """One past the last frame to produce."""

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"invalid frame range [{self.start}, {self.stop})")

    def __len__(self) -> int:
        return self.stop - self.start

    def label(self) -> str:
        """Zero-padded `start-stop` text that sorts in frame order (used for chunk file names)."""
        return f"{self.start:09d}-{self.stop:09d}"


@dataclass(frozen=True)
class JobSpec:
    """One unit of work: a whole video, or one chunk of it when `frames` is set."""

    key: str
    """Name of the item in the batch (the output file name); unique within a batch."""
    input: Path
    """Video to read."""
    output: Path
    """File to write, atomically. For a chunk this is the chunk's part file, not the final output."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Pipeline options: the batch-wide values overridden by the manifest row's."""
    frames: FrameRange | None = None
    """Only produce these frames (chunked execution); None means the whole video."""
    final_output: Path | None = None
    """For a chunk: the video's final output, which the parts become once joined; None: `output`."""

    @property
    def video_output(self) -> Path:
        """The video's final output, for a chunk as for a whole-video job (e.g. to name per-video files)."""
        return self.final_output if self.final_output is not None else self.output

    def describe(self) -> str:
        """Short label for progress and error messages."""
        return self.key if self.frames is None else f"{self.key} [{self.frames.start}:{self.frames.stop}]"


@dataclass
class WorkerContext:
    """State owned by one worker (the driver itself, a pool process or a Ray actor)."""

    device: str
    """Device spec this worker is pinned to, e.g. `cpu` or `cuda:1`; resolve it with `resolve_device`."""
    models: dict[str, Any] = field(default_factory=dict)
    """Loaded models keyed by the job function's own names; kept for the worker's lifetime."""
    worker: str = "main"
    """Human-readable worker name for the report (`main`, `proc-1`, a Ray actor id)."""


ProcessFn = Callable[[JobSpec, WorkerContext], Mapping[str, Any]]
"""Job function: process one `JobSpec` in a worker and return its summary (see the module docstring)."""
