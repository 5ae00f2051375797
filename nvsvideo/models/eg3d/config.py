"""Config presets of the released EG3D FFHQ 512/128 checkpoints (`eg3d_facts.md` §1).

Checkpoints carry their own config, which always wins; these presets serve files that do not (TriPlaneNet's
`.pth` files, random-weight benchmarks, meta-device shape checks). Each call returns fresh dicts.
"""

from __future__ import annotations

from typing import Any

#: Neural rendering resolution the 512/128 checkpoints were fine-tuned at (pickled on G_ema).
FFHQ_NEURAL_RENDERING_RESOLUTION = 128
#: Training-time generator pose-conditioning swap probability per released FFHQ checkpoint.
FFHQ_GPC_REG_PROB = {"ffhq512-128": 0.5, "ffhqrebalanced512-128": 0.8}


def ffhq_rendering_kwargs(gpc_reg_prob: float = 0.5) -> dict[str, Any]:
    """`rendering_kwargs` of the FFHQ training config (48 + 48 samples per ray, box of side 1)."""
    return {
        "image_resolution": 512,
        "disparity_space_sampling": False,
        "clamp_mode": "softplus",
        "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC",
        "c_gen_conditioning_zero": False,
        "gpc_reg_prob": gpc_reg_prob,
        "c_scale": 1.0,
        "superresolution_noise_mode": "none",
        "density_reg": 0.25,
        "density_reg_p_dist": 0.004,
        "reg_type": "l1",
        "decoder_lr_mul": 1.0,
        "sr_antialias": True,
        "depth_resolution": 48,
        "depth_resolution_importance": 48,
        "ray_start": 2.25,
        "ray_end": 3.3,
        "box_warp": 1,
        "avg_camera_radius": 2.7,
        "avg_camera_pivot": [0, 0, 0.2],
    }


def ffhq_init_kwargs(gpc_reg_prob: float = 0.5) -> dict[str, Any]:
    """`TriPlaneGenerator` constructor kwargs of the FFHQ 512 checkpoints (rendering_kwargs included)."""
    return {
        "z_dim": 512,
        "w_dim": 512,
        "c_dim": 25,
        "img_resolution": 512,
        "img_channels": 3,
        "mapping_kwargs": {"num_layers": 2},
        "channel_base": 32768,
        "channel_max": 512,
        "fused_modconv_default": "inference_only",
        "num_fp16_res": 0,
        "conv_clamp": None,
        "sr_num_fp16_res": 4,
        "sr_kwargs": {"channel_base": 32768, "channel_max": 512, "fused_modconv_default": "inference_only"},
        "rendering_kwargs": ffhq_rendering_kwargs(gpc_reg_prob),
    }


def checkpoint_config(name: str) -> dict[str, Any]:
    """Config of a released checkpoint by name: {init_kwargs, rendering_kwargs, neural_rendering_resolution}.

    Args:
        name: 'ffhq512-128' or 'ffhqrebalanced512-128'.
    """
    if name not in FFHQ_GPC_REG_PROB:
        raise KeyError(f"no preset for {name!r}; known: {', '.join(FFHQ_GPC_REG_PROB)}")
    init_kwargs = ffhq_init_kwargs(FFHQ_GPC_REG_PROB[name])
    return {
        "init_kwargs": init_kwargs,
        "rendering_kwargs": dict(init_kwargs["rendering_kwargs"]),
        "neural_rendering_resolution": FFHQ_NEURAL_RENDERING_RESOLUTION,
    }


def ffhq512_128_checkpoint_config() -> dict[str, Any]:
    """Config of `ffhq512-128.pkl` (the generator TriPlaneNet was trained against)."""
    return checkpoint_config("ffhq512-128")
