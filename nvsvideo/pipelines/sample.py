"""`nvsvideo sample`: a random identity rendered along a camera path (what the official gen_videos does).

It proves the generator end to end without an encoder, with the official conventions so results can
be compared: z = numpy RandomState(seed).randn(512), ws conditioned on the frontal camera, and the
tri-planes synthesised once for the whole video (the official script re-runs the backbone per frame).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from nvsvideo.cameras.eg3d import intrinsics, lookat_cam2world, make_label
from nvsvideo.cameras.paths import evaluate_camera_path, follow, parse_camera_path
from nvsvideo.compose.depth import depth_to_rgb
from nvsvideo.compose.layout import to_uint8_frames
from nvsvideo.console import Reporter
from nvsvideo.errors import UsageError
from nvsvideo.files import atomic_directory
from nvsvideo.models.eg3d.generator import TriPlaneGenerator
from nvsvideo.render import RenderOptions, render_views
from nvsvideo.video import VideoWriter


@dataclass(frozen=True)
class SampleConfig:
    """Options of `nvsvideo sample`."""

    seed: int = 0
    """Identity seed: z = numpy RandomState(seed).randn(z_dim)."""
    camera_path: str = "orbit"
    """Camera path spec (see `nvsvideo.cameras.paths.parse_camera_path`); follow/frontal need an input video."""
    yaw: float = 0.0
    """Degrees added to the path's yaw (with `fixed`, the absolute view)."""
    pitch: float = 0.0
    """Degrees added to the path's pitch."""
    frames: int = 120
    """Number of output frames."""
    fps: Fraction = Fraction(30)
    """Output frame rate."""
    truncation: float = 1.0
    """Truncation psi (1 = none); applied to every w, as the official scripts do."""
    batch_size: int = 1
    """Frames rendered at once."""
    crf: int = 18
    """libx264 quality of the output."""


def identity_latent(seed: int, z_dim: int) -> torch.Tensor:
    """The official scripts' z for a seed: numpy RandomState(seed).randn(z_dim), as [1, z_dim] float32."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def frontal_label(generator: TriPlaneGenerator) -> np.ndarray:
    """[25] conditioning camera of the official scripts: yaw 0, pitch 0 on the checkpoint's camera sphere."""
    radius = float(generator.rendering_kwargs.get("avg_camera_radius", 2.7))
    pivot = tuple(generator.rendering_kwargs.get("avg_camera_pivot", (0.0, 0.0, 0.2)))
    return make_label(lookat_cam2world(0.0, 0.0, radius, pivot), intrinsics())


def sample_labels(config: SampleConfig) -> np.ndarray:
    """[T, 25] render cameras of the path, shifted by the yaw/pitch offsets."""
    spec = parse_camera_path(config.camera_path)
    if spec.kind in {"follow", "frontal"}:
        raise UsageError(f"the {spec.kind} camera path follows an input video; sample has none: "
                         "use orbit, sweep, fixed or keyframes")
    times = np.arange(config.frames, dtype=np.float64) / float(config.fps)
    labels = evaluate_camera_path(spec, times, float(config.fps))
    if config.yaw or config.pitch:
        labels = follow(labels, config.yaw, config.pitch)
    return labels


def run_sample(
    generator: TriPlaneGenerator,
    config: SampleConfig,
    render: RenderOptions,
    output: Path,
    *,
    device: torch.device,
    reporter: Reporter,
    depth_output: Path | None = None,
    frames_dir: Path | None = None,
) -> dict[str, Any]:
    """Render a random identity along a camera path into `output` (and optionally depth and PNG frames).

    Returns:
        a JSON-ready summary.
    """
    if config.frames < 1:
        raise UsageError("--frames must be at least 1")
    started = time.perf_counter()
    labels = torch.from_numpy(sample_labels(config)).float()
    z = identity_latent(config.seed, generator.z_dim).to(device)
    cond = torch.from_numpy(frontal_label(generator)).float()[None].to(device)
    with torch.inference_mode():
        ws = generator.mapping(z, cond, truncation_psi=config.truncation)
        planes = generator.synthesize_planes(ws)
    size = int(generator.img_resolution)
    with contextlib.ExitStack() as stack:
        video = stack.enter_context(VideoWriter(output, width=size, height=size, fps=config.fps, crf=config.crf))
        depth_video = None
        if depth_output is not None:
            res = int(render.neural_rendering_resolution or generator.neural_rendering_resolution)
            depth_video = stack.enter_context(
                VideoWriter(depth_output, width=res, height=res, fps=config.fps, crf=config.crf))
        frames_tmp = stack.enter_context(atomic_directory(frames_dir)) if frames_dir is not None else None
        advance = stack.enter_context(reporter.progress("rendering", config.frames))
        for start in range(0, config.frames, config.batch_size):
            idx = list(range(start, min(start + config.batch_size, config.frames)))
            n = len(idx)
            out = render_views(generator, planes.expand(n, -1, -1, -1), ws.expand(n, -1, -1), labels[idx], idx,
                               render)
            images = to_uint8_frames(out["image"])
            video.write(images)
            if depth_video is not None:
                depth_video.write(depth_to_rgb(out["image_depth"], generator.rendering_kwargs))
            if frames_tmp is not None:
                for i, image in zip(idx, images, strict=True):
                    Image.fromarray(image).save(frames_tmp / f"{i:06d}.png")
            advance(n)
    return {
        "output": str(output),
        "depth_output": str(depth_output) if depth_output is not None else None,
        "frames_dir": str(frames_dir) if frames_dir is not None else None,
        "frames": config.frames,
        "fps": str(config.fps),
        "size": [size, size],
        "seed": config.seed,
        "truncation": config.truncation,
        "camera_path": config.camera_path,
        "seconds": round(time.perf_counter() - started, 3),
    }
