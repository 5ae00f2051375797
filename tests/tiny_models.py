"""Tiny models of the real classes, with random weights saved in our safe format, for end-to-end tests."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

import torch

from nvsvideo.models.eg3d.checkpoint import EG3DCheckpoint, build_generator, save_eg3d
from nvsvideo.models.eg3d.config import ffhq_init_kwargs
from nvsvideo.models.eg3d.generator import TriPlaneGenerator
from nvsvideo.models.triplanenet.checkpoint import DECODER_PREFIX, EncoderWidths, Variant, build_encoders
from nvsvideo.models.triplanenet.model import RenderOptions, TriPlaneNet

#: Neural rendering resolution of the tiny generator: small enough for CPU tests.
TINY_NEURAL_RES = 32


def tiny_eg3d_checkpoint(seed: int = 0, img_resolution: int = 128) -> EG3DCheckpoint:
    """The FFHQ generator with a narrow backbone and few depth samples, random weights.

    At 128 px it uses the official 2x super-resolution module (`SuperresolutionHybrid2X`), whose fixed widths
    cost 16x less than the 512 px module's; `img_resolution=512` keeps the FFHQ checkpoints' `8XDC`.
    """
    init_kwargs = ffhq_init_kwargs()
    init_kwargs.update(channel_base=1024, channel_max=16, img_resolution=img_resolution)
    init_kwargs["rendering_kwargs"].update(depth_resolution=8, depth_resolution_importance=8,
                                           image_resolution=img_resolution)
    if img_resolution == 128:
        init_kwargs["rendering_kwargs"]["superresolution_module"] = "training.superresolution.SuperresolutionHybrid2X"
    torch.manual_seed(seed)
    generator = TriPlaneGenerator(**init_kwargs)
    state = {k: v.detach().clone() for k, v in generator.state_dict().items()}
    return EG3DCheckpoint(init_kwargs=init_kwargs, rendering_kwargs=dict(init_kwargs["rendering_kwargs"]),
                          neural_rendering_resolution=TINY_NEURAL_RES, state_dict=state, source="tiny test model")


def save_tiny_eg3d(path: Path, seed: int = 0) -> Path:
    """Write a tiny EG3D checkpoint to `path` (.safetensors) and return the path."""
    save_eg3d(tiny_eg3d_checkpoint(seed), path)
    return path


#: Rendering inside tiny TriPlaneNets: the tiny generator's resolution, EG3D's own sample counts.
TINY_RENDER_OPTIONS = RenderOptions(neural_rendering_resolution=TINY_NEURAL_RES, samples_multiplier=1.0)
#: Narrow encoders of the official architecture (SE units need at least 16 channels to keep a bottleneck).
TINY_TRIPLANENET_WIDTHS = EncoderWidths(
    psp_stages=(16, 16, 32, 32),
    num_styles=14,
    w_dim=512,
    predictor_stages=(16, 16, 32, 32),
    up_channels=(16, 16, 16, 16),
)
#: `tiny_triplanenet` versions: the CLI's "v1"/"v2" (v2 = the pixel-shuffle variant) or a variant name.
_TINY_VARIANTS: dict[str, Variant] = {
    "v1": "v1",
    "v2": "v2-pixelshuffle",
    "v2-pixelshuffle": "v2-pixelshuffle",
    "v2-nearest": "v2-nearest",
}


def tiny_triplanenet(version: str = "v2", seed: int = 0,
                     widths: EncoderWidths = TINY_TRIPLANENET_WIDTHS) -> TriPlaneNet:
    """A TriPlaneNet of the real classes with narrow encoders, random weights and the tiny EG3D of `seed`.

    The encoders keep PyTorch's fan-in scaled init, whose outputs are small (w offsets and plane
    residuals of about 0.03 and 0.1 std), so renders stay finite; batch-norm statistics are randomised
    so that every tensor differs from its default. The global RNG is left untouched.

    Args:
        version: "v1", "v2" (= "v2-pixelshuffle") or "v2-nearest".
        seed: seeds the encoder weights and the generator (`tiny_eg3d_checkpoint(seed)`).
        widths: encoder widths (e.g. a wrong `num_styles` to build a file the loader must refuse).
    Returns:
        The model in eval mode, gradients off, on the CPU, rendering with `TINY_RENDER_OPTIONS`.
    """
    variant = _TINY_VARIANTS[version]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        psp, predictor = build_encoders(variant, widths)
        for module in [*psp.modules(), *predictor.modules()]:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        generator = build_generator(tiny_eg3d_checkpoint(seed), "cpu")
    model = TriPlaneNet(psp, predictor, generator, render_options=TINY_RENDER_OPTIONS)
    return model.eval().requires_grad_(False)


def save_tiny_triplanenet(path: Path, version: str = "v2", seed: int = 0,
                          widths: EncoderWidths = TINY_TRIPLANENET_WIDTHS) -> Path:
    """Write `tiny_triplanenet(version, seed, widths)` to `path` in the official checkpoint layout.

    Like a v2 file saved without its generator, it holds only `psp_encoder.*` and `triplanenet_encoder.*`:
    load it with `eg3d_path=save_tiny_eg3d(..., seed)` (the CLI's --eg3d). Returns the path.
    """
    model = tiny_triplanenet(version, seed, widths)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(DECODER_PREFIX)}
    opts = {"exp_dir": "tiny", "device": "cpu", "n_styles": widths.num_styles, "checkpoint_path": None}
    if model.version == "v2":
        opts["use_pixelshuffle"] = _TINY_VARIANTS[version] == "v2-pixelshuffle"
    torch.save({"state_dict": state, "opts": opts, "best_val_loss": None, "step": 0}, path)
    return path


def tiny_clip_setup(source: Path, root: Path, *, blank: Container[int], frames: int,
                    versions: tuple[str, ...] = ("v2",)) -> dict[str, Path]:
    """What an end-to-end test on a real face clip needs, written under `root`: the first `frames` frames of
    `source` with those in `blank` blacked out ("clip"), the tiny EG3D ("eg3d") and a tiny TriPlaneNet file
    per version ("v1", "v2"), plus "root" itself."""
    # Imported here: bench/ loads this module by path, without tests/ on sys.path.
    from face_clips import face_clip_with_gap

    return {
        "root": root,
        "clip": face_clip_with_gap(source, root / "clip.mp4", blank=blank, frames=frames),
        "eg3d": save_tiny_eg3d(root / "eg3d.safetensors"),
        **{version: save_tiny_triplanenet(root / f"tpn_{version}.pt", version) for version in versions},
    }
