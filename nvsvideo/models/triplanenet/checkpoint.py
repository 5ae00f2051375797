"""Official TriPlaneNet checkpoints (`triplanenet_final.pth`, `triplanenet_v2_final.pth`).

A checkpoint is a `torch.save`d dict whose `state_dict` holds three prefixes: `psp_encoder.`,
`triplanenet_encoder.` and `decoder.` (the frozen EG3D FFHQ 512/128 generator). It is read with
`torch.load(weights_only=True)` only. The variant (v1, v2 with pixel shuffle, v2 with nearest
upsampling) and the layer widths are read from tensor shapes, not from the training options, so
narrow models of the same architecture (test files) load through the same path. A zip-format file
(any `torch.save` since PyTorch 1.6) is memory-mapped rather than read. One file is enough:
the generator is rebuilt from `decoder.*` with the FFHQ 512/128 config, unless an EG3D checkpoint
is given, which then replaces `decoder.*` entirely.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from nvsvideo.errors import WeightsError
from nvsvideo.models.eg3d.checkpoint import EG3DCheckpoint, build_generator
from nvsvideo.models.triplanenet.irse import STAGE_CHANNELS, UNITS_PER_STAGE, stage_end
from nvsvideo.models.triplanenet.model import RenderOptions, TriPlaneNet
from nvsvideo.models.triplanenet.offsets_v1 import UP_CHANNELS_V1, TriPlaneOffsetsV1
from nvsvideo.models.triplanenet.offsets_v2 import UP_CHANNELS_V2, TriPlanePredictorV2
from nvsvideo.models.triplanenet.psp import GradualStyleEncoder
from nvsvideo.models.triplanenet.unet import Upsample
from nvsvideo.torchfile import load_weights_only

Variant = Literal["v1", "v2-pixelshuffle", "v2-nearest"]

PSP_PREFIX = "psp_encoder."
PREDICTOR_PREFIX = "triplanenet_encoder."
DECODER_PREFIX = "decoder."
#: EG3D's backbone at 256-px planes takes 14 w vectors; StyleGAN2 pSp encoders for 1024-px faces have 18.
NUM_STYLES = 14
#: Size of each w vector of the official pSp heads (EG3D's w_dim).
W_DIM = 512
#: Tri-plane channels the v2 head concatenates in front of its decoder features.
_PLANE_CHANNELS = 96
#: Official v2 decoder channels reaching `final_head_two` besides the planes: 24 after pixel shuffle, 64 after nearest.
_OFFICIAL_V2_HEAD_EXTRA: dict[int, Variant] = {24: "v2-pixelshuffle", 64: "v2-nearest"}
_UPSAMPLE: dict[Variant, Upsample] = {"v1": "pixel_shuffle", "v2-pixelshuffle": "pixel_shuffle", "v2-nearest": "nearest"}
_STYLE_KEY = re.compile(r"^(?:psp_encoder|encoder)\.styles\.(\d+)\.linear\.weight$")
#: First conv of each U-Net block's DoubleConv; it outputs the block's width.
_UP_CONV_KEY = PREDICTOR_PREFIX + "up{k}.conv.double_conv.1.weight"


@dataclass
class TriPlaneNetCheckpoint:
    """The encoder weights of a TriPlaneNet file and, when present, its EG3D generator weights."""

    variant: Variant
    encoders: dict[str, torch.Tensor]
    """`psp_encoder.*` and `triplanenet_encoder.*` tensors, names as in the file."""
    decoder: dict[str, torch.Tensor] | None
    """`decoder.*` tensors without the prefix (EG3D names), or None when the file has none."""
    source: str


@dataclass(frozen=True)
class EncoderWidths:
    """Layer widths of the two encoders: what their constructors take besides the variant."""

    psp_stages: tuple[int, ...]
    """Output channels of the pSp trunk's four stages; the last one is also its pyramid and style-head width."""
    num_styles: int
    """w vectors the pSp encoder predicts (EG3D's num_ws)."""
    w_dim: int
    """Size of each w vector."""
    predictor_stages: tuple[int, ...]
    """Output channels of the tri-plane predictor's four trunk stages."""
    up_channels: tuple[int, ...]
    """Output channels of the predictor's U-Net blocks up1..up4."""


def official_widths(variant: Variant) -> EncoderWidths:
    """The widths of the released `variant` checkpoints."""
    return EncoderWidths(
        psp_stages=STAGE_CHANNELS,
        num_styles=NUM_STYLES,
        w_dim=W_DIM,
        predictor_stages=STAGE_CHANNELS,
        up_channels=UP_CHANNELS_V1 if variant == "v1" else UP_CHANNELS_V2[_UPSAMPLE[variant]],
    )


