"""Render tri-planes from given cameras, with fixed random draws per video frame.

EG3D's renderer draws random depths (stratified jitter and importance sampling) at inference. Here every
draw is a pure function of (seed, frame index, render id, ray, sample), computed by a counter-based generator
on the model's device (`nvsvideo.models.eg3d.draws`). A frame's render is thus independent of the batch it was
rendered in, of ray chunking, of the device and of everything rendered before it: re-runs, resumes and
`--chunk-frames` parts are identical, and consecutive frames do not flicker from fresh sampling noise that
the official scripts draw from the global generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from nvsvideo.models.eg3d.draws import DrawKeys, RenderId
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
    """Sampling seed; each frame's draws are keyed by (seed, frame index, render id)."""
    force_fp32: bool = False
    """Keep the super-resolution in float32 on CUDA too (`--precision fp32`; see `nvsvideo.runtime.precision`)."""


@torch.inference_mode()
def render_views(generator: TriPlaneGenerator, planes: torch.Tensor, ws: torch.Tensor, labels: torch.Tensor,
                 frame_indices: Sequence[int], options: RenderOptions,
                 render: RenderId = RenderId.NOVEL) -> dict[str, torch.Tensor]:
    """Render each (planes, ws) from its camera with the frame's fixed draws.

    Args:
        generator: the EG3D generator.
        planes: [B, 96, H, W] tri-planes.
        ws: [B, 14, 512] latent codes (the super-resolution reads them).
        labels: [B, 25] render cameras.
        frame_indices: [B] frame numbers, keys of the draws.
        options: render options.
        render: which render of the frames this is (`RenderId`: NOVEL for an output camera, INPUT_VIEW for
            the reconstruction at the input camera, which then equals the inversion's own render there).
    Returns:
        the generator's outputs: 'image' [B, 3, 512, 512] in about [-1, 1], 'image_raw', 'image_depth' [B, 1, N, N].
    """
    assert planes.shape[0] == ws.shape[0] == labels.shape[0] == len(frame_indices), "batch sizes differ"
    return generator.render_planes(
        planes, ws, labels.to(planes.device, torch.float32),
        neural_rendering_resolution=options.neural_rendering_resolution,
        samples_multiplier=options.samples_multiplier,
        chunk_rays=options.chunk_rays,
        rng=DrawKeys.of(options.seed, frame_indices, render),
        force_fp32=options.force_fp32,
    )
