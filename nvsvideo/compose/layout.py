"""Output layouts of `nvsvideo rerender --output crop|paste|compare`, and tensor <-> frame conversion.

- `crop`: the rendered crop, `size` x `size`.
- `paste`: the render pasted into the original frame through the exact inverse of its crop
  transform, with a feathered border (`nvsvideo.face.crop.paste_back`); frame size unchanged.
- `compare`: input crop | reconstruction | novel view side by side, `size` x 3·`size`, with
  optional labels drawn with PIL's built-in font (no font files needed).

A frame without a face has no render: `paste` passes it through untouched (the same array), and
`crop`/`compare` show the whole frame letterboxed into the output size, so the video keeps its
frame count and timing and nothing is made up.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from nvsvideo.face.crop import CropTransform, paste_back
from nvsvideo.limits import output_hw

#: Panel captions of the `compare` layout, left to right.
COMPARE_LABELS = ("input", "reconstruction", "novel view")


class OutputMode(str, enum.Enum):
    """What `rerender` writes for each frame."""

    CROP = "crop"
    PASTE = "paste"
    COMPARE = "compare"


def to_uint8_frames(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] to video frames.

    Args:
        images: [B, 3, H, W] float, nominally in [-1, 1] (clamped).

    Returns:
        uint8 [B, H, W, 3] numpy array, value round((x + 1) · 127.5).
    """
    assert images.ndim == 4 and images.shape[1] == 3, images.shape
    scaled = (images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


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


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square uint8 [S, S, 3] image to [size, size, 3] (Lanczos); returned as is when it fits."""
    assert image.ndim == 3 and image.shape[0] == image.shape[1] and image.dtype == np.uint8, image.shape
    if image.shape[0] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.LANCZOS))


def letterbox(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fit a whole frame into height x width, keeping its aspect ratio, with black bars.

    Args:
        frame: uint8 [H, W, 3].
        height: output height.
        width: output width.

    Returns:
        uint8 [height, width, 3].
    """
    h, w = frame.shape[:2]
    scale = min(height / h, width / w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.LANCZOS))
    out = np.zeros((height, width, 3), np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = resized
    return out


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str] | None = None) -> np.ndarray:
    """Concatenate equally sized panels left to right, optionally captioning each one.

    Args:
        panels: uint8 [H, W, 3] images of one size.
        labels: one caption per panel, drawn top-left on a dark box; None for no captions.

    Returns:
        uint8 [H, W · len(panels), 3].
    """
    assert panels and all(p.shape == panels[0].shape and p.dtype == np.uint8 for p in panels), [p.shape for p in panels]
    strip = np.concatenate(list(panels), axis=1)
    if not labels:
        return strip
    assert len(labels) == len(panels), (len(labels), len(panels))
    h, w = panels[0].shape[:2]
    image = Image.fromarray(strip)
    draw = ImageDraw.Draw(image)
    # PIL's bundled default font; it scales where FreeType is available and stays a bitmap otherwise.
    font = ImageFont.load_default(size=max(10, h // 24))
    margin = max(2, h // 100)
    for i, text in enumerate(labels):
        left, top, right, bottom = draw.textbbox((i * w + 2 * margin, 2 * margin), text, font=font)
        draw.rectangle((left - margin, top - margin, right + margin, bottom + margin), fill=(0, 0, 0))
        draw.text((i * w + 2 * margin, 2 * margin), text, fill=(255, 255, 255), font=font)
    return np.asarray(image)


def compose_frame(
    mode: OutputMode,
    frame: np.ndarray,
    transform: CropTransform | None,
    novel: np.ndarray | None,
    *,
    size: int,
    input_crop: np.ndarray | None = None,
    reconstruction: np.ndarray | None = None,
    labels: bool = True,
    mask_feather: float = 0.1,
) -> np.ndarray:
    """One output frame of the chosen layout.

    Args:
        mode: crop, paste or compare.
        frame: uint8 [H, W, 3] the original frame.
        transform: its frame -> crop transform; None when the frame has no face.
        novel: uint8 [S, S, 3] the render at the output camera (after OOD blending); None without a face.
        size: side of the crop in `crop`/`compare` outputs; renders of another size are resized.
        input_crop: uint8 [S', S', 3] the aligned input crop (compare only).
        reconstruction: uint8 [S'', S'', 3] the render at the input camera (compare only).
        labels: caption the compare panels.
        mask_feather: width of the paste-back blend as a fraction of the crop side (paste only).

    Returns:
        uint8 [*output_shape(mode, frame.shape[:2], size), 3]; in `paste` mode without a face,
        `frame` itself.
    """
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8, (frame.shape, frame.dtype)
    if (transform is None) != (novel is None):
        raise ValueError("transform and novel must both be given (a face) or both be None (no face)")
    if mode is OutputMode.PASTE:
        if transform is None:
            return frame
        return paste_back(frame, resize_square(novel, transform.output_size), transform, mask_feather)
    out_h, out_w = output_shape(mode, frame.shape[:2], size)
    if novel is None:
        return letterbox(frame, out_h, out_w)
    if mode is OutputMode.CROP:
        return resize_square(novel, size)
    if input_crop is None or reconstruction is None:
        raise ValueError("the compare layout needs the input crop and the reconstruction")
    panels = [resize_square(p, size) for p in (input_crop, reconstruction, novel)]
    return side_by_side(panels, COMPARE_LABELS if labels else None)
