"""The official camera of a face: Deep3DFaceRecon's network on its 224 recon crop, then EG3D's conversion.

EG3D's and TriPlaneNet's labels come from this chain: five points -> POS fit -> `align_img` recon crop
(224 px, rescale 102: the frame resized bicubically, then cut) -> Deep3DFaceRecon's ResNet-50 -> its angles
and translation -> `3dface2idr` -> radius 2.7 (`--mode orig`). With the official checkpoint the labels equal the
official pipeline's for the same five points; only the pose outputs are used, so the Basel Face Model is not
needed. The five points can come from any landmark backend (frame pixels, y down, the order of
`STANDARD_POINTS_3D`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from nvsvideo.cameras.eg3d import DEEP3D_CAMERA_DISTANCE, FOCAL, label_from_pose, rotation_from_euler
from nvsvideo.errors import UsageError
from nvsvideo.face.crop import CropSquare, align_window, cut_window, fit_five_points
from nvsvideo.models.deep3d import COEFF_SLICES, INPUT_SIZE, ReconNet, load_recon_net
from nvsvideo.weights import get_weight, how_to_get, locate, require_weight, resolve_weights_dir

#: Registry name of the official checkpoint (`epoch_20.pth`).
WEIGHT_NAME = "deep3d-recon"
#: `--pose` choices: `auto` is `deep3d` when its checkpoint is in the weights folder, else `landmarks`.
POSE_CHOICES = ("auto", "landmarks", "deep3d")
#: The recon crop's `align_img` rescale factor: the face model's unit spans 102 crop pixels.
RECON_RESCALE = 102.0


def recon_crop(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The official 224x224 network input of a face, pixel for pixel.

    Args:
        image: uint8 [H, W, 3] RGB frame.
        points: float [5, 2] the five points in frame pixels (y down).

    Returns:
        uint8 [224, 224, 3].
    """
    t, s = fit_five_points(points, image.shape[0])
    return cut_window(image, align_window(t, s, image.shape[:2], INPUT_SIZE, RECON_RESCALE))


def label_from_coeffs(pose: np.ndarray) -> np.ndarray:
    """EG3D label from Deep3D's pose outputs, as `3dface2idr` + `preprocess_face_cameras --mode orig` make it.

    Deep3D's angles (x, y, z) give the head rotation Rz(z) Ry(y) Rx(x); `label_from_pose` is the official
    conversion of (rotation, translation).

    Args:
        pose: [..., 6] angles (radians) then translation (face-model units).

    Returns:
        [..., 25] labels.
    """
    pose = np.asarray(pose, np.float64)
    return label_from_pose(rotation_from_euler(np.degrees(pose[..., :3])), pose[..., 3:])


def translation_in_square(translation: np.ndarray, raw: CropSquare, used: CropSquare) -> np.ndarray:
    """The translation that puts the face where it appears in the crop `used`, given its pose in the crop `raw`.

    Videos smooth the crop square over time, so the crop used differs slightly from the frame's own (official)
    one. A crop's camera has a focal length of FOCAL crop widths; moving the crop by d frame pixels moves the
    face by -d in it, i.e. the face by -d (10 - t_z) / (FOCAL side) model units sideways, and a crop `used.side /
    raw.side` times larger makes the face that much farther away. The rotation is kept.

    Args:
        translation: [3] Deep3D translation (y up) for the crop `raw`.
        raw: the crop square the pose was estimated in (the frame's own).
        used: the crop square actually used.

    Returns:
        [3] translation for `used`.
    """
    depth = DEEP3D_CAMERA_DISTANCE - translation[2]
    per_pixel = depth / (FOCAL * raw.side)
    return np.array([
        translation[0] - (used.cx - raw.cx) * per_pixel,
        translation[1] + (used.cy - raw.cy) * per_pixel,  # frame y points down, the model's y up
        DEEP3D_CAMERA_DISTANCE - depth * used.side / raw.side,
    ])


class Deep3DCameras:
    """The reconstruction network on its device, turning batches of recon crops into head poses."""

    name = "deep3d"

    def __init__(self, net: ReconNet, device: torch.device | str, source: str = "") -> None:
        # Channels-last weights meet the crops' own (NHWC) layout: 1.4x the frames per CPU second with oneDNN.
        self.net = net.to(device, memory_format=torch.channels_last)
        self.device = torch.device(device)
        self.source = source
        """The checkpoint the weights came from (for messages)."""

    def __repr__(self) -> str:
        return f"Deep3DCameras({self.source!r}, device={self.device})"

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Head poses of a batch of recon crops.

        Args:
            crops: uint8 [B, 224, 224, 3] from `recon_crop`.

        Returns:
            float64 [B, 6]: angles (radians, about x, y, z) then translation (face-model units, y up).
        """
        assert crops.ndim == 4 and crops.shape[1:] == (INPUT_SIZE, INPUT_SIZE, 3) and crops.dtype == np.uint8, crops.shape
        # Permuting NHWC pixels gives an NCHW tensor in channels-last memory: no copy before the first conv.
        x = torch.from_numpy(np.array(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with torch.inference_mode():
            coeffs = self.net(x)
        pose = torch.cat([coeffs[:, COEFF_SLICES["angle"]], coeffs[:, COEFF_SLICES["trans"]]], dim=1)
        return pose.double().cpu().numpy()


def load_pose_model(pose: str, weights_dir: Path | None, device: torch.device | str) -> Deep3DCameras | None:
    """The Deep3D network `--pose` asks for, or None when cameras come from the landmarks.

    Args:
        pose: one of `POSE_CHOICES`.
        weights_dir: `--weights` (None: $NVSVIDEO_HOME, else ~/.cache/nvsvideo).
        device: where the network runs.

    Raises:
        UsageError: an unknown choice.
        WeightsError: `deep3d` without its checkpoint; a present checkpoint that is corrupt or of another network.
    """
    if pose not in POSE_CHOICES:
        raise UsageError(f"unknown --pose '{pose}': choose one of {', '.join(POSE_CHOICES)}")
    folder = resolve_weights_dir(weights_dir, os.environ)
    entry = get_weight(WEIGHT_NAME)
    path = locate(entry, folder, os.environ)
    if pose == "landmarks" or (pose == "auto" and path is None):
        return None
    path = require_weight(WEIGHT_NAME, folder) if path is None else path
    net = load_recon_net(path, device, hint=how_to_get(entry, folder, os.environ))
    return Deep3DCameras(net, device, str(path))
