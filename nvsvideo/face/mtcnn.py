"""MTCNN (Zhang et al. 2016): the detector whose five points the official EG3D crops were made from.

EG3D's preprocessing takes the eye centres, nose tip and mouth corners from the `mtcnn` package's
`detect_faces` with its defaults; these are that cascade, in torch and batched over images:
1. P-Net, fully convolutional, on a pyramid of the image (each level 0.709 of the previous, the largest
   making a 20 px face 12 px); every output cell above 0.6 is a 12 px window (stride 2) at that level,
   corrected by its box regression; suppression per level (IoU 0.5), then over all levels (0.7);
2. R-Net on each surviving window squared and resampled to 24x24: score above 0.7, suppression (0.7),
   box regression;
3. O-Net on 48x48 windows: score above 0.7, the five points relative to the window, box regression,
   suppression with intersection over the smaller box (0.7).
Boxes follow the original code's convention: corners are 1-based inclusive pixel indices (a box x1..x2
spans x2 - x1 + 1 pixels), and windows are cut at their truncated corners. Points come out in 0-based
pixel-centre coordinates. The images are RGB, scaled as (v - 127.5) / 128.

The weights are the original networks' (MIT, converted by facenet-pytorch, whose wheel ships them as
state dicts: `nvsvideo weights fetch mtcnn`). Their convolutions see the image as stored (rows = y);
the dense layers flatten the feature map column by column (x outermost), as the original did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nvsvideo.errors import WeightsError
from nvsvideo.torchfile import load_weights_only

MIN_FACE = 20
PYRAMID_FACTOR = 0.709
THRESHOLDS = (0.6, 0.7, 0.7)
#: Suppression thresholds: within a pyramid level, across levels, after R-Net, after O-Net (min mode).
NMS_LEVEL, NMS_STAGE1, NMS_STAGE2, NMS_STAGE3 = 0.5, 0.7, 0.7, 0.7
CELL, STRIDE = 12, 2


class PNet(nn.Module):
    """Proposal network: 12x12 windows, face score (2 classes) and box regression (4) per output cell."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, H, W] -> face probability [B, H', W'], regression [B, 4, H', W']."""
        x = _channels_last(x)
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Max pooling on CPU is about ten times faster on channels-last tensors than on contiguous NCHW ones.
    return x.contiguous(memory_format=torch.channels_last)


