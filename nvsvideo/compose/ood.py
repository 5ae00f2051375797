"""Out-of-domain preservation (`--keep-ood`): keep what the generator cannot reproduce.

EG3D only knows faces: hands, microphones, glasses, stray hair and most of the background come
back wrong or not at all. Near the input view the input pixels are the best answer for those
regions, so we find them with a soft *invertibility mask* and blend the input back in:

1. **Error after alignment.** A raw reconstruction error also flags face regions that are merely
   a few pixels off (the encoder never registers perfectly). So, as SAMM does with its learned
   warp, we let the reconstruction shift by up to `max_shift_px` and keep, per pixel, the
   smallest locally averaged error over those shifts (block matching with a Gaussian window).
2. **Coarse to fine.** The error is measured on an area-averaged pyramid of both images. Each level
   becomes a soft mask (a sigmoid around `threshold`), and the levels are merged coarse to fine
   with SAMM's gated rule `a <- clip(m·a + a·(1 - a), 0, 1)` (a: upsampled coarse mask, m: the
   finer one): where the coarse level sees no problem the finer levels are ignored (no speckle),
   where it does they refine the edges.
3. **Clean-up.** A small morphological opening (drop specks) and closing (fill pinholes), a
   dilation margin so the object's halo comes along, then Gaussian feathering.
4. **Over time.** `MaskSmoother` smooths the masks causally, frame by frame (see its docstring).
5. **Fade with the view.** The mask and the input pixels live in the *input* camera. At another
   camera they would land in the wrong place, so `fade_weight` turns the blend off as the output
   camera turns away from the input camera (full below 5°, none above 20° by default).

Limits (also in the README): this is 2D compositing, not 3D. What is kept is never re-rendered
from the new view: a hand in front of the face stays a flat cut-out that fades out as the camera
turns, and in the fade band (5°-20°) both the input object and EG3D's version of that region show
faintly (ghosting). The threshold is a colour-error heuristic: an object coloured like the skin
behind it can be missed, and a bad reconstruction of the face itself (an expression the encoder
misses) is kept from the input too, which near the input view is the right thing. Objects under
about two coarse cells (16 px of a 512 crop with the default levels) are suppressed by the gating.
The default threshold was chosen on synthetic tests, not calibrated on real reconstructions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from nvsvideo.cameras.eg3d import rotation_angle_deg, split_label


@dataclass(frozen=True)
class OodMaskConfig:
    """Settings of `ood_mask`. Pixel sizes are in crop pixels; errors in units of images in [-1, 1]."""

    factors: tuple[int, ...] = (8, 4, 2)
    """Pyramid levels as downsampling factors, coarse to fine (a 512 crop: 64, 128 and 256 px maps)."""
    max_shift_px: int = 3
    """Misregistration tolerated: every level searches the whole-pixel crop shifts up to this per axis."""
    window_sigma: float = 1.0
    """Gaussian sigma, in level pixels, of the window the squared error is averaged over."""
    threshold: float = 0.25
    """RMS colour error (mean over RGB) at which a pixel is half out of domain; 0.25 is 32 grey levels."""
    softness: float = 0.05
    """Width of the sigmoid: the mask goes from 0.12 to 0.88 over threshold ± 2·softness."""
    open_px: int = 4
    """Radius of the opening that removes isolated specks."""
    close_px: int = 8
    """Radius of the closing that fills small holes."""
    dilate_px: int = 4
    """Extra margin around kept regions, so their halo (shadow, blur) comes along."""
    feather_px: float = 4.0
    """Gaussian sigma of the final feathering."""

    def __post_init__(self) -> None:
        if not self.factors or any(f < 1 for f in self.factors) or list(self.factors) != sorted(self.factors, reverse=True):
            raise ValueError(f"factors must be positive and decreasing (coarse to fine), got {self.factors}")
        if self.softness <= 0 or self.threshold <= 0:
            raise ValueError(f"threshold and softness must be positive, got {self.threshold}, {self.softness}")
        if min(self.max_shift_px, self.window_sigma, self.open_px, self.close_px, self.dilate_px, self.feather_px) < 0:
            raise ValueError("pixel sizes must be >= 0")


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders.

    Args:
        images: [B, C, H, W].
        sigma: standard deviation in pixels; 0 returns the input.

    Returns:
        [B, C, H, W].
    """
    if sigma <= 0:
        return images
    h, w = images.shape[-2:]
    # Reflection needs the pad to be smaller than the image.
    radius = min(math.ceil(3.0 * sigma), h - 1, w - 1)
    if radius < 1:
        return images
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).tolist()
    # Weighted sums of shifted views: far faster on CPU than a one-channel conv2d.
    padded = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    rows = padded[..., :, 0:w] * kernel[0]
    for i, k in enumerate(kernel[1:], start=1):
        rows.add_(padded[..., :, i:i + w], alpha=k)
    padded = F.pad(rows, (0, 0, radius, radius), mode="reflect")
    out = padded[..., 0:h, :] * kernel[0]
    for i, k in enumerate(kernel[1:], start=1):
        out.add_(padded[..., i:i + h, :], alpha=k)
    return out


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey-level dilation (max over a (2r+1)² square). mask: [B, 1, H, W] -> [B, 1, H, W]."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * radius + 1, stride=1, padding=radius)


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Grey-level erosion (min over a (2r+1)² square). mask: [B, 1, H, W] -> [B, 1, H, W]."""
    return -dilate(-mask, radius)


def shift_image(padded: torch.Tensor, pad: int, dy: float, dx: float, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear sub-pixel shift: out[i, j] = image[i + dy, j + dx].

    Args:
        padded: [B, C, H + 2·pad, W + 2·pad] the image with `pad` border pixels on every side.
        pad: the border width; |dy|, |dx| must be below it.
        dy: vertical offset in pixels.
        dx: horizontal offset in pixels.
        size: (H, W).

    Returns:
        [B, C, H, W].
    """
    h, w = size
    assert abs(dy) < pad and abs(dx) < pad, (dy, dx, pad)
    y0, x0 = math.floor(dy), math.floor(dx)
    ay, ax = dy - y0, dx - x0
    rows = padded[..., pad + y0:pad + y0 + h, :]
    if ay > 0:
        rows = torch.lerp(rows, padded[..., pad + y0 + 1:pad + y0 + 1 + h, :], ay)
    out = rows[..., pad + x0:pad + x0 + w]
    if ax > 0:
        out = torch.lerp(out, rows[..., pad + x0 + 1:pad + x0 + 1 + w], ax)
    return out


