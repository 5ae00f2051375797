"""StyleGAN2 mapping and synthesis networks, as EG3D uses them for its tri-plane backbone and SR module.

Module and tensor names match the official `networks_stylegan2.py`, so official state dicts load strictly.
Only what EG3D needs is here: the 'skip' architecture and eval-time ('fused') modulated convolutions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nvsvideo.models.eg3d.layers import (
    ACTIVATION_GAINS,
    FullyConnectedLayer,
    bias_act,
    fir_filter,
    modulated_conv2d,
    normalize_2nd_moment,
    upsample2d,
)
from nvsvideo.models.kernels import run_network

NOISE_MODES = ("const", "random", "none")


def block_dtype(use_fp16: bool, device: torch.device, force_fp32: bool) -> torch.dtype:
    """Compute dtype of a synthesis block: fp16 only for fp16 blocks on CUDA (CPU half convs are slow and lossy)."""
    return torch.float16 if use_fp16 and device.type == "cuda" and not force_fp32 else torch.float32


class MappingNetwork(nn.Module):
    """z (and camera label c) -> w, broadcast to num_ws copies, with optional truncation toward w_avg."""

    def __init__(
        self,
        z_dim: int,                   # Latent z width (0 = no latent).
        c_dim: int,                   # Conditioning label width (0 = unconditional).
        w_dim: int,                   # Intermediate latent w width.
        num_ws: int | None,           # Number of ws to broadcast to (None = return [N, w_dim]).
        num_layers: int = 8,          # Number of dense layers after the input concat.
        embed_features: int | None = None,  # Label embedding width (None = w_dim).
        layer_features: int | None = None,  # Hidden width (None = w_dim).
        activation: str = "lrelu",    # Activation of the dense layers.
        lr_multiplier: float = 0.01,  # Learning-rate multiplier of the dense layers.
        w_avg_beta: float | None = 0.998,  # EMA decay of w_avg during training (None = no w_avg).
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """[N, z_dim], [N, c_dim] -> ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None)."""
        x = None
        if self.z_dim > 0:
            assert z.shape[1:] == (self.z_dim,), f"z has shape {tuple(z.shape)}, expected [N, {self.z_dim}]"
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            assert c.shape[1:] == (self.c_dim,), f"c has shape {tuple(c.shape)}, expected [N, {self.c_dim}]"
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi),
                               x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws}"


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x upsampling) + noise + bias + leaky ReLU."""

    def __init__(
        self,
        in_channels: int,            # Input channels.
        out_channels: int,           # Output channels.
        w_dim: int,                  # Width of the w that drives the style affine.
        resolution: int,             # Output resolution (size of the const noise map).
        kernel_size: int = 3,        # Conv kernel size.
        up: int = 1,                 # Upsampling factor (1 or 2).
        use_noise: bool = True,      # Whether the layer has per-pixel noise.
        activation: str = "lrelu",   # Activation after the bias.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling.
        conv_clamp: float | None = None,  # Clamp of the output (None = no clamp).
        channels_last: bool = False,  # Unused memory-format hint, accepted for config compatibility.
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.padding = kernel_size // 2
        self.act_gain = ACTIVATION_GAINS[activation]
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.register_buffer("resample_filter", fir_filter(list(resample_filter)))
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, *, noise_mode: str = "const",
                generator: torch.Generator | None = None, gain: float = 1.0) -> torch.Tensor:
        """[N, C_in, R/up, R/up], w [N, w_dim] -> [N, C_out, R, R]."""
        assert noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}"
        expected = self.resolution // self.up
        assert x.shape[1:] == (self.in_channels, expected, expected), f"unexpected input {tuple(x.shape)}"
        styles = run_network(self.affine, w)
        noise = None
        if self.use_noise and noise_mode == "random":
            # Drawn on the generator's device, so a CPU generator gives the same noise on any device.
            noise_device = generator.device if generator is not None else x.device
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], generator=generator,
                                device=noise_device).to(x.device) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, activation=self.activation, gain=gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, "
                f"resolution={self.resolution:d}, up={self.up}, activation={self.activation}, "
                f"conv_clamp={self.conv_clamp}")


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation: features -> output channels of the skip image."""

    def __init__(
        self,
        in_channels: int,            # Input feature channels.
        out_channels: int,           # Output image channels.
        w_dim: int,                  # Width of the w that drives the style affine.
        kernel_size: int = 1,        # Conv kernel size.
        conv_clamp: float | None = None,  # Clamp of the output (None = no clamp).
        channels_last: bool = False,  # Unused memory-format hint, accepted for config compatibility.
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """[N, C_in, H, W], w [N, w_dim] -> [N, C_out, H, W]."""
        assert x.shape[1] == self.in_channels, f"expected {self.in_channels} channels, got {x.shape[1]}"
        styles = run_network(self.affine, w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, "
                f"conv_clamp={self.conv_clamp}")


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' synthesis network: [up-conv,] conv, ToRGB added to the upsampled image."""

    def __init__(
        self,
        in_channels: int,            # Input channels (0 = first block, starts from a learned const).
        out_channels: int,           # Output channels.
        w_dim: int,                  # Width of w.
        resolution: int,             # Output resolution of this block.
        img_channels: int,           # Channels of the skip image.
        is_last: bool,               # Last block of the network.
        architecture: str = "skip",  # Only 'skip' is used by EG3D.
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for upsampling.
        conv_clamp: float | None = None,  # Clamp of every layer's output.
        use_fp16: bool = False,      # Run in fp16 on CUDA.
        fp16_channels_last: bool = False,  # Unused memory-format hint, accepted for config compatibility.
        fused_modconv_default: bool | str = True,  # Accepted for config compatibility; convs are always fused.
        channels_last: bool = False,  # Channels-last activations: much faster large convs with oneDNN.
        upsample: bool = True,       # False keeps the input resolution (the official SynthesisBlockNoUp).
        **layer_kwargs,              # Passed on to SynthesisLayer.
    ) -> None:
        if architecture != "skip":
            raise ValueError(f"only the 'skip' synthesis architecture is implemented, not {architecture!r}")
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.resolution, self.img_channels, self.is_last = resolution, img_channels, is_last
        self.use_fp16, self.upsample = use_fp16, upsample
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.register_buffer("resample_filter", fir_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2 if upsample else 1,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp,
                                    **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, *,
                noise_mode: str = "const", generator: torch.Generator | None = None,
                force_fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, C_in, R/2, R/2] (None for the first block), img [N, img_C, R/2, R/2] or None,
        ws [N, num_conv + num_torgb, w_dim] -> (x [N, C_out, R, R], img [N, img_C, R, R] float32).
        Inputs are R x R instead when the block does not upsample."""
        assert ws.shape[1:] == (self.num_conv + self.num_torgb, self.w_dim), f"unexpected ws {tuple(ws.shape)}"
        w_iter = iter(ws.unbind(dim=1))
        dtype = block_dtype(self.use_fp16, ws.device, force_fp32)
        layer_kwargs = {"noise_mode": noise_mode, "generator": generator}
        memory_format = self.memory_format
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x.contiguous(memory_format=memory_format), next(w_iter), **layer_kwargs)
        else:
            assert x is not None
            x = self.conv0(x.to(dtype, memory_format=memory_format), next(w_iter), **layer_kwargs)
            x = self.conv1(x, next(w_iter), **layer_kwargs)
        y = self.torgb(x, next(w_iter)).to(torch.float32)
        if img is not None and self.upsample:
            img = upsample2d(img, self.resample_filter)
        img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution:d}, architecture=skip, upsample={self.upsample}, "
                f"use_fp16={self.use_fp16}, channels_last={self.memory_format == torch.channels_last}")


class SynthesisNetwork(nn.Module):
    """Stack of SynthesisBlocks from 4x4 up to img_resolution; returns the final skip image."""

    def __init__(
        self,
        w_dim: int,                  # Width of w.
        img_resolution: int,         # Output resolution (a power of two).
        img_channels: int,           # Output channels.
        channel_base: int = 32768,   # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max: int = 512,      # Maximum channels per block.
        num_fp16_res: int = 4,       # Number of highest resolutions that run in fp16 on CUDA.
        **block_kwargs,              # Passed on to SynthesisBlock.
    ) -> None:
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_fp16_res = num_fp16_res
        log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, img_channels,
                                   is_last=res == img_resolution, use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "const", generator: torch.Generator | None = None,
                force_fp32: bool = False) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution] float32."""
        assert ws.shape[1:] == (self.num_ws, self.w_dim), f"ws has shape {tuple(ws.shape)}, expected [N, {self.num_ws}, {self.w_dim}]"
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            # Consecutive blocks share a w: a block's ToRGB uses the same w as the next block's first conv.
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, noise_mode=noise_mode, generator=generator, force_fp32=force_fp32)
        return img.contiguous()

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, "
                f"img_channels={self.img_channels:d}, num_fp16_res={self.num_fp16_res:d}")


class Generator(nn.Module):
    """StyleGAN2 generator = mapping + synthesis; EG3D's tri-plane backbone."""

    def __init__(
        self,
        z_dim: int,                  # Latent z width.
        c_dim: int,                  # Conditioning label width.
        w_dim: int,                  # Intermediate latent w width.
        img_resolution: int,         # Output resolution.
        img_channels: int,           # Output channels.
        mapping_kwargs: dict | None = None,  # Passed on to MappingNetwork.
        **synthesis_kwargs,          # Passed on to SynthesisNetwork.
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        # Registration order (synthesis before mapping) reproduces the official state_dict order.
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, **(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> torch.Tensor:
        """[N, z_dim], [N, c_dim] -> [N, img_channels, img_resolution, img_resolution]."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)
