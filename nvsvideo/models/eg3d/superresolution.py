"""EG3D's 2D super-resolution modules: the neural rendering (features + raw RGB) to the final image.

The official code has one class per output resolution; they differ only in a few constants, captured
here by `HybridSpec`. Tensor names match the official ones (`block0.*`, `block1.*`, and the unused
`resample_filter` buffer the older modules register).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.models.eg3d.layers import fir_filter
from nvsvideo.models.eg3d.stylegan2 import SynthesisBlock


@dataclass(frozen=True)
class HybridSpec:
    """What distinguishes the official SuperresolutionHybrid* modules."""

    img_resolution: int
    """Output resolution."""
    input_resolution: int
    """Resolution the first block expects; other neural renderings are resized to it."""
    widths: tuple[int, int]
    """Output channels of block0 and block1."""
    first_block_upsamples: bool
    """block0 doubles the resolution (else it is the official SynthesisBlockNoUp)."""
    resize_only_smaller: bool = False
    """Resize only renderings smaller than input_resolution (the 4X module's rule)."""
    filter_buffer: bool = True
    """Register the (unused) top-level resample_filter buffer of the older modules."""


#: The official modules by class name. 8XDC is the one of every released 512 px checkpoint.
HYBRID_SPECS = {
    "SuperresolutionHybrid8XDC": HybridSpec(512, 128, (256, 128), first_block_upsamples=True, filter_buffer=False),
    "SuperresolutionHybrid8X": HybridSpec(512, 128, (128, 64), first_block_upsamples=True),
    "SuperresolutionHybrid4X": HybridSpec(256, 128, (128, 64), first_block_upsamples=False, resize_only_smaller=True),
    "SuperresolutionHybrid2X": HybridSpec(128, 64, (128, 64), first_block_upsamples=False),
}


class HybridSuperresolution(nn.Module):
    """Two StyleGAN2 skip blocks driven by the last w, from the neural rendering to the final image."""

    #: Width of w that drives the blocks (fixed by the official modules, independent of the backbone's).
    w_dim = 512

    def __init__(
        self,
        spec: HybridSpec,            # Which official module this is.
        channels: int,               # Feature channels of the neural rendering.
        img_resolution: int,         # Output resolution; must equal the spec's.
        sr_num_fp16_res: int,        # > 0 makes both blocks fp16 on CUDA (with conv_clamp 256).
        sr_antialias: bool,          # Antialias the bilinear resize of the neural rendering.
        num_fp16_res: int = 4,       # Backbone option that reaches here through the config; ignored.
        conv_clamp: float | None = None,  # Backbone option that reaches here through the config; ignored.
        channel_base: int | None = None,  # Backbone option that reaches here through sr_kwargs; ignored.
        channel_max: int | None = None,   # Backbone option that reaches here through sr_kwargs; ignored.
        **block_kwargs,              # Passed on to both SynthesisBlocks.
    ) -> None:
        if img_resolution != spec.img_resolution:
            raise ValueError(f"this super-resolution module produces {spec.img_resolution} px images, "
                             f"not {img_resolution} px")
        super().__init__()
        self.spec, self.channels, self.sr_antialias = spec, channels, sr_antialias
        use_fp16 = sr_num_fp16_res > 0
        if spec.filter_buffer:
            self.register_buffer("resample_filter", fir_filter([1, 3, 3, 1]))
        # Channels-last makes these large convs about 1.5x faster on CPU (oneDNN); the backbone gains
        # nothing from it and stays in the official layout, which reproduces official planes closely.
        block_kwargs = {"w_dim": self.w_dim, "img_channels": 3, "use_fp16": use_fp16,
                        "conv_clamp": 256 if use_fp16 else None, "channels_last": True, **block_kwargs}
        width0, width1 = spec.widths
        self.block0 = SynthesisBlock(channels, width0, resolution=spec.img_resolution // 2, is_last=False,
                                     upsample=spec.first_block_upsamples, **block_kwargs)
        self.block1 = SynthesisBlock(width0, width1, resolution=spec.img_resolution, is_last=True, **block_kwargs)

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, *, noise_mode: str = "none",
                generator: torch.Generator | None = None, force_fp32: bool = False) -> torch.Tensor:
        """rgb [N, 3, R, R], features x [N, channels, R, R], ws [N, num_ws, 512] -> image [N, 3, S, S].

        Only the last w is used, for all three style inputs of each block. `generator` drives the noise
        when noise_mode is 'random'.
        """
        assert x.shape[1] == self.channels and rgb.shape[1] == 3, f"unexpected inputs {tuple(rgb.shape)}, {tuple(x.shape)}"
        w = ws[:, -1:, :].repeat(1, 3, 1)
        size = self.spec.input_resolution
        needs_resize = x.shape[-1] < size if self.spec.resize_only_smaller else x.shape[-1] != size
        if needs_resize:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=self.sr_antialias)
            rgb = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False,
                                antialias=self.sr_antialias)
        block_kwargs = {"noise_mode": noise_mode, "generator": generator, "force_fp32": force_fp32}
        x, rgb = self.block0(x, rgb, w, **block_kwargs)
        _, rgb = self.block1(x, rgb, w, **block_kwargs)
        return rgb.contiguous()

    def extra_repr(self) -> str:
        return (f"channels={self.channels:d}, input_resolution={self.spec.input_resolution:d}, "
                f"img_resolution={self.spec.img_resolution:d}, sr_antialias={self.sr_antialias}")