def aligned_error(x: torch.Tensor, y: torch.Tensor, shifts: Sequence[tuple[float, float]],
                  window_sigma: float) -> torch.Tensor:
    """Local RMS error between x and y, minimised over shifts of y (block matching).

    Each shift's per-pixel squared error (mean over channels) is averaged over a Gaussian window
    before the minimum is taken, so a shift must explain a whole neighbourhood, not one pixel's colour.

    Args:
        x: [B, C, H, W] reference (the input crop).
        y: [B, C, H, W] image to align (the reconstruction).
        shifts: (dy, dx) candidate offsets in pixels, fractional allowed (bilinear).
        window_sigma: Gaussian sigma of the averaging window, in pixels.

    Returns:
        [B, 1, H, W] non-negative error, in the units of x.
    """
    assert x.shape == y.shape and x.ndim == 4, (x.shape, y.shape)
    size = (x.shape[-2], x.shape[-1])
    pad = math.floor(max(max(abs(dy), abs(dx)) for dy, dx in shifts)) + 1
    padded = F.pad(y, (pad, pad, pad, pad), mode="replicate")
    best = None
    for dy, dx in shifts:
        shifted = shift_image(padded, pad, dy, dx, size)
        error = gaussian_blur((x - shifted).square().mean(1, keepdim=True), window_sigma)
        best = error if best is None else torch.minimum(best, error)
    return best.sqrt()