def infer_widths(state_dict: Mapping[str, torch.Tensor], source: str) -> EncoderWidths:
    """Read the encoder widths from the tensor shapes (names as in the file, shapes only are used).

    The checks that the shapes are mutually consistent are left to the strict load.

    Raises:
        WeightsError: a tensor the widths are read from is missing.
    """

    def out_channels(key: str) -> int:
        tensor = state_dict.get(key)
        if tensor is None:
            raise WeightsError(f"{source} lacks the tensor '{key}'; it is incomplete or not a TriPlaneNet checkpoint")
        return int(tensor.shape[0])

    def trunk(prefix: str) -> tuple[int, ...]:
        # The first conv of a stage's last unit outputs that stage's width.
        return tuple(out_channels(f"{prefix}body.{stage_end(s)}.res_layer.1.weight") for s in range(len(UNITS_PER_STAGE)))

    return EncoderWidths(
        psp_stages=trunk(PSP_PREFIX),
        num_styles=len(_style_indices(state_dict, PSP_PREFIX)),
        w_dim=out_channels(f"{PSP_PREFIX}styles.0.linear.weight"),
        predictor_stages=trunk(PREDICTOR_PREFIX),
        up_channels=tuple(out_channels(_UP_CONV_KEY.format(k=k)) for k in range(1, 5)),
    )


def detect_variant(state_dict: Mapping[str, torch.Tensor], source: str) -> Variant:
    """Tell v1 / v2-pixelshuffle / v2-nearest apart from tensor shapes; refuse anything else.

    Raises:
        WeightsError: the tensors are not those of a TriPlaneNet (e.g. a StyleGAN2 pSp encoder).
    """
    styles = _style_indices(state_dict)
    if styles and len(styles) != NUM_STYLES:
        raise WeightsError(
            f"{source} is a pSp-style encoder with {len(styles)} styles (StyleGAN2 ones have 18), not TriPlaneNet, "
            f"whose encoder predicts the {NUM_STYLES} EG3D styles; use an official TriPlaneNet v1 or v2 checkpoint"
        )
    if not any(key.startswith(PSP_PREFIX) for key in state_dict):
        raise WeightsError(
            f"{source} is not a TriPlaneNet checkpoint (no '{PSP_PREFIX}' tensors); "
            "use an official TriPlaneNet v1 or v2 checkpoint"
        )
    stem = state_dict.get(f"{PREDICTOR_PREFIX}input_layer.0.weight")
    if stem is None:
        raise WeightsError(
            f"{source} has a latent encoder but no tri-plane predictor ('{PREDICTOR_PREFIX}' tensors); "
            "it is not a complete TriPlaneNet checkpoint"
        )
    in_channels = stem.shape[1]
    if in_channels == 6 and f"{PREDICTOR_PREFIX}final_head.0.weight" in state_dict:
        return "v1"
    head = state_dict.get(f"{PREDICTOR_PREFIX}final_head_two.0.weight")
    variant = _v2_variant(state_dict, head.shape[1] - _PLANE_CHANNELS) if in_channels == 9 and head is not None else None
    if variant is not None:
        return variant
    raise WeightsError(
        f"{source} has a tri-plane predictor of an unknown kind ({in_channels}-channel input); "
        "only the official TriPlaneNet v1 and v2 architectures are supported"
    )


def _v2_variant(state_dict: Mapping[str, torch.Tensor], head_extra: int) -> Variant | None:
    """The v2 variant whose head takes `head_extra` decoder channels besides the planes, or None.

    Pixel shuffle divides the last U-Net block's channels by 4 on the way to the head; nearest
    upsampling keeps them.
    """
    up4 = state_dict.get(_UP_CONV_KEY.format(k=4))
    if up4 is None:
        # A cut-down dict (shape checks): the official head widths still tell the variants apart.
        return _OFFICIAL_V2_HEAD_EXTRA.get(head_extra)
    if head_extra * 4 == up4.shape[0]:
        return "v2-pixelshuffle"
    return "v2-nearest" if head_extra == up4.shape[0] else None


def _style_indices(state_dict: Mapping[str, torch.Tensor], prefix: str | None = None) -> set[int]:
    """Indices of the pSp style heads (under `prefix`, or under either pSp naming when None)."""
    return {
        int(m.group(1))
        for key in state_dict
        if (m := _STYLE_KEY.match(key)) and (prefix is None or key.startswith(prefix))
    }


def build_encoders(
    variant: Variant, widths: EncoderWidths | None = None
) -> tuple[GradualStyleEncoder, TriPlaneOffsetsV1 | TriPlanePredictorV2]:
    """The two encoders of `variant` (random init; built on the current device).

    Args:
        variant: which predictor and U-Net upsampling.
        widths: layer widths; None = the official ones of `variant`.
    """
    widths = official_widths(variant) if widths is None else widths
    psp = GradualStyleEncoder(
        num_styles=widths.num_styles,
        w_dim=widths.w_dim,
        stage_channels=widths.psp_stages,
        head_channels=widths.psp_stages[-1],
    )
    predictor: TriPlaneOffsetsV1 | TriPlanePredictorV2
    if variant == "v1":
        predictor = TriPlaneOffsetsV1(up_channels=widths.up_channels, stage_channels=widths.predictor_stages)
    else:
        predictor = TriPlanePredictorV2(
            upsample=_UPSAMPLE[variant], up_channels=widths.up_channels, stage_channels=widths.predictor_stages
        )
    return psp, predictor


