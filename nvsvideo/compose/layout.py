"""Output layouts of `nvsvideo rerender --output crop|paste|compare`, and tensor <-> frame conversion.

- `crop`: the rendered crop, `size` x `size`.
- `paste`: the render pasted into the original frame through the exact inverse of its crop
  transform, with a feathered border (`nvsvideo.face.crop.paste_face_`); frame size unchanged.
- `compare`: input crop | reconstruction | novel view side by side, `size` x 3·`size`, with
  optional labels drawn with PIL's built-in font (no font files needed).

A frame without a face has no render: `paste` passes it through untouched (the same tensor), and
`crop`/`compare` show the whole frame letterboxed into the output size, so the video keeps its
frame count and timing and nothing is made up.

Every layout is torch ops on the frame's device (the model's), touching only the face's region in
`paste`: on a GPU a frame goes up once and the composed frame comes down once.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from nvsvideo.compose.resample import image_tensor, resample
from nvsvideo.compose.yuv import YuvPlanes
from nvsvideo.face.crop import CropTransform, paste_face_, paste_face_yuv_
from nvsvideo.limits import output_hw

#: Panel captions of the `compare` layout, left to right.
COMPARE_LABELS = ("input", "reconstruction", "novel view")


class OutputMode(str, enum.Enum):
    """What `rerender` writes for each frame."""

    CROP = "crop"
    PASTE = "paste"
    COMPARE = "compare"


def to_uint8_images(images: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] to uint8 frames on their device.

    Args:
        images: [B, 3, H, W] float, nominally in [-1, 1] (clamped).

    Returns:
        uint8 [B, H, W, 3] contiguous tensor, value round((x + 1) · 127.5).
    """
    assert images.ndim == 4 and images.shape[1] == 3, images.shape
    scaled = (images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def to_uint8_frames(images: torch.Tensor) -> np.ndarray:
    """`to_uint8_images` as a numpy array: uint8 [B, H, W, 3]."""
    return to_uint8_images(images).cpu().numpy()


def from_uint8_frames(frames: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Video frames to images in [-1, 1]; exact inverse of `to_uint8_frames` on uint8 values.

    Args:
        frames: uint8 [B, H, W, 3] or [H, W, 3].
        device: where the tensor goes.

    Returns:
        float32 [B, 3, H, W] in [-1, 1].
    """
    assert frames.dtype == np.uint8 and frames.shape[-1] == 3, (frames.dtype, frames.shape)
    batch = torch.from_numpy(np.ascontiguousarray(frames.reshape(-1, *frames.shape[-3:])))
    return batch.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def output_shape(mode: OutputMode, frame_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """(height, width) of the output video for a mode, known before the first frame is rendered.

    Args:
        mode: the output layout.
        frame_hw: (H, W) of the input video.
        size: side of the rendered crop in the output.
    """
    return output_hw(mode.value, frame_hw, size)


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a square uint8 [S, S, 3] image to [size, size, 3] (Lanczos); returned as is when it fits."""
    assert image.ndim == 3 and image.shape[0] == image.shape[1] and image.dtype == torch.uint8, image.shape
    side = image.shape[0]
    if side == size:
        return image
    return resample(image, (0.0, 0.0, float(side), float(side)), (size, size), black_outside=False, dtype=torch.uint8)


def letterbox(frame: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Fit a whole frame into height x width, keeping its aspect ratio, with black bars.

    Args:
        frame: uint8 [H, W, 3].
        height: output height.
        width: output width.

    Returns:
        uint8 [height, width, 3] on the frame's device.
    """
    h, w = frame.shape[:2]
    scale = min(height / h, width / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    out = torch.zeros((height, width, 3), dtype=torch.uint8, device=frame.device)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = resample(frame, (0.0, 0.0, float(w), float(h)), (new_w, new_h),
                                                       black_outside=False, dtype=torch.uint8)
    return out


def caption_overlay(height: int, width: int, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The captions of `side_by_side`: white text on a dark box at the top-left of each panel.

    The boxes are opaque, so a captioned strip is the overlay inside them and the panels elsewhere.

    Args:
        height: panel height.
        width: panel width.
        labels: one caption per panel.

    Returns:
        (uint8 [height, width · n, 3] overlay, bool [height, width · n, 1] where it covers the panels).
    """
    image = Image.new("RGB", (width * len(labels), height))
    cover = Image.new("L", image.size)
    draw, mark = ImageDraw.Draw(image), ImageDraw.Draw(cover)
    # PIL's bundled default font; it scales where FreeType is available and stays a bitmap otherwise.
    font = ImageFont.load_default(size=max(10, height // 24))
    margin = max(2, height // 100)
    for i, text in enumerate(labels):
        left, top, right, bottom = draw.textbbox((i * width + 2 * margin, 2 * margin), text, font=font)
        box = (left - margin, top - margin, right + margin, bottom + margin)
        draw.rectangle(box, fill=(0, 0, 0))
        mark.rectangle(box, fill=255)
        draw.text((i * width + 2 * margin, 2 * margin), text, fill=(255, 255, 255), font=font)
    return np.asarray(image), np.asarray(cover)[..., None] > 0


def side_by_side(panels: Sequence[torch.Tensor], labels: Sequence[str] | None = None) -> torch.Tensor:
    """Concatenate equally sized panels left to right, optionally captioning each one.

    Args:
        panels: uint8 [H, W, 3] images of one size, on one device.
        labels: one caption per panel, drawn top-left on a dark box; None for no captions.

    Returns:
        uint8 [H, W · len(panels), 3].
    """
    assert panels and all(p.shape == panels[0].shape and p.dtype == torch.uint8 for p in panels), [
        p.shape for p in panels]
    strip = torch.cat(list(panels), dim=1)
    if not labels:
        return strip
    assert len(labels) == len(panels), (len(labels), len(panels))
    overlay, cover = caption_overlay(panels[0].shape[0], panels[0].shape[1], labels)
    return torch.where(image_tensor(cover, strip.device), image_tensor(overlay, strip.device), strip)


def compose_frame(
    mode: OutputMode,
    frame: torch.Tensor | YuvPlanes,
    transform: CropTransform | None,
    novel: torch.Tensor | None,
    *,
    size: int,
    input_crop: torch.Tensor | None = None,
    reconstruction: torch.Tensor | None = None,
    labels: bool = True,
    mask_feather: float = 0.1,
) -> torch.Tensor | YuvPlanes:
    """One output frame of the chosen layout, on the frame's device.

    Args:
        mode: crop, paste or compare.
        frame: uint8 [H, W, 3] the original frame; in `paste` mode the render is pasted into it in place,
            or into its decoded 4:2:0 picture (`paste_face_yuv_`) when that is given instead.
        transform: its frame -> crop transform; None when the frame has no face.
        novel: uint8 [S, S, 3] the render at the output camera (after OOD blending); None without a face.
        size: side of the crop in `crop`/`compare` outputs; renders of another size are resized.
        input_crop: uint8 [S', S', 3] the aligned input crop (compare only).
        reconstruction: uint8 [S'', S'', 3] the render at the input camera (compare only).
        labels: caption the compare panels.
        mask_feather: width of the paste-back blend as a fraction of the crop side (paste only).

    Returns:
        uint8 [*output_shape(mode, frame.shape[:2], size), 3]; in `paste` mode, `frame` itself.
    """
    if (transform is None) != (novel is None):
        raise ValueError("transform and novel must both be given (a face) or both be None (no face)")
    if isinstance(frame, YuvPlanes):
        if mode is not OutputMode.PASTE:
            raise ValueError(f"only the paste layout composes into a decoded picture, not {mode.value}")
        if transform is not None:
            paste_face_yuv_(frame, resize_square(novel.to(frame.y.device), transform.output_size), transform,
                            mask_feather)
        return frame
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == torch.uint8, (frame.shape, frame.dtype)
    if mode is OutputMode.PASTE:
        if transform is None:
            return frame
        return paste_face_(frame, resize_square(novel.to(frame.device), transform.output_size), transform,
                           mask_feather)
    out_h, out_w = output_shape(mode, frame.shape[:2], size)
    if novel is None:
        return letterbox(frame, out_h, out_w)
    if mode is OutputMode.CROP:
        return resize_square(novel, size)
    if input_crop is None or reconstruction is None:
        raise ValueError("the compare layout needs the input crop and the reconstruction")
    panels = [resize_square(p.to(frame.device), size) for p in (input_crop, reconstruction, novel)]
    return side_by_side(panels, COMPARE_LABELS if labels else None)
