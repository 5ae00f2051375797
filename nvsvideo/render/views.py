"""Render tri-planes from given cameras, one fixed sampling seed per video frame.

EG3D's renderer draws random depths (stratified jitter and importance sampling) at inference. Drawing
them from one seed per frame index makes a frame's render independent of the batch it was rendered in
and of everything rendered before it: re-runs are identical and consecutive frames do not flicker from
fresh sampling noise that the official scripts draw from the global generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nvsvideo.models.eg3d.generator import TriPlaneGenerator


@dataclass(frozen=True)
class RenderOptions:
    """How to render; the defaults reproduce the checkpoint's own settings."""

    neural_rendering_resolution: int | None = None
    """Rays per image side; None keeps the checkpoint's value (128 for the FFHQ 512 models)."""
    samples_multiplier: float = 1.0
    """Scales both depth sample counts (the official inversion scripts use 2)."""
    chunk_rays: int | None = None
    """Rays rendered at a time per image, to bound memory; the result does not change."""
    seed: int = 0
    """Base sampling seed; frame i draws from seed + i."""


def frame_generators(frame_indices: Sequence[int], seed: int) -> list[torch.Generator]:
    """One CPU random generator per frame, seeded `seed + frame index`.

    Every render of a frame draws from its own generator in a fixed order, so a frame's result does
    not depend on which other frames share its batch (and a resumed run reproduces an uninterrupted one).
    """
    return [torch.Generator(device="cpu").manual_seed(seed + int(i)) for i in frame_indices]


@torch.inference_mode()
def render_views(generator: TriPlaneGenerator, planes: torch.Tensor, ws: torch.Tensor, labels: torch.Tensor,
                 frame_indices: Sequence[int], options: RenderOptions) -> dict[str, torch.Tensor]:
    """Render each (planes, ws) from its camera with the frame's fixed draws.

    Args:
        generator: the EG3D generator.
        planes: [B, 96, H, W] tri-planes.
        ws: [B, 14, 512] latent codes (the super-resolution reads them).
        labels: [B, 25] render cameras.
        frame_indices: [B] frame numbers, for the sampling seeds.
        options: render options.
    Returns:
        the generator's outputs: 'image' [B, 3, 512, 512] in about [-1, 1], 'image_raw', 'image_depth' [B, 1, N, N].
    """
    assert planes.shape[0] == ws.shape[0] == labels.shape[0] == len(frame_indices), "batch sizes differ"
    return generator.render_planes(
        planes, ws, labels.to(planes.device, torch.float32),
        neural_rendering_resolution=options.neural_rendering_resolution,
        samples_multiplier=options.samples_multiplier,
        chunk_rays=options.chunk_rays,
        rng=frame_generators(frame_indices, options.seed),
    )
