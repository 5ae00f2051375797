"""EG3D's TriPlaneGenerator: StyleGAN2 tri-plane backbone + volume renderer + 2D super-resolution.

Submodule and tensor names equal the official `training.triplane.TriPlaneGenerator` state dict, so an official
G_ema loads with `load_state_dict(strict=True)`. Differences from the official module, all deliberate:
- `noise_mode` defaults to 'const' (reproducible frames);
- the two random draws of rendering come from an explicit `torch.Generator`, from counter keys per frame
  (`draws.DrawKeys`) or from explicit tensors; None keeps the official global generator;
- a neural rendering resolution passed to a call applies to that call only (the official one mutates the module);
- rays can be rendered in chunks to bound memory, with identical results.
"""

from __future__ import annotations

import torch
from torch import nn

from nvsvideo.errors import WeightsError
from nvsvideo.models.eg3d.draws import DrawKeys
from nvsvideo.models.eg3d.renderer import (
    NUM_PLANES,
    PLANE_CHANNELS,
    OSGDecoder,
    RenderSettings,
    SampleDraws,
    prepare_planes,
    render_chunked,
    sample_rays,
    sample_triplane,
)
from nvsvideo.models.eg3d.stylegan2 import Generator
from nvsvideo.models.eg3d.superresolution import HYBRID_SPECS, HybridSpec, HybridSuperresolution

#: Resolution of the tri-plane backbone, fixed by the official architecture.
PLANE_RESOLUTION = 256
#: The official constructor's default; checkpoints store the value they were trained with.
DEFAULT_NEURAL_RENDERING_RESOLUTION = 64


def superresolution_spec(module_path: str | None) -> HybridSpec:
    """Our spec for an official `superresolution_module` path such as 'training.superresolution.X'.

    Raises:
        WeightsError: when the checkpoint names no super-resolution module or one we do not implement.
    """
    if not module_path:
        raise WeightsError("the checkpoint's rendering_kwargs name no superresolution_module; it is not an EG3D "
                           "generator config nvsvideo can build")
    name = module_path.rsplit(".", 1)[-1]
    if name not in HYBRID_SPECS:
        raise WeightsError(f"the checkpoint uses super-resolution module '{module_path}', which nvsvideo does not "
                           f"implement (supported: {', '.join(HYBRID_SPECS)}); use an FFHQ 512 checkpoint")
    return HYBRID_SPECS[name]


