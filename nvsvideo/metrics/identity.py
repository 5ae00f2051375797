"""Identity similarity: cosine of ArcFace embeddings (IR-SE-50), as pSp, e4e and TriPlaneNet measure it.

The network is the face-recognition IR-SE-50 of TreB1eN's InsightFace_Pytorch (`model_ir_se50.pth`, the
file pSp distributes), read with `torch.load(weights_only=True)`: the trunk TriPlaneNet's encoders
share (`nvsvideo.models.triplanenet.irse`) plus its embedding head. Images go through the official
ID-loss preprocessing: the 256x256 image's face box [35:223, 32:220], average-pooled to 112x112.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.errors import WeightsError
from nvsvideo.models.triplanenet.irse import STAGE_CHANNELS, UNITS_PER_STAGE, IRSE50Trunk, stage_end
from nvsvideo.torchfile import load_weights_only

#: Embedding size of the released model.
EMBEDDING = 512
#: Rows and columns of the face inside a 256x256 aligned crop that the ID loss looks at.
FACE_ROWS, FACE_COLS = (35, 223), (32, 220)
#: ArcFace's input side; four stride-2 stages leave 7x7.
ARCFACE_SIZE = 112


def arcface_input(images: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] aligned face crops in [-1, 1] -> [B, 3, 112, 112] ArcFace input.

    The crop is first brought to 256x256 (for 512 crops an area resize is TriPlaneNet's 2x2 box mean).
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected square crops [B, 3, S, S], got {list(images.shape)}")
    small = images if images.shape[-1] == 256 else F.interpolate(images, size=256, mode="area")
    face = small[:, :, FACE_ROWS[0]:FACE_ROWS[1], FACE_COLS[0]:FACE_COLS[1]]
    return F.adaptive_avg_pool2d(face, ARCFACE_SIZE)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[B] cosines of [B, D] embedding pairs."""
    return F.normalize(a, dim=1).mul(F.normalize(b, dim=1)).sum(dim=1)


class ArcFace(IRSE50Trunk):
    """IR-SE-50 with the embedding head of the released file (`output_layer.{0,3,4}`)."""

    def __init__(self, stage_channels: tuple[int, ...] = STAGE_CHANNELS, embedding: int = EMBEDDING) -> None:
        super().__init__(3, stage_channels)
        last = stage_channels[-1]
        side = ARCFACE_SIZE // 2 ** len(UNITS_PER_STAGE)
        # Dropout and Flatten keep their positions (1, 2) so the tensor names match the file.
        self.output_layer = nn.Sequential(nn.BatchNorm2d(last), nn.Dropout(), nn.Flatten(),
                                          nn.Linear(last * side * side, embedding), nn.BatchNorm1d(embedding))

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """[B, embedding] unit embeddings of aligned face crops in [-1, 1]."""
        x = self.features(arcface_input(images), [stage_end(len(UNITS_PER_STAGE) - 1)])[0]
        return F.normalize(self.output_layer(x), dim=1)


def load_arcface(path: Path, device: torch.device) -> ArcFace:
    """The IR-SE-50 face recogniser from `model_ir_se50.pth` (widths read from the file), as data only.

    Raises:
        WeightsError: missing, unreadable, or not an IR-SE-50 state dict.
    """
    state = load_weights_only(path, what="ArcFace IR-SE-50")
    try:
        # Each stage's width is the output width of its last unit's first convolution.
        widths = tuple(int(state[f"body.{stage_end(s)}.res_layer.1.weight"].shape[0])
                       for s in range(len(UNITS_PER_STAGE)))
        model = ArcFace(widths, int(state["output_layer.3.weight"].shape[0]))
        model.load_state_dict(state)
    except (KeyError, TypeError, AttributeError, RuntimeError) as err:
        detail = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(f"{path} is not an IR-SE-50 ArcFace file ({detail})") from None
    return model.eval().to(device)
