"""Which implementation of each model and compositing operation runs on which device (issues 12, 19).

Every operation has one definition (`modulated_conv2d`, `fir_filter2d`, `upsample2d`, `sample_triplane`,
`render_chunked`, the encoders' forward) that asks `kernels_for(device)` which variant to run. The CPU keeps
the variants measured fastest with oneDNN on few cores; CUDA and MPS get variants that avoid cuDNN's slow
grouped kernels and per-item Python loops. All variants compute the same maths; tests force each one on
the CPU with `use_kernels`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

ModconvKernel = Literal["per_sample", "dense"]
FirKernel = Literal["depthwise", "folded"]
TriplaneKernel = Literal["embedding_bag", "grid_sample"]
RenderKernel = Literal["per_item", "whole_batch"]
NetworkKernel = Literal["per_item", "batched"]
ResampleKernel = Literal["block_views", "gathered"]


@dataclass(frozen=True)
class Kernels:
    """One choice per operation."""

    modconv: ModconvKernel
    """'per_sample': one conv per sample with its own modulated weight (fast with oneDNN);
    'dense': the official non-fused form, one conv with the shared weight for the whole batch."""
    fir: FirKernel
    """'depthwise': one grouped conv (groups = channels); 'folded': channels folded into the batch and one
    single-channel conv (cuDNN runs grouped convs with a slow direct kernel)."""
    triplane: TriplaneKernel
    """'embedding_bag': one weighted gather of 12 corner rows per point; 'grid_sample': bilinear grid_sample."""
    render: RenderKernel
    """'per_item': one batch item at a time (its tri-plane stays in cache); 'whole_batch': all items at once."""
    networks: NetworkKernel
    """'per_item': encoders and style affines run each batch item alone, so a frame's result is bitwise
    independent of its batch (oneDNN and MKL pick batch-dependent kernels); 'batched': whole batch at once."""
    resample: ResampleKernel = "block_views"
    """The compositing's banded matrix products (`nvsvideo.compose.resample`): 'block_views': one matrix product
    per block of outputs on a view of its source window, converted to float a few blocks at a time (a few
    dozen small calls, small temporaries); 'gathered': the blocks' windows gathered into one tensor and one
    batched product (a few launches per pass)."""


#: Measured fastest on a 2-core CPU, and batch-invariant.
CPU_KERNELS = Kernels(modconv="per_sample", fir="depthwise", triplane="embedding_bag", render="per_item",
                      networks="per_item")
#: Few large launches for GPUs (CUDA, MPS).
GPU_KERNELS = Kernels(modconv="dense", fir="folded", triplane="grid_sample", render="whole_batch",
                      networks="batched", resample="gathered")

_forced: ContextVar[Kernels | None] = ContextVar("nvsvideo_kernels", default=None)


def kernels_for(device: torch.device) -> Kernels:
    """The kernels to run on `device`: the `use_kernels` override when one is active, else the device's default."""
    forced = _forced.get()
    if forced is not None:
        return forced
    return CPU_KERNELS if device.type == "cpu" else GPU_KERNELS


@contextlib.contextmanager
def use_kernels(kernels: Kernels) -> Iterator[Kernels]:
    """Run the enclosed code with `kernels` on every device (scoped to this context and thread)."""
    token = _forced.set(kernels)
    try:
        yield kernels
    finally:
        _forced.reset(token)


def map_items(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """fn applied to each batch item alone (all tensors split on dim 0), the results concatenated on dim 0."""
    batch = tensors[0].shape[0]
    if batch == 1:
        return fn(*tensors)
    return torch.cat([fn(*(t[i:i + 1] for t in tensors)) for i in range(batch)])


def run_network(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> torch.Tensor:
    """fn on the whole batch, or on each item alone where the `networks` kernel is 'per_item'."""
    if kernels_for(tensors[0].device).networks == "per_item":
        return map_items(fn, *tensors)
    return fn(*tensors)


_Forward = TypeVar("_Forward", bound=Callable[..., torch.Tensor])


def itemwise(forward: _Forward) -> _Forward:
    """Decorate a module's forward(self, *tensors) so that it runs through `run_network`."""

    @functools.wraps(forward)
    def wrapper(self: torch.nn.Module, *tensors: torch.Tensor) -> torch.Tensor:
        return run_network(functools.partial(forward, self), *tensors)

    return wrapper  # type: ignore[return-value]