def _flatten_columns(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, W*H*C], x outermost: the layout the dense weights were trained with."""
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


class RNet(nn.Module):
    """Refinement network on 24x24 windows: face probability and box regression."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, 3, 24, 24] -> probability [N], regression [N, 4]."""
        x = _channels_last(x)
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_columns(self.prelu3(self.conv3(x)))))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 windows: face probability, box regression, five points (x1..x5, y1..y5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[N, 3, 48, 48] -> probability [N], regression [N, 4], points [N, 10] (fractions of the window)."""
        x = _channels_last(x)
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_columns(self.prelu4(self.conv4(x)))))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, *, use_min: bool = False) -> torch.Tensor:
    """Greedy non-maximum suppression with the original's inclusive-pixel areas ((x2 - x1 + 1)(y2 - y1 + 1)).

    Boxes are taken by decreasing score; a box is dropped when its overlap with a kept one exceeds
    `threshold`. The overlap is intersection over union, or over the smaller box with `use_min`.

    Args:
        boxes: [N, 4] x1, y1, x2, y2.
        scores: [N].

    Returns:
        int64 indices of the kept boxes, best first.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    iw = (torch.minimum(x2[:, None], x2[None]) - torch.maximum(x1[:, None], x1[None]) + 1).clamp(min=0)
    ih = (torch.minimum(y2[:, None], y2[None]) - torch.maximum(y1[:, None], y1[None]) + 1).clamp(min=0)
    inter = iw * ih
    if use_min:
        overlap = inter / torch.minimum(area[:, None], area[None])
    else:
        overlap = inter / (area[:, None] + area[None] - inter)
    order = torch.argsort(scores, descending=True, stable=True).tolist()
    suppressed = (overlap > threshold).cpu()
    alive = torch.ones(len(boxes), dtype=torch.bool)
    keep = []
    for i in order:
        if alive[i]:
            keep.append(i)
            alive &= ~suppressed[i]
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def pyramid_scales(height: int, width: int, min_face: float = MIN_FACE, factor: float = PYRAMID_FACTOR) -> list[float]:
    """The image scales P-Net runs at: 12 / min_face, times `factor` per level, while the short side stays >= 12 px."""
    first = CELL / min_face
    scales, side = [], min(height, width) * first
    while side >= CELL:
        scales.append(first * factor ** len(scales))
        side *= factor
    return scales


def regress(boxes: torch.Tensor, offsets: torch.Tensor, *, inclusive: bool = True) -> torch.Tensor:
    """Boxes [N, 4] moved by regression offsets [N, 4] (fractions of their width and height).

    The original measures the size inclusively (x2 - x1 + 1) after R-Net and O-Net, and as x2 - x1 after P-Net.
    """
    extra = 1.0 if inclusive else 0.0
    size = (boxes[:, 2:4] - boxes[:, 0:2] + extra).repeat(1, 2)
    return boxes + offsets * size


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes [N, 4] made square on their longer side, about the same centre."""
    size = boxes[:, 2:4] - boxes[:, 0:2]
    side = size.max(dim=1, keepdim=True).values
    corner = boxes[:, 0:2] + size / 2 - side / 2
    return torch.cat([corner, corner + side], dim=1)


def cut_windows(images: torch.Tensor, owners: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each box's window of its image, zero outside the image, resampled (area) to size x size.

    Args:
        images: [B, 3, H, W] normalised.
        owners: [N] image of each box.
        boxes: [N, 4] 1-based inclusive corners; truncated towards zero before cutting, as the original does.

    Returns:
        [N, 3, size, size].
    """
    h, w = images.shape[2:]
    corners = boxes.trunc().long().tolist()
    windows = []
    for image, (x1, y1, x2, y2) in zip(owners.tolist(), corners, strict=True):
        window = images.new_zeros(3, max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1))
        # 1-based inclusive -> 0-based slices, clipped to the image.
        sx1, sy1, sx2, sy2 = max(x1 - 1, 0), max(y1 - 1, 0), min(x2, w), min(y2, h)
        if sx2 > sx1 and sy2 > sy1:
            window[:, sy1 - (y1 - 1):sy2 - (y1 - 1), sx1 - (x1 - 1):sx2 - (x1 - 1)] = images[image, :, sy1:sy2, sx1:sx2]
        windows.append(F.interpolate(window[None], size=(size, size), mode="area")[0])
    return torch.stack(windows) if windows else images.new_zeros(0, 3, size, size)


@dataclass(frozen=True)
class MtcnnFaces:
    """The faces found in one image."""

    boxes: torch.Tensor
    """[N, 4] x1, y1, x2, y2 (1-based inclusive, as the original reports them before truncation)."""
    scores: torch.Tensor
    """[N] O-Net face probability."""
    points: torch.Tensor
    """[N, 5, 2] (x, y) in 0-based pixel-centre coordinates: the eye, eye, nose tip, mouth corner, mouth
    corner, each pair in image order (smaller x first for an upright face)."""