def read_triplanenet(path: str | os.PathLike[str]) -> TriPlaneNetCheckpoint:
    """Read a TriPlaneNet `.pt`/`.pth` safely and sort its tensors by role.

    Accepts the training dict (`{'state_dict': ..., 'opts': ..., ...}`) or a bare state dict.

    Raises:
        WeightsError: missing, unreadable, refused by the safe loader, or not a TriPlaneNet.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"TriPlaneNet checkpoint {path} does not exist; check the path or run `nvsvideo weights`")
    # Memory-mapped (zip-format files; legacy ones are read): the ~1 GB file is not copied into memory
    # first, its tensors are paged in as they are used (or copied once to the GPU), and batch workers
    # on one machine share the pages.
    obj = load_weights_only(path, what="TriPlaneNet checkpoint", mmap=zipfile.is_zipfile(path))
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if state is None and isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    if not isinstance(state, dict) or not state:
        raise WeightsError(f"{path} holds no model state dict; it is not a TriPlaneNet checkpoint")
    variant = detect_variant(state, str(path))
    encoders = {k: v for k, v in state.items() if k.startswith((PSP_PREFIX, PREDICTOR_PREFIX))}
    decoder = {k[len(DECODER_PREFIX) :]: v for k, v in state.items() if k.startswith(DECODER_PREFIX)}
    return TriPlaneNetCheckpoint(variant=variant, encoders=encoders, decoder=decoder or None, source=str(path))


def build_triplanenet(
    ckpt: TriPlaneNetCheckpoint,
    device: torch.device | str,
    *,
    eg3d: EG3DCheckpoint | None = None,
    render_options: RenderOptions | None = None,
) -> TriPlaneNet:
    """Instantiate the model, loading every tensor strictly, in eval mode with gradients off.

    Args:
        ckpt: from `read_triplanenet`.
        device: where the model lives.
        eg3d: an EG3D generator (config + weights) that replaces the checkpoint's `decoder.*`.
        render_options: rendering used inside the model; None = the official inference settings.
    Raises:
        WeightsError: tensors missing, unexpected or mis-shaped, no generator available, or encoder
            codes that do not fit the generator.
    """
    if eg3d is None:
        if ckpt.decoder is None:
            raise WeightsError(
                f"{ckpt.source} holds no EG3D generator ('{DECODER_PREFIX}' tensors); "
                "pass the EG3D FFHQ 512/128 generator with --eg3d"
            )
        from nvsvideo.models.eg3d.config import ffhq512_128_checkpoint_config

        # TriPlaneNet files carry no generator config: theirs is always EG3D FFHQ 512/128.
        eg3d = EG3DCheckpoint(
            **ffhq512_128_checkpoint_config(), state_dict=ckpt.decoder, source=f"{ckpt.source} ({DECODER_PREFIX}*)"
        )
    widths = infer_widths(ckpt.encoders, ckpt.source)
    # Built on the meta device and filled by assignment: no random init of 250 M parameters, no copy.
    with torch.device("meta"):
        psp, predictor = build_encoders(ckpt.variant, widths)
    _load_strict(psp, ckpt.encoders, PSP_PREFIX, ckpt.source)
    _load_strict(predictor, ckpt.encoders, PREDICTOR_PREFIX, ckpt.source)
    generator = build_generator(eg3d, device)
    if (widths.num_styles, widths.w_dim) != (generator.backbone.num_ws, generator.w_dim):
        raise WeightsError(
            f"{ckpt.source} predicts {widths.num_styles} w vectors of size {widths.w_dim}, but the EG3D generator "
            f"from {eg3d.source} takes {generator.backbone.num_ws} of size {generator.w_dim}; "
            "use the generator the TriPlaneNet model was trained with"
        )
    model = TriPlaneNet(
        psp_encoder=psp,
        triplanenet_encoder=predictor,
        decoder=generator,
        render_options=render_options,
    )
    return model.eval().requires_grad_(False).to(device)


def load_triplanenet(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    *,
    eg3d_path: str | os.PathLike[str] | None = None,
    render_options: RenderOptions | None = None,
) -> TriPlaneNet:
    """Read and build a TriPlaneNet in one call; `eg3d_path` (any `load_eg3d` format) replaces `decoder.*`."""
    from nvsvideo.models.eg3d.checkpoint import load_eg3d

    ckpt = read_triplanenet(path)
    eg3d = load_eg3d(eg3d_path) if eg3d_path is not None else None
    return build_triplanenet(ckpt, device, eg3d=eg3d, render_options=render_options)


def _load_strict(module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str, source: str) -> None:
    """Load the `prefix` tensors into a meta-device `module` by assignment; any mismatch is a WeightsError."""
    own = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict(own, strict=True, assign=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise WeightsError(f"{source}: the '{prefix}' tensors do not fit the detected architecture ({detail[:300]})") from None