def level_shifts(max_shift_px: int, factor: int) -> list[tuple[float, float]]:
    """Whole crop-pixel shifts up to `max_shift_px` per axis, in the pixels of a level `factor` times smaller.

    At coarse levels these are fractions of a level pixel, so a 2-px misregistration of the crop is
    undone there too instead of being rounded away.
    """
    r = max_shift_px
    return [(dy / factor, dx / factor) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]


def soft_threshold(error: torch.Tensor, threshold: float, softness: float) -> torch.Tensor:
    """sigmoid((error - threshold) / softness): 0.5 at the threshold. Any shape in, same shape out."""
    return torch.sigmoid((error - threshold) / softness)


def merge_coarse_to_fine(coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
    """SAMM's gated merge: the coarse mask decides where the finer one may speak.

    Args:
        coarse: [B, 1, h, w] mask in [0, 1] at a coarser level.
        fine: [B, 1, H, W] mask in [0, 1].

    Returns:
        [B, 1, H, W]: `fine` where coarse ≈ 1, ≈ 0 where coarse ≈ 0.
    """
    a = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
    return (fine * a + a * (1.0 - a)).clamp(0.0, 1.0)


def ood_mask(input_crop: torch.Tensor, reconstruction: torch.Tensor, config: OodMaskConfig = OodMaskConfig()) -> torch.Tensor:
    """Soft invertibility mask: 1 where the generator could not reproduce the input.

    Args:
        input_crop: [B, 3, H, W] input crop in [-1, 1].
        reconstruction: [B, 3, H, W] the generator's render at the input camera, in [-1, 1].
        config: thresholds, pyramid and clean-up sizes.

    Returns:
        [B, 1, H, W] in [0, 1]; 1 = take the input pixel.
    """
    assert input_crop.ndim == 4 and input_crop.shape[1] == 3, input_crop.shape
    assert reconstruction.shape == input_crop.shape, (reconstruction.shape, input_crop.shape)
    h, w = input_crop.shape[-2:]
    merged = None
    for factor in config.factors:
        size = (max(1, h // factor), max(1, w // factor))
        # Area averaging: an anti-aliased (box-filtered) pyramid level.
        x = F.interpolate(input_crop, size=size, mode="area")
        y = F.interpolate(reconstruction, size=size, mode="area")
        error = aligned_error(x, y, level_shifts(config.max_shift_px, factor), config.window_sigma)
        level = soft_threshold(error, config.threshold, config.softness)
        merged = level if merged is None else merge_coarse_to_fine(merged, level)
    # Clean-up at the finest level's resolution, radii converted from crop pixels.
    finest = config.factors[-1]
    r_open, r_close = round(config.open_px / finest), round(config.close_px / finest)
    merged = dilate(erode(merged, r_open), r_open)
    merged = erode(dilate(merged, r_close), r_close)
    merged = dilate(merged, round(config.dilate_px / finest))
    mask = F.interpolate(merged, size=(h, w), mode="bilinear", align_corners=False)
    return gaussian_blur(mask, config.feather_px).clamp(0.0, 1.0)


class MaskSmoother:
    """Causal temporal smoothing of OOD masks: a per-pixel exponential filter with fast rise, slow fall.

    Each new frame moves the state towards its mask by a fraction 1 - exp(-1/tau), with tau =
    `rise_frames` where the mask grows and `fall_frames` where it shrinks. The asymmetry is on
    purpose: near the input view, keeping an input pixel a few frames too long is harmless (it is
    the real picture), while dropping it too early shows the generator's failure. So a hand that
    enters appears at once and a flickering mask settles high instead of blinking.

    It is causal and keeps one [B, 1, H, W] state, so it runs inside the streaming pipeline with
    memory independent of the video length, at the cost of a lag of about `fall_frames` when an
    object leaves. Masks are in crop coordinates; the crops are themselves smoothed over time, so
    a pixel of consecutive masks shows nearly the same place. Call `reset()` after a frame without
    a face or a cut, where the previous state means nothing.

    A batch of masks is taken as consecutive frames, in order, continuing from the previous call.
    """

    def __init__(
        self,
        rise_frames: float = 1.0,  # time constant (frames) where the mask grows; 0 = follow at once
        fall_frames: float = 4.0,  # time constant (frames) where the mask shrinks
    ) -> None:
        if rise_frames < 0 or fall_frames < 0:
            raise ValueError(f"time constants must be >= 0, got {rise_frames}, {fall_frames}")
        self.rise_frames = rise_frames
        self.fall_frames = fall_frames
        self._rise = _ema_step(rise_frames)
        self._fall = _ema_step(fall_frames)
        self._state: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the past (a cut, a frame without a face)."""
        self._state = None

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        """Smooth consecutive masks.

        Args:
            masks: [T, 1, H, W] in [0, 1], consecutive frames in order.

        Returns:
            [T, 1, H, W] smoothed masks.
        """
        assert masks.ndim == 4 and masks.shape[1] == 1, masks.shape
        if self._state is not None and self._state.shape[-2:] != masks.shape[-2:]:
            self._state = None
        out = []
        for mask in masks:
            if self._state is None:
                self._state = mask.detach().clone()
            else:
                step = torch.where(mask > self._state, self._rise, self._fall)
                self._state = self._state + step * (mask.detach() - self._state)
            out.append(self._state)
        return torch.stack(out)

    def __repr__(self) -> str:
        return f"MaskSmoother(rise_frames={self.rise_frames}, fall_frames={self.fall_frames})"


def _ema_step(tau: float) -> float:
    """Per-frame update fraction of an exponential filter with time constant `tau` frames."""
    return 1.0 if tau == 0 else 1.0 - math.exp(-1.0 / tau)


def view_angle_deg(input_label: np.ndarray, output_label: np.ndarray) -> np.ndarray:
    """Angle between the input and output cameras: the geodesic angle of their rotations.

    The rotation includes roll, so an output camera that levels a tilted head also counts as
    moved (its pixels no longer line up with the input). Zoom (focal length) is not included.

    Args:
        input_label: [..., 25] EG3D label of the camera the input was seen from.
        output_label: [..., 25] label of the rendered camera.

    Returns:
        [...] degrees.
    """
    cam_in, _ = split_label(input_label)
    cam_out, _ = split_label(output_label)
    return rotation_angle_deg(cam_in[..., :3, :3], cam_out[..., :3, :3])


def fade_weight(input_label: np.ndarray, output_label: np.ndarray, full_deg: float = 5.0,
                zero_deg: float = 20.0) -> np.ndarray:
    """How much of the OOD blend to apply at an output camera: 1 near the input view, 0 far from it.

    Args:
        input_label: [..., 25] input camera labels.
        output_label: [..., 25] output camera labels.
        full_deg: below this angle the blend is fully on.
        zero_deg: above this angle it is off; in between a smoothstep.

    Returns:
        [...] float64 weights in [0, 1].
    """
    if not 0 <= full_deg < zero_deg:
        raise ValueError(f"need 0 <= full_deg < zero_deg, got {full_deg}, {zero_deg}")
    t = np.clip((view_angle_deg(input_label, output_label) - full_deg) / (zero_deg - full_deg), 0.0, 1.0)
    return 1.0 - t * t * (3.0 - 2.0 * t)


def blend_ood(novel_view: torch.Tensor, input_crop: torch.Tensor, mask: torch.Tensor,
              view_weight: torch.Tensor | np.ndarray | float) -> torch.Tensor:
    """Blend the input back over the render where the mask says the generator failed.

    out = novel + (w·m)·(input − novel). The input crop and the mask are resized (bilinear,
    antialiased) to the render's size when they differ (e.g. `--size 256`).

    Args:
        novel_view: [B, 3, S, S] render at the output camera, in [-1, 1].
        input_crop: [B, 3, H, W] input crop in [-1, 1].
        mask: [B, 1, H, W] OOD mask in [0, 1] (from `ood_mask`, smoothed).
        view_weight: [B] or scalar, from `fade_weight`.

    Returns:
        [B, 3, S, S].
    """
    b, c, s_h, s_w = novel_view.shape
    assert c == 3 and input_crop.shape[:2] == (b, 3) and mask.shape[:2] == (b, 1), (
        novel_view.shape, input_crop.shape, mask.shape)
    assert input_crop.shape[-2:] == mask.shape[-2:], (input_crop.shape, mask.shape)
    if input_crop.shape[-2:] != (s_h, s_w):
        input_crop = F.interpolate(input_crop, size=(s_h, s_w), mode="bilinear", align_corners=False, antialias=True)
        mask = F.interpolate(mask, size=(s_h, s_w), mode="bilinear", align_corners=False, antialias=True)
    weight = torch.as_tensor(view_weight, dtype=novel_view.dtype, device=novel_view.device).reshape(-1, 1, 1, 1)
    assert weight.shape[0] in (1, b), (weight.shape, b)
    return novel_view + (weight * mask.to(novel_view.dtype)) * (input_crop.to(novel_view.dtype) - novel_view)


@dataclass(frozen=True)
class KeepOodOptions:
    """Settings of `--keep-ood`."""

    mask: OodMaskConfig = OodMaskConfig()
    """How the invertibility mask is computed."""
    full_deg: float = 5.0
    """Below this angle between the input and output cameras the input is blended in fully."""
    zero_deg: float = 20.0
    """Above this angle nothing is blended (the input pixels would be misplaced)."""
    rise_frames: float = 1.0
    """Time constant, in frames, with which a growing mask is followed."""
    fall_frames: float = 4.0
    """Time constant, in frames, with which a shrinking mask is followed."""


class OodKeeper:
    """`--keep-ood` as one streaming stage: mask at the input view, smoothed over time, faded with the view.

    Feed it consecutive face frames of one shot, in order and in batches; call `reset()` after a
    frame without a face. When every frame of a batch is far from its input view the pipeline may
    skip rendering the reconstruction (pass None): nothing is blended and the temporal state is
    dropped, as the masks of those frames are never computed.
    """

    def __init__(self, options: KeepOodOptions = KeepOodOptions()) -> None:
        self.options = options
        self.smoother = MaskSmoother(rise_frames=options.rise_frames, fall_frames=options.fall_frames)

    def reset(self) -> None:
        """Forget the temporal state (a frame without a face, a cut)."""
        self.smoother.reset()

    def view_weights(self, input_labels: np.ndarray, output_labels: np.ndarray) -> np.ndarray:
        """`fade_weight` with these options. Labels [B, 25]; returns [B] in [0, 1]."""
        return fade_weight(input_labels, output_labels, self.options.full_deg, self.options.zero_deg)

    def __call__(self, novel_view: torch.Tensor, input_crop: torch.Tensor, reconstruction: torch.Tensor | None,
                 view_weights: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Blend the input back where the generator failed.

        Args:
            novel_view: [B, 3, S, S] renders at the output cameras, in [-1, 1].
            input_crop: [B, 3, H, W] input crops in [-1, 1].
            reconstruction: [B, 3, H, W] renders at the input cameras; may be None when all weights are 0.
            view_weights: [B] from `view_weights`.

        Returns:
            ([B, 3, S, S] composited frames, [B, 1, H, W] smoothed masks or None when skipped).
        """
        weights = np.asarray(view_weights, dtype=np.float64).reshape(-1)
        assert len(weights) == len(novel_view), (weights.shape, novel_view.shape)
        if not weights.any():
            self.smoother.reset()
            return novel_view, None
        if reconstruction is None:
            raise ValueError("a reconstruction at the input view is needed when any view weight is above 0")
        mask = self.smoother(ood_mask(input_crop, reconstruction, self.options.mask))
        return blend_ood(novel_view, input_crop, mask, weights), mask

    def __repr__(self) -> str:
        return f"OodKeeper({self.options})"
