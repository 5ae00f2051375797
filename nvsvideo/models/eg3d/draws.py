"""Counter-based random draws for rendering: Philox-4x32-10 in integer tensor ops.

Every uniform a render uses is a pure function of (seed, frame index, render id, which draw, ray, sample):
no generator state. So a frame's draws do not depend on the batch it is rendered in, on ray chunking or on
the device, and they are computed in bulk where the model runs (no host-to-device copies).

Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) maps a 128-bit
counter and a 64-bit key to 128 random bits. The 32 x 32 -> 64-bit products it needs are formed from
16-bit halves in int64, so no intermediate exceeds 2^49: the integers are exact, identical on every CPU
and GPU. Counter and key words here:
    key     = (seed mod 2^32, (seed div 2^32) mod 2^32)     seed taken modulo 2^64
    counter = (ray, sample // 4, frame index, 2 * render id + draw)
and output word j of a block is sample 4 * block + j. A uniform is the top 24 bits times 2^-24: exact in
float32 and never 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

import torch

#: Recorded by the inversion cache: results drawn another way must never be mixed with these.
DRAW_SCHEME = "philox4x32-10-v1"

_MASK32 = 0xFFFFFFFF
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)
_ROUNDS = 10
_WORDS = 4
#: Philox blocks evaluated per pass. CPU: 64k int64 words per temporary, about L2-sized. Other devices: a
#: batch of 8 full renders (128 x 128 rays x 192 samples) in one pass, few launches, while a batch of 32
#: takes four passes so its temporaries (64 MB each) stay far below the memory the batch itself needs.
_CPU_BLOCKS_PER_PASS = 1 << 16
_DEVICE_BLOCKS_PER_PASS = 1 << 23


class RenderId(IntEnum):
    """Which render of a frame a draw belongs to; each gets its own draws.

    TriPlaneNet's inversion renders INITIAL, then (v2) MIRROR, then INPUT_VIEW; the rerender stage renders the
    reconstruction at the input camera as INPUT_VIEW (so it equals the inversion's own final render) and the
    new camera's view as NOVEL.
    """

    INITIAL = 0
    """The encoder's first planes (before the tri-plane offsets) at the input camera."""
    MIRROR = 1
    """v2: the same planes at the input camera mirrored."""
    INPUT_VIEW = 2
    """The final planes at the input camera (the reconstruction)."""
    NOVEL = 3
    """The final planes at the output camera."""


class Draw(IntEnum):
    """The two random tensors of a render."""

    JITTER = 0
    """Stratified depth jitter, D per ray."""
    IMPORTANCE = 1
    """Inverse-CDF importance sampling uniforms, D_imp per ray."""


@dataclass(frozen=True)
class DrawKeys:
    """Keys of one render of a batch: item b draws from (seed, frames[b], render)."""

    seed: int
    """Base seed (any integer; used modulo 2^64)."""
    frames: tuple[int, ...]
    """Frame index of each batch item, in [0, 2^32)."""
    render: int = RenderId.NOVEL
    """Which render of the frames this is (`RenderId`), in [0, 2^31)."""

    def __post_init__(self) -> None:
        if not all(0 <= f <= _MASK32 for f in self.frames):
            raise ValueError(f"frame indices must lie in [0, 2^32), got {self.frames}")
        if not 0 <= self.render <= _MASK32 >> 1:
            raise ValueError(f"render id must lie in [0, 2^31), got {self.render}")

    @classmethod
    def of(cls, seed: int, frames: Sequence[int], render: int = RenderId.NOVEL) -> DrawKeys:
        return cls(int(seed), tuple(int(f) for f in frames), int(render))

    def for_render(self, render: int) -> DrawKeys:
        return replace(self, render=int(render))


def keyed_for(rng: torch.Generator | DrawKeys | None, render: RenderId) -> torch.Generator | DrawKeys | None:
    """The draws of one render of a multi-render pass: counter keys get `render`'s id; a generator (or None,
    torch's global one) is passed on unchanged so its renders keep drawing one after another, in the
    official order."""
    return rng.for_render(render) if isinstance(rng, DrawKeys) else rng


def mulhilo32(a: torch.Tensor, multiplier: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * multiplier for 32-bit a (int64 tensor) and a 32-bit constant.

    The constant is split in 16-bit halves so each partial product stays below 2^48 (int64 never overflows).
    """
    low_part = a * (multiplier & 0xFFFF)
    high_part = a * (multiplier >> 16)  # weight 2^16
    hi = (high_part + (low_part >> 16)) >> 16
    lo = (low_part + ((high_part & 0xFFFF) << 16)) & _MASK32
    return hi, lo


def philox4x32(counter: Sequence[torch.Tensor], key: Sequence[torch.Tensor | int]) -> list[torch.Tensor]:
    """Philox-4x32-10 of 32-bit words held in int64 tensors (broadcast together).

    Args:
        counter: four words c0..c3.
        key: two words k0, k1 (tensors or ints).
    Returns:
        the four output words, int64 in [0, 2^32).
    """
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for round_index in range(_ROUNDS):
        if round_index:
            k0, k1 = (k0 + _WEYL[0]) & _MASK32, (k1 + _WEYL[1]) & _MASK32
        hi0, lo0 = mulhilo32(c0, _MULTIPLIERS[0])
        hi1, lo1 = mulhilo32(c2, _MULTIPLIERS[1])
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


def uniform24(words: torch.Tensor) -> torch.Tensor:
    """32-bit words (int64) -> float32 uniforms k * 2^-24 in [0, 1) from their top 24 bits (exact)."""
    return (words >> 8).to(torch.float32) * 2.0**-24


def counter_uniforms(keys: DrawKeys, num_rays: int, samples: Sequence[int],
                     device: torch.device) -> list[torch.Tensor]:
    """The uniforms of every draw of one render, [N, num_rays, samples[d]] for draw d (see `Draw`), on `device`.

    All draws come from one Philox evaluation over broadcast counters, in groups of rays: on a GPU few large
    groups (few launches, bounded memory); on the CPU groups whose integers stay in cache (2x faster than one
    pass over a 128 x 128 render on the 2-core CPU). The values do not depend on the grouping.
    """
    n = len(keys.frames)
    blocks = [-(-s // _WORDS) for s in samples]
    as_long = {"dtype": torch.int64, "device": device}
    ray = torch.arange(num_rays, **as_long).view(1, -1, 1)
    block = torch.cat([torch.arange(b, **as_long) for b in blocks]).view(1, 1, -1)
    frame = torch.tensor(keys.frames, **as_long).view(n, 1, 1)
    stream = torch.cat([torch.full((b,), 2 * keys.render + d, **as_long) for d, b in enumerate(blocks)]).view(1, 1, -1)
    seed = keys.seed % 2**64
    key = (seed & _MASK32, seed >> 32)
    per_pass = _CPU_BLOCKS_PER_PASS if device.type == "cpu" else _DEVICE_BLOCKS_PER_PASS
    step = max(1, per_pass // max(1, n * sum(blocks)))
    values = torch.cat([
        uniform24(torch.stack(torch.broadcast_tensors(*philox4x32((ray[:, i:i + step], block, frame, stream), key)),
                              dim=-1))
        for i in range(0, num_rays, step)
    ], dim=1)  # [N, M, sum(blocks), 4]
    parts = values.split(blocks, dim=2)
    return [part.reshape(n, num_rays, -1)[..., :s] for part, s in zip(parts, samples, strict=True)]
