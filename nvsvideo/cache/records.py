"""What the inversion cache keeps per frame, and how a frame maps to tensors in a chunk file.

A chunk file is a flat safetensors dict; every tensor of frame `f` lives under the key prefix
`f"{f:06d}/"` (`000012/ws`, `000012/planes`, `000012/extra/crop`), so one file holds many frames
and a single frame can be read without loading the others.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from nvsvideo.errors import UsageError


class FrameStatus(str, enum.Enum):
    """Outcome of inverting one frame; every status counts as finished for resuming."""

    DONE = "done"          # ws + label (+ offsets or planes, per store mode) are stored
    NO_FACE = "no_face"    # no face in the frame: nothing to invert, the renderer passes it through
    FAILED = "failed"      # the encoder failed on this frame; `missing_frames(retry_failed=True)` retries it


class StoreMode(str, enum.Enum):
    """What the cache stores per frame; everything else is recomputed by the caller when rendering.

    Planes are 96x256x256 per frame (12.6 MB in fp16), so the modes trade disk for render-time work.
    """

    PLANES = "planes"         # final tri-planes: nothing to recompute
    OFFSETS = "offsets"       # tri-plane offsets: planes0 = backbone(ws) is recomputed
    RECOMPUTE = "recompute"   # ws + camera only: planes0 and the offset predictor are recomputed

    @property
    def recompute(self) -> tuple[str, ...]:
        """What the caller must recompute for a DONE frame, in the order it has to be done."""
        return {
            StoreMode.PLANES: (),
            StoreMode.OFFSETS: ("planes0",),
            StoreMode.RECOMPUTE: ("planes0", "offsets"),
        }[self]

    @property
    def stored_field(self) -> str | None:
        """The large per-frame tensor this mode keeps (`"planes"`, `"offsets"`), or None."""
        return {StoreMode.PLANES: "planes", StoreMode.OFFSETS: "offsets", StoreMode.RECOMPUTE: None}[self]


def parse_store(text: str) -> StoreMode | None:
    """A `--store` value: a store mode, or None for `auto` (decided from the video's size and the free disk).

    Raises:
        UsageError: any other value.
    """
    if text == "auto":
        return None
    try:
        return StoreMode(text)
    except ValueError:
        raise UsageError(f"unknown --store {text!r}: use auto, planes, offsets or recompute") from None


@dataclass(eq=False)
class FrameRecord:
    """The inversion result of one frame.

    A DONE record must carry `ws` and `label`; NO_FACE / FAILED records usually carry no tensors.
    Records read back from the cache hold only what the store mode keeps (the other field is None),
    with planes/offsets in the cache's storage dtype.
    """

    ws: torch.Tensor | None = None
    """[L, C] float32 latent code fed to the generator (EG3D: [14, 512])."""
    label: torch.Tensor | None = None
    """[25] float32 camera label: flattened 4x4 cam2world then flattened 3x3 intrinsics."""
    offsets: torch.Tensor | None = None
    """[P, H, W] tri-plane offsets predicted by the encoder (EG3D: [96, 256, 256])."""
    planes: torch.Tensor | None = None
    """[P, H, W] final tri-planes, planes0 + offsets."""
    status: FrameStatus = FrameStatus.DONE
    """Outcome of the inversion of this frame."""
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    """Small per-frame tensors the caller wants back (e.g. the crop transform)."""


def frame_prefix(frame: int) -> str:
    """Key prefix of one frame's tensors inside a chunk file."""
    return f"{frame:06d}/"


def pack_frame(
    frame: int,
    record: FrameRecord,
    store: StoreMode,
    precision: torch.dtype,
) -> dict[str, torch.Tensor]:
    """Flatten a record into the chunk-file tensors the store mode keeps, as CPU copies.

    Copies decouple the cache from later in-place edits by the caller, and converting planes/offsets
    to `precision` here halves the memory of buffered chunks in fp16.

    Raises:
        ValueError: a DONE record lacks `ws`, `label` or the tensor the store mode keeps.
    """
    prefix = frame_prefix(frame)
    out: dict[str, torch.Tensor] = {}
    if record.status is FrameStatus.DONE:
        big = store.stored_field
        required = {"ws": record.ws, "label": record.label}
        if big is not None:
            required[big] = getattr(record, big)
        absent = [name for name, value in required.items() if value is None]
        if absent:
            raise ValueError(f"frame {frame}: a DONE record in store mode {store.value!r} needs {absent}")
        assert record.ws is not None and record.ws.ndim == 2, "ws must be [L, C]"
        assert record.label is not None and record.label.ndim == 1, "label must be [25]"
        out[prefix + "ws"] = _cpu_copy(record.ws, torch.float32)
        out[prefix + "label"] = _cpu_copy(record.label, torch.float32)
        if big is not None:
            tensor = required[big]
            assert tensor is not None and tensor.ndim == 3, f"{big} must be [P, H, W]"
            out[prefix + big] = _cpu_copy(tensor, precision)
    for name, tensor in record.extras.items():
        out[f"{prefix}extra/{name}"] = _cpu_copy(tensor, tensor.dtype)
    return out


def unpack_frame(frame: int, status: FrameStatus, tensors: Mapping[str, torch.Tensor]) -> FrameRecord:
    """Rebuild a record from the chunk-file tensors of one frame (keys with the frame's prefix)."""
    prefix = frame_prefix(frame)
    extra = prefix + "extra/"
    return FrameRecord(
        ws=tensors.get(prefix + "ws"),
        label=tensors.get(prefix + "label"),
        offsets=tensors.get(prefix + "offsets"),
        planes=tensors.get(prefix + "planes"),
        status=status,
        extras={key[len(extra):]: value for key, value in tensors.items() if key.startswith(extra)},
    )


def _cpu_copy(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()
