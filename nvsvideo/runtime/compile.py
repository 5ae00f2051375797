"""`--compile`: `torch.compile` for EG3D's fixed-shape hot path (backbone synthesis, super-resolution), on CUDA.

On a GPU these stages are hundreds of small kernels each, launched one by one from Python; compiling
fuses them. Compilation is opt-in and never required: on the CPU or MPS, with a torch without
`torch.compile`, or when compiling (which happens at the first call of each input shape) raises
anything but an out-of-memory error, nvsvideo warns once and runs the eager modules, whose results
the compiled ones must match anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from nvsvideo.runtime.batching import is_out_of_memory

Compiler = Callable[[Callable[..., Any]], Callable[..., Any]]


@dataclass
class CompileState:
    """Shared by the compiled modules of one model: the compile time spent and whether to give up."""

    warn: Callable[[str], None]
    device: torch.device
    seconds: float = 0.0
    """Wall time of the calls that compiled (each first call of an input shape: compile + one run)."""
    failed: bool = False
    shapes: set[tuple[str, tuple[Any, ...]]] = field(default_factory=set)
    """(module, input shapes) already compiled."""

    def fall_back(self, reason: str) -> None:
        if not self.failed:
            self.failed = True
            self.warn(f"--compile: {reason}; running without compilation")

    def sync(self) -> None:
        # Asynchronous kernels: without a sync the clock would stop before the GPU finished.
        if self.device.type == "cuda" and torch.cuda.is_available():
            torch.cuda.synchronize(self.device)


def compile_hot_path(generator: nn.Module, device: torch.device, warn: Callable[[str], None], *,
                     compiler: Compiler | None = None) -> CompileState:
    """Compile the generator's backbone synthesis and super-resolution in place (CUDA only).

    Args:
        generator: the EG3D `TriPlaneGenerator` (e.g. `TriPlaneNet.decoder`).
        device: where it runs; anything but CUDA keeps the eager modules (with a warning).
        warn: called once with the reason when compilation is not used.
        compiler: wraps a module's forward; default `torch.compile` (tests inject one).
    Returns:
        the state whose `seconds` the pipelines report as the `compile` stage.
    """
    state = CompileState(warn=warn, device=device)
    if device.type != "cuda":
        state.fall_back(f"compilation applies to CUDA devices only, not {device.type}")
        return state
    if compiler is None:
        if not hasattr(torch, "compile"):
            state.fall_back(f"torch {torch.__version__} has no torch.compile")
            return state
        compiler = _torch_compile
    for name, module in (("synthesis", generator.backbone.synthesis), ("superresolution", generator.superresolution)):
        module.forward = _guarded(name, compiler(module.forward), module.forward, state)
    return state


def _torch_compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    # torch's default shape policy: a static graph first, then, once the batch size changes (the last batch of a
    # run is smaller, `auto` sizes after one frame), one graph with a dynamic batch instead of one per size.
    return torch.compile(fn)


def _guarded(name: str, compiled: Callable[..., Any], eager: Callable[..., Any],
             state: CompileState) -> Callable[..., Any]:
    """`compiled`, timed at each new input shape, replaced by `eager` for good when it raises."""

    def call(*args: Any, **kwargs: Any) -> Any:
        if state.failed:
            return eager(*args, **kwargs)
        key = (name, tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)))
        first = key not in state.shapes
        if first:
            state.sync()
            started = time.perf_counter()
        try:
            out = compiled(*args, **kwargs)
        except Exception as err:
            if is_out_of_memory(err):
                raise
            # Compiler errors span pages; their first line names the cause.
            first_line = (str(err).splitlines() or [""])[0][:200]
            state.fall_back(f"compiling the {name} failed ({type(err).__name__}: {first_line})")
            return eager(*args, **kwargs)
        if first:
            state.sync()
            state.seconds += time.perf_counter() - started
            state.shapes.add(key)
        return out

    return call
