"""How many frames go through the models at once: `--batch-size auto|N`, sized from GPU memory, halved on OOM.

`auto` on CUDA runs the first batch with one frame, reads the peak memory it allocated, and sizes the
next batches to a safety fraction of the memory still free (capped: beyond a few dozen frames a larger
batch no longer speeds a GPU up, it only delays the first output). On the CPU and MPS `auto` means 1,
the fastest size measured on the CPU (larger batches only add cache pressure there).

An explicit size is used as given. On every device an out-of-memory error halves the batch and retries
the frames that failed, and the smaller size is kept for the rest of the run, so a run never dies after
minutes of work because another process took memory. Every frame's result is independent of the batch
it is computed in (per-frame seeds), so a split batch gives the frames an unsplit one would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch

from nvsvideo.errors import DeviceError
from nvsvideo.validate import AUTO, BatchSpec

T = TypeVar("T")

#: Largest batch `auto` picks.
MAX_AUTO_BATCH = 32
#: Share of the free GPU memory `auto` plans to use; the rest absorbs allocator fragmentation and
#: the variation of the footprint between frames.
MEMORY_SAFETY = 0.7


def auto_batch_size(available_bytes: int, frame_bytes: int, *, safety: float = MEMORY_SAFETY,
                    cap: int = MAX_AUTO_BATCH) -> int:
    """Frames per batch that fit in `safety` x `available_bytes` at `frame_bytes` each, within [1, cap].

    `frame_bytes` is the peak memory one frame's batch took above what was allocated before it; it includes
    the fixed workspace of the kernels too, so the estimate errs on the small side.
    """
    if frame_bytes <= 0:
        return cap
    return max(1, min(cap, int(safety * available_bytes) // frame_bytes))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether `err` is a device out-of-memory error (CUDA's own class, or the message MPS and older builds use)."""
    oom_class = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_class is not None and isinstance(err, oom_class):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


class MemoryProbe(Protocol):
    """What `Batcher` reads from a device's allocator (injectable: tests fake it on the CPU)."""

    def start(self) -> None:
        """Begin measuring the peak of one batch."""

    def peak_bytes(self) -> int:
        """Peak allocated since `start`, above what was allocated at `start`."""

    def available_bytes(self) -> int:
        """Memory a batch can still use: free on the device plus what the allocator holds unused."""

    def release(self) -> None:
        """Return cached blocks after an out-of-memory error."""


@dataclass
class CudaMemoryProbe:
    """`MemoryProbe` of a CUDA device, from torch's caching allocator and the driver."""

    device: torch.device
    _base: int = 0

    def start(self) -> None:
        torch.cuda.synchronize(self.device)
        self._base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak_bytes(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - self._base

    def available_bytes(self) -> int:
        free, _ = torch.cuda.mem_get_info(self.device)
        return free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device)

    def release(self) -> None:
        torch.cuda.empty_cache()


class Batcher:
    """Runs per-frame work in batches of the size `spec` asks for, adapting it to the device's memory.

    Callers gather up to `gather` frames, then call `run`, which splits them into batches of the current
    size. One `Batcher` per stage (inversion, rendering): their footprints differ.
    """

    def __init__(self, spec: BatchSpec, device: torch.device, *, probe: MemoryProbe | None = None,
                 is_oom: Callable[[BaseException], bool] = is_out_of_memory,
                 warn: Callable[[str], None] | None = None, cap: int = MAX_AUTO_BATCH) -> None:
        self.cap = cap
        self.is_oom = is_oom
        self.warn = warn
        self.probe = probe if probe is not None else (CudaMemoryProbe(device) if device.type == "cuda" else None)
        #: The current batch size; None until `auto` has measured a first frame (CUDA only).
        self.size: int | None = (None if device.type == "cuda" else 1) if spec == AUTO else int(spec)

    @property
    def gather(self) -> int:
        """How many frames callers should hand to one `run` call."""
        return self.cap if self.size is None else self.size

    def run(self, fn: Callable[..., list[T]], *columns: Any) -> list[T]:
        """`fn` over the items of `columns` in batches, the results concatenated.

        `columns` are equally long sliceable sequences (arrays, lists, tensors); `fn` receives a slice of
        each and returns one result per item, computed independently of the others (so a retry after an
        out-of-memory error can split them).

        Raises:
            DeviceError: out of memory with a single frame per batch.
        """
        count = len(columns[0])
        assert all(len(column) == count for column in columns), "columns differ in length"
        results: list[T] = []
        start = 0
        while start < count:
            measuring = self.size is None
            if measuring:
                assert self.probe is not None, "auto batch sizing needs a memory probe"
                self.probe.start()
            stop = start + 1 if self.size is None else min(count, start + self.size)
            try:
                part = fn(*(column[start:stop] for column in columns))
            except Exception as err:
                if not self.is_oom(err):
                    raise
                if stop - start == 1:
                    raise DeviceError("the device ran out of memory with one frame per batch: close other "
                                      "programs using it, lower --render-resolution or --samples, or use "
                                      "--device cpu") from None
                failed = stop - start
            else:
                results.extend(part)
                start = stop
                if measuring:
                    self.size = auto_batch_size(self.probe.available_bytes(), self.probe.peak_bytes(),
                                                cap=self.cap)
                continue
            # Out of memory: outside the except block, so the failed batch's tensors are freed first.
            self.size = failed // 2
            if self.probe is not None:
                self.probe.release()
            if self.warn is not None:
                self.warn(f"out of device memory with {failed} frames per batch: continuing with {self.size}")
        return results