class TriPlaneGenerator(nn.Module):
    """EG3D generator: (z, c) -> ws -> tri-planes -> volume-rendered features -> super-resolved image."""

    def __init__(
        self,
        z_dim: int,                  # Latent z width.
        c_dim: int,                  # Conditioning label width (25: flattened cam2world + intrinsics).
        w_dim: int,                  # Intermediate latent w width.
        img_resolution: int,         # Final image resolution (of the SR output).
        img_channels: int,           # Final image channels.
        sr_num_fp16_res: int = 0,    # > 0 runs the SR blocks in fp16 on CUDA.
        mapping_kwargs: dict | None = None,    # Passed on to MappingNetwork.
        rendering_kwargs: dict | None = None,  # Official rendering options (ray bounds, samples, SR module, ...).
        sr_kwargs: dict | None = None,         # Passed on to the SR module.
        **synthesis_kwargs,          # Passed on to the backbone's SynthesisNetwork.
    ) -> None:
        super().__init__()
        rendering_kwargs = dict(rendering_kwargs or {})
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        # Training registers this buffer on G after construction; registering it here keeps loading strict.
        self.register_buffer("dataset_label_std", torch.zeros([c_dim]))
        self.backbone = Generator(z_dim, c_dim, w_dim, img_resolution=PLANE_RESOLUTION,
                                  img_channels=PLANE_CHANNELS * NUM_PLANES, mapping_kwargs=mapping_kwargs,
                                  **synthesis_kwargs)
        sr_spec = superresolution_spec(rendering_kwargs.get("superresolution_module"))
        self.superresolution = HybridSuperresolution(sr_spec, channels=PLANE_CHANNELS, img_resolution=img_resolution,
                                                     sr_num_fp16_res=sr_num_fp16_res,
                                                     sr_antialias=rendering_kwargs["sr_antialias"], **(sr_kwargs or {}))
        self.decoder = OSGDecoder(PLANE_CHANNELS, {"decoder_lr_mul": rendering_kwargs.get("decoder_lr_mul", 1),
                                                   "decoder_output_dim": PLANE_CHANNELS})
        self.neural_rendering_resolution = DEFAULT_NEURAL_RENDERING_RESOLUTION
        self.rendering_kwargs = rendering_kwargs

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """z [B, z_dim], conditioning camera c [B, c_dim] -> ws [B, num_ws, w_dim]."""
        if self.rendering_kwargs.get("c_gen_conditioning_zero", False):
            c = torch.zeros_like(c)
        # The official code defaults c_scale to 0 when the key is missing; keep that so configs mean the same.
        c = c * self.rendering_kwargs.get("c_scale", 0)
        return self.backbone.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    def synthesize_planes(self, ws: torch.Tensor, noise_mode: str = "const", *,
                          noise_rng: torch.Generator | None = None) -> torch.Tensor:
        """ws [B, num_ws, w_dim] -> tri-planes [B, 96, 256, 256] (3 planes x 32 channels, backbone order).

        `noise_rng` drives the per-pixel noise when noise_mode is 'random'.
        """
        return self.backbone.synthesis(ws, noise_mode=noise_mode, generator=noise_rng)

    def sample_points(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw density and features at arbitrary points (shape extraction; the official `sample_mixed`).

        Args:
            planes: [B, 96, H, W] tri-planes.
            points: [B, P, 3] world points.
        Returns:
            raw sigma [B, P, 1] (before the renderer's softplus(sigma - 1)) and features [B, P, 32] in (-0.001, 1.001).
        """
        planes = self._split_planes(planes)
        features = sample_triplane(prepare_planes(planes), planes.shape[-1], points,
                                   float(self.rendering_kwargs["box_warp"]))
        return self.decoder(features)

    def sample_mixed(self, coordinates: torch.Tensor, directions: torch.Tensor, ws: torch.Tensor, *,
                     noise_mode: str = "const") -> dict[str, torch.Tensor]:
        """The official entry point for shape extraction: 'sigma' [B, P, 1] (raw) and 'rgb' [B, P, 32] at
        coordinates [B, P, 3] of the scene ws [B, num_ws, w_dim] describes. Directions are unused (no view
        dependence), as in the official decoder."""
        sigma, rgb = self.sample_points(self.synthesize_planes(ws, noise_mode=noise_mode), coordinates)
        return {"sigma": sigma, "rgb": rgb}

    def render_features(
        self,
        planes: torch.Tensor,
        c: torch.Tensor,
        *,
        neural_rendering_resolution: int | None = None,
        rng: torch.Generator | DrawKeys | None = None,
        samples_multiplier: float = 1.0,
        chunk_rays: int | None = None,
        draws: SampleDraws | None = None,
    ) -> dict[str, torch.Tensor]:
        """Volume-render tri-planes from cameras c (the neural rendering, before super-resolution).

        Args:
            planes: [B, 96, H, W] tri-planes from `synthesize_planes` (possibly edited or offset).
            c: [B, 25] render camera (flattened cam2world, then flattened normalised intrinsics).
            neural_rendering_resolution: N, rays per side (default: the checkpoint's value); this call only.
            rng: source of the two random draws (stratified jitter, importance uniforms): a generator; None,
                torch's global generator like the official code; or `DrawKeys`, counter-based draws keyed by
                (seed, frame index, render id) per batch item (video frames: flicker-free, reproducible,
                independent of batching and chunking, computed on the planes' device).
            samples_multiplier: scales both sample counts (the official scripts use 2).
            chunk_rays: render this many rays of one image at a time; bounds memory, same result.
                None renders up to 128 x 128 rays of 48 samples at once (`renderer.DEFAULT_CHUNK_SAMPLES`).
            draws: explicit random draws (`SampleDraws`) instead of drawing from rng.
        Returns:
            'feature_image' [B, 32, N, N] in about [-1, 1], 'image_raw' [B, 3, N, N] (its first 3 channels) and
            'image_depth' [B, 1, N, N] (distance along the ray).
        """
        batch = planes.shape[0]
        assert c.shape == (batch, self.c_dim), f"batch mismatch: planes {tuple(planes.shape)}, c {tuple(c.shape)}"
        res = int(neural_rendering_resolution or self.neural_rendering_resolution)
        settings = RenderSettings.from_rendering_kwargs(self.rendering_kwargs, samples_multiplier)
        c = c.to(torch.float32)
        origins, directions = sample_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3), res)
        if draws is None:
            draws = SampleDraws.draw(batch, res * res, settings, rng, planes.device)
        features, depth = render_chunked(self._split_planes(planes), self.decoder, origins, directions, draws,
                                         settings, chunk_rays)
        feature_image = features.permute(0, 2, 1).reshape(batch, -1, res, res).contiguous()
        return {"feature_image": feature_image, "image_raw": feature_image[:, :3],
                "image_depth": depth.reshape(batch, 1, res, res)}

    def super_resolve(self, feature_image: torch.Tensor, ws: torch.Tensor, *, rng: torch.Generator | None = None,
                      force_fp32: bool = False) -> torch.Tensor:
        """Neural rendering [B, 32, N, N] and ws [B, num_ws, w_dim] -> image [B, 3, S, S] (about [-1, 1]).

        As in the official code the SR noise follows rendering_kwargs['superresolution_noise_mode'] ('none' in
        the FFHQ checkpoints; `rng` drives it when 'random'). `force_fp32` keeps the fp16 SR blocks in float32
        on CUDA too.
        """
        noise_mode = self.rendering_kwargs.get("superresolution_noise_mode", "none")
        return self.superresolution(feature_image[:, :3], feature_image, ws, noise_mode=noise_mode, generator=rng,
                                    force_fp32=force_fp32)

    def render_planes(
        self,
        planes: torch.Tensor,
        ws: torch.Tensor,
        c: torch.Tensor,
        *,
        neural_rendering_resolution: int | None = None,
        noise_mode: str = "const",
        rng: torch.Generator | DrawKeys | None = None,
        samples_multiplier: float = 1.0,
        chunk_rays: int | None = None,
        draws: SampleDraws | None = None,
        force_fp32: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Render tri-planes [B, 96, H, W] from cameras c [B, 25], then super-resolve with ws [B, num_ws, w_dim].

        The rendering options are those of `render_features`, `rng` and `force_fp32` also those of
        `super_resolve`. `noise_mode` is accepted so synthesis options can be forwarded unchanged; as in the
        official code it does not reach the SR module.

        Returns:
            'image' [B, 3, S, S] (S = img_resolution, 512 for FFHQ) plus the outputs of `render_features`.
        """
        assert ws.shape[0] == planes.shape[0], f"batch mismatch: planes {tuple(planes.shape)}, ws {tuple(ws.shape)}"
        out = self.render_features(planes, c, neural_rendering_resolution=neural_rendering_resolution, rng=rng,
                                   samples_multiplier=samples_multiplier, chunk_rays=chunk_rays, draws=draws)
        # Counter keys drive only the ray draws; 'random' SR noise (unused by FFHQ models) then uses the global generator.
        sr_rng = rng if isinstance(rng, torch.Generator) else None
        image = self.super_resolve(out["feature_image"], ws, rng=sr_rng, force_fp32=force_fp32)
        return {"image": image, **out}

    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, *, noise_mode: str = "const",
                  **render_kwargs) -> dict[str, torch.Tensor]:
        """ws [B, num_ws, w_dim], render camera c [B, 25] -> outputs of `render_planes`."""
        planes = self.synthesize_planes(ws, noise_mode=noise_mode)
        return self.render_planes(planes, ws, c, noise_mode=noise_mode, **render_kwargs)

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> dict[str, torch.Tensor]:
        """z [B, z_dim], c [B, 25] (conditioning and render camera) -> outputs of `render_planes`."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, **synthesis_kwargs)

    def _split_planes(self, planes: torch.Tensor) -> torch.Tensor:
        """[B, 96, H, W] -> [B, 3, 32, H, W] (plane p holds backbone channels 32p..32p+31)."""
        assert planes.ndim == 4 and planes.shape[1] == NUM_PLANES * PLANE_CHANNELS, f"unexpected planes {tuple(planes.shape)}"
        return planes.reshape(planes.shape[0], NUM_PLANES, PLANE_CHANNELS, *planes.shape[-2:])

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, "
                f"img_resolution={self.img_resolution:d}, neural_rendering_resolution={self.neural_rendering_resolution}")