class Mtcnn(nn.Module):
    """The three networks and the cascade that joins them (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    @classmethod
    def from_files(cls, pnet: Path, rnet: Path, onet: Path) -> Mtcnn:
        """The networks with their weights, loaded without executing code from the files.

        Raises:
            WeightsError: a file does not load or its tensors do not match the networks.
        """
        model = cls()
        for net, path in ((model.pnet, pnet), (model.rnet, rnet), (model.onet, onet)):
            _load_state(net, path)
        return model.to(memory_format=torch.channels_last).eval()

    @torch.inference_mode()
    def forward(self, images: torch.Tensor, min_face: float = MIN_FACE) -> list[MtcnnFaces]:
        """The faces in each image.

        Args:
            images: uint8 or float [B, H, W, 3] RGB, values 0..255, all of one size.
            min_face: the smallest face looked for, in pixels; only the pyramid depends on it, and a caller
                that knows the face's size saves P-Net's largest (costliest) levels by raising it.
        """
        device = next(self.parameters()).device
        x = (images.to(device).permute(0, 3, 1, 2).float() - 127.5) / 128.0
        boxes, owners = self._propose(x, min_face)
        boxes, owners = self._refine(x, boxes, owners)
        return self._output(x, boxes, owners)

    def _propose(self, x: torch.Tensor, min_face: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: squared, truncated candidate boxes [N, 4] and their image [N]."""
        b, _, h, w = x.shape
        found: list[list[torch.Tensor]] = [[] for _ in range(b)]
        for scale in pyramid_scales(h, w, min_face):
            level = F.interpolate(x, size=(math.ceil(h * scale), math.ceil(w * scale)), mode="area")
            probs, reg = self.pnet(level)
            for i in range(b):
                ys, xs = torch.nonzero(probs[i] >= THRESHOLDS[0], as_tuple=True)
                if len(ys) == 0:
                    continue
                cells = torch.stack([xs, ys], dim=1).to(x.dtype)
                # The cell's 12 px window at this level, in 1-based image pixels.
                corners = torch.cat([torch.trunc((STRIDE * cells + 1) / scale),
                                     torch.trunc((STRIDE * cells + CELL) / scale)], dim=1)
                scores, offsets = probs[i, ys, xs], reg[i, :, ys, xs].T
                keep = nms(corners, scores, NMS_LEVEL)
                found[i].append(torch.cat([corners, scores[:, None], offsets], dim=1)[keep])
        boxes, owners = [], []
        for i, parts in enumerate(found):
            if not parts:
                continue
            rows = torch.cat(parts)
            rows = rows[nms(rows[:, :4], rows[:, 4], NMS_STAGE1)]
            boxes.append(torch.trunc(square(regress(rows[:, :4], rows[:, 5:9], inclusive=False))))
            owners.append(torch.full((len(rows),), i, dtype=torch.long, device=x.device))
        return _joined(boxes, owners, x)

    def _refine(self, x: torch.Tensor, boxes: torch.Tensor, owners: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 2: R-Net keeps, suppresses and corrects the candidates."""
        if len(boxes) == 0:
            return boxes, owners
        probs, offsets = self.rnet(cut_windows(x, owners, boxes, 24))
        keep = probs > THRESHOLDS[1]
        boxes, owners, probs, offsets = boxes[keep], owners[keep], probs[keep], offsets[keep]
        out_boxes, out_owners = [], []
        for i in owners.unique().tolist():
            mine = torch.nonzero(owners == i).flatten()
            mine = mine[nms(boxes[mine], probs[mine], NMS_STAGE2)]
            out_boxes.append(square(regress(boxes[mine], offsets[mine])))
            out_owners.append(owners[mine])
        return _joined(out_boxes, out_owners, x)

    def _output(self, x: torch.Tensor, boxes: torch.Tensor, owners: torch.Tensor) -> list[MtcnnFaces]:
        """Stage 3: O-Net's faces and points, per image."""
        empty = MtcnnFaces(x.new_zeros(0, 4), x.new_zeros(0), x.new_zeros(0, 5, 2))
        results = [empty] * len(x)
        if len(boxes) == 0:
            return results
        boxes = boxes.trunc()
        probs, offsets, raw = self.onet(cut_windows(x, owners, boxes, 48))
        keep = probs > THRESHOLDS[2]
        boxes, owners, probs, offsets, raw = boxes[keep], owners[keep], probs[keep], offsets[keep], raw[keep]
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1
        # Fractions of the window -> 0-based pixel coordinates (the window's first pixel is x1 - 1).
        points = torch.stack([raw[:, :5] * size[:, :1] + boxes[:, :1] - 1,
                              raw[:, 5:] * size[:, 1:] + boxes[:, 1:2] - 1], dim=2)
        boxes = regress(boxes, offsets)
        for i in owners.unique().tolist():
            mine = torch.nonzero(owners == i).flatten()
            mine = mine[nms(boxes[mine], probs[mine], NMS_STAGE3, use_min=True)]
            results[i] = MtcnnFaces(boxes[mine], probs[mine], points[mine])
        return results


def _joined(boxes: list[torch.Tensor], owners: list[torch.Tensor], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not boxes:
        return like.new_zeros(0, 4), torch.zeros(0, dtype=torch.long, device=like.device)
    return torch.cat(boxes), torch.cat(owners)


def _load_state(net: nn.Module, path: Path) -> None:
    state = load_weights_only(path, what=f"MTCNN {path.stem}")
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    if got != expected:
        raise WeightsError(f"{path} is not MTCNN's {path.stem} (its tensors differ from the network's)")
    net.load_state_dict(state)
