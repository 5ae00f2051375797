"""StyleGAN2 building blocks in plain PyTorch: equalised-lr dense layers, FIR resampling, modulated convolution.

The maths follows the official EG3D / StyleGAN2 networks (see `shared/interop/eg3d_facts.md` §3.1) so
that official checkpoints load with identical tensor names and give the same numbers; the code is ours.
No custom CUDA kernels: every op here is a stock PyTorch op, so it runs on CPU, CUDA and MPS alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.models.kernels import kernels_for, map_items, run_network

#: Slope and output gain of the leaky ReLU used throughout StyleGAN2 (gain keeps the activation variance).
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
ACTIVATION_GAINS = {"linear": 1.0, "lrelu": LRELU_GAIN}


def fir_filter(taps: list[float] | tuple[float, ...]) -> torch.Tensor:
    """Separable 2D FIR filter from 1D taps, normalised to unit sum.

    Args:
        taps: 1D filter taps, e.g. [1, 3, 3, 1].
    Returns:
        [K, K] float32 filter outer(taps, taps) / sum(...)^2.
    """
    k = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(k, k)
    return f / f.sum()


def fir_filter2d(x: torch.Tensor, f: torch.Tensor, *, padding: int = 0, gain: float = 1.0) -> torch.Tensor:
    """Convolve every channel with a 2D FIR filter (a true convolution, zero padding on all sides).

    Args:
        x: [N, C, H, W] input.
        f: [K, K] filter.
        padding: zeros added on each side before filtering.
        gain: overall multiplier on the filter.
    Returns:
        [N, C, H + 2*padding - K + 1, W + 2*padding - K + 1].
    """
    weight = (f * gain).to(x.dtype).flip((0, 1))[None, None]
    if kernels_for(x.device).fir == "folded":
        return _fold_channels(x, lambda y: F.conv2d(y, weight, padding=padding))
    channels = x.shape[1]
    return F.conv2d(x, weight.expand(channels, 1, *f.shape), padding=padding, groups=channels)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling that keeps the image centred ([N, C, H, W] -> [N, C, 2H, 2W]).

    Zero insertion, padding (K/2, K/2 - 1) and filtering with 4f, done in one strided transposed
    convolution (which uses the filter unflipped, i.e. as a true convolution).
    """
    k = f.shape[-1]
    weight = (f * 4).to(x.dtype)[None, None]
    if kernels_for(x.device).fir == "folded":
        return _fold_channels(x, lambda y: F.conv_transpose2d(y, weight, stride=2, padding=(k - 2) // 2))
    channels = x.shape[1]
    return F.conv_transpose2d(x, weight.expand(channels, 1, k, k), stride=2, padding=(k - 2) // 2, groups=channels)


def _fold_channels(x: torch.Tensor, conv: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Apply a single-channel conv to every channel by folding channels into the batch: [N, C, ...] -> [N, C, ...']."""
    n, c = x.shape[:2]
    y = conv(x.reshape(n * c, 1, *x.shape[2:]))
    return y.reshape(n, c, *y.shape[2:])


def bias_act(x: torch.Tensor, b: torch.Tensor | None, *, activation: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Add a per-channel bias, apply the activation times its gain, then clamp to ±clamp.

    Works in place on x unless autograd tracks it, so pass a fresh tensor (a layer's own output).

    Args:
        x: [N, C, ...] activations; overwritten when autograd does not track them.
        b: [C] bias or None.
        activation: 'linear' or 'lrelu' (slope 0.2, gain √2).
        gain: extra gain on top of the activation's own gain.
        clamp: symmetric clamp applied last, or None.
    Returns:
        Tensor shaped like x.
    """
    # Without autograd, x (a layer's fresh output) is updated in place: no extra full-size tensors.
    inplace = not (torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad)))
    if b is not None:
        b = b.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
        x = x.add_(b) if inplace else x + b
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=inplace)
    elif activation != "linear":
        raise ValueError(f"unsupported activation {activation!r}")
    total_gain = ACTIVATION_GAINS[activation] * gain
    if total_gain != 1.0:
        x = x.mul_(total_gain) if inplace else x * total_gain
    if clamp is not None:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x to unit mean square along `dim` (x / sqrt(mean(x^2) + eps))."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def fp16_prescale(weight: torch.Tensor, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale weight and styles down so the squares of their products fit in float16 (the official fp16 path).

    Each output filter is divided by its largest magnitude times sqrt(fan_in), each sample's styles by their
    largest magnitude; demodulation normalises every modulated filter, so it cancels both factors.
    """
    out_channels, in_channels, kh, kw = weight.shape
    weight = weight * (1 / (math.sqrt(in_channels * kh * kw) * weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True)))
    return weight, styles / styles.norm(float("inf"), dim=1, keepdim=True)


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / norm of every modulated filter: (sum_{i,k,l} (W[o,i,k,l] s[n,i])^2 + 1e-8)^-1/2, shape [N, C_out].

    Computed as s^2 @ (sum_kl W^2)^T, which never builds the [N, C_out, C_in, k, k] modulated weights. The
    matmul runs through `run_network` (per item where the batch must not change a frame's numbers); the
    filter energies it reads are computed once for the whole batch.
    """
    energy = weight.square().sum(dim=[2, 3]).t()  # [C_in, C_out]
    return run_network(lambda s: (s.square() @ energy + 1e-8).rsqrt(), styles)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     noise: torch.Tensor | None = None, up: int = 1, padding: int = 0,
                     resample_filter: torch.Tensor | None = None, demodulate: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated (and optionally demodulated) convolution.

    With up=2 the conv is a stride-2 transposed convolution with the (unflipped) modulated kernel
    followed by a FIR low-pass, as in the official `conv2d_resample` fast path. The `modconv` kernel
    choice runs it as one conv per sample with its own modulated weight ('per_sample') or, as the official
    non-fused path, as one conv for the whole batch between input modulation and output demodulation
    ('dense'); both compute the same sums.

    Args:
        x: [N, C_in, H, W] input.
        weight: [C_out, C_in, k, k] raw conv weight.
        styles: [N, C_in] per-sample input-channel scales.
        noise: tensor broadcastable to the output, added after the convolution, or None.
        up: 1 or 2.
        padding: conv padding for up=1; for up=2 the FIR padding is derived from it.
        resample_filter: [K, K] FIR filter, required when up=2.
        demodulate: normalise each output filter to unit norm.
    Returns:
        [N, C_out, H*up, W*up].
    """
    batch, in_channels = x.shape[:2]
    out_channels, _, kh, kw = weight.shape
    assert styles.shape == (batch, in_channels), f"styles {tuple(styles.shape)} vs x {tuple(x.shape)}"
    if up not in (1, 2):
        raise ValueError(f"unsupported upsampling factor {up}")
    assert up == 1 or resample_filter is not None, "up=2 needs a resample filter"

    # In half precision the squared weights can overflow, so pre-scale weight and styles (demod cancels it).
    if x.dtype == torch.float16 and demodulate:
        weight, styles = fp16_prescale(weight, styles)
    dcoefs = demodulation_coefficients(weight, styles) if demodulate else None

    def conv(inputs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Plain or (up=2) transposed conv; the transposed conv wants [C_in, C_out, k, k] and uses it unflipped."""
        if up == 1 and kh == kw == 1 and padding == 0:
            # A 1x1 conv is a matmul. oneDNN splits some 1x1 convs' channel sums across threads (ToRGB: few
            # outputs, many inputs), so their results changed with torch's thread count; the matmul's do not.
            return (w.flatten(1) @ inputs.flatten(2)).reshape(inputs.shape[0], out_channels, *inputs.shape[2:])
        if up == 1:
            return F.conv2d(inputs, w, padding=padding)
        return F.conv_transpose2d(inputs, w.transpose(0, 1), stride=2)

    if kernels_for(x.device).modconv == "dense":
        x = conv(x * styles.to(x.dtype).reshape(batch, in_channels, 1, 1), weight.to(x.dtype))
        if dcoefs is not None:
            x = x * dcoefs.to(x.dtype).reshape(batch, out_channels, 1, 1)
    else:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_channels, 1, 1)  # [N, C_out, C_in, k, k]
        if dcoefs is not None:
            w = w * dcoefs.reshape(batch, out_channels, 1, 1, 1)
        # One plain conv per sample rather than a grouped conv: oneDNN runs those much faster (channels-last
        # especially), and the arithmetic per sample is the same.
        x = map_items(lambda xi, wi: conv(xi, wi[0]), x, w.to(x.dtype))
    if up == 2:
        # The transposed conv gives 2H + kh - 2 rows; this symmetric padding brings the FIR output to exactly 2H.
        k = resample_filter.shape[-1]
        pad = padding + (k + 1) // 2 - (kh - 1)
        assert pad == padding + (k - 2) // 2 - (kh - 2), "asymmetric FIR padding is not supported"
        x = fir_filter2d(x, resample_filter, padding=pad, gain=4)
    if noise is not None:
        x = x.add_(noise)  # in place keeps the conv's dtype (fp16 blocks) and spares a copy
    return x


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate: weights and biases are scaled at use time."""

    def __init__(
        self,
        in_features: int,          # Input width.
        out_features: int,         # Output width.
        bias: bool = True,         # Whether the layer has a bias.
        activation: str = "linear",  # 'linear' or 'lrelu'.
        lr_multiplier: float = 1.0,  # Learning-rate multiplier; scales both weight and bias at use time.
        bias_init: float = 0.0,    # Initial bias value (affines start at 1 so styles start at 1).
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, in_features] -> [N, out_features]."""
        assert x.shape[-1] == self.in_features, f"expected {self.in_features} features, got {x.shape[-1]}"
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act(x, b, activation=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation}"
