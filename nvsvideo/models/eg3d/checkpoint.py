"""EG3D generator checkpoints: one in-memory form, three file formats, one factory.

- `.pkl`: NVIDIA's training snapshots, read by the restricted unpickler in `pickle_loader` (nothing
  stored in the file is ever run).
- `.safetensors`: our safe format, tensors plus the config as JSON in the header metadata.
- `.pt` / `.pth`: only through `torch.load(weights_only=True)`. TriPlaneNet checkpoints (the generator
  under `decoder.`) and TriPlaneNet's converted `ffhq512-128.pth` are recognised.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nvsvideo.errors import WeightsError
from nvsvideo.files import atomic_output
from nvsvideo.models.eg3d.pickle_loader import read_official_pickle
from nvsvideo.models.eg3d.types import EG3DCheckpoint
from nvsvideo.torchfile import load_weights_only

if TYPE_CHECKING:
    from nvsvideo.models.eg3d.generator import TriPlaneGenerator

FORMAT_NAME = "nvsvideo-eg3d"
FORMAT_VERSION = 1

#: Buffers the official training loop adds that inference never reads; files that lack them still load.
TRAINING_ONLY_BUFFERS = frozenset({"dataset_label_std"})

#: TriPlaneNet's own loader forces this neural rendering resolution onto its converted `.pth` generator.
_TRIPLANENET_RENDER_RESOLUTION = 128


def load_eg3d(path: str | os.PathLike[str]) -> EG3DCheckpoint:
    """Load an EG3D generator checkpoint, choosing the reader by the file suffix."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model file {path} does not exist; run `nvsvideo weights` to see where weights are looked for")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        return read_official_pickle(path)
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in (".pt", ".pth"):
        return _from_torch_object(load_weights_only(path, what="EG3D checkpoint"), path)
    raise WeightsError(f"{path} has an unknown suffix; EG3D weights must be .pkl, .safetensors, .pt or .pth")


def save_eg3d(ckpt: EG3DCheckpoint, path: str | os.PathLike[str], *, protect: tuple[Path, ...] = ()) -> None:
    """Write `ckpt` as `.safetensors` (atomically), the config and tensor order in the metadata.

    `protect`: input files the output must not replace (see `atomic_output`).
    """
    from safetensors.torch import save_file

    # Own, contiguous copies: safetensors refuses views and tensors that share memory.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in ckpt.state_dict.items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(ckpt.config()),
        # The header is stored sorted; keep the official order so loads reproduce it.
        "tensor_order": json.dumps(list(tensors)),
    }
    with atomic_output(path, protect=protect) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def build_generator(ckpt: EG3DCheckpoint, device: torch.device | str) -> TriPlaneGenerator:
    """Instantiate our `TriPlaneGenerator` from the checkpoint config and load its weights strictly.

    The only tolerated gap is a missing training-only buffer (`TRAINING_ONLY_BUFFERS`), which
    TriPlaneNet files do not carry; every other missing, extra or mis-shaped tensor is an error.
    """
    from nvsvideo.models.eg3d.generator import TriPlaneGenerator

    kwargs = {**ckpt.init_kwargs, "rendering_kwargs": dict(ckpt.rendering_kwargs)}
    generator = TriPlaneGenerator(**kwargs)
    generator.neural_rendering_resolution = ckpt.neural_rendering_resolution
    try:
        missing, unexpected = generator.load_state_dict(ckpt.state_dict, strict=False)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise WeightsError(f"{ckpt.source} does not fit the generator its config describes ({first})") from None
    missing = [name for name in missing if name not in TRAINING_ONLY_BUFFERS]
    if missing or unexpected:
        raise WeightsError(
            f"{ckpt.source} does not fit the generator its config describes: "
            f"{len(missing)} tensors missing {missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
    return generator.eval().requires_grad_(False).to(device)


def _read_safetensors(path: Path) -> EG3DCheckpoint:
    """Read our `.safetensors` format, restoring the official tensor order."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT_NAME:
                raise WeightsError(f"{path} is a safetensors file but not an nvsvideo EG3D checkpoint (no '{FORMAT_NAME}' metadata)")
            if int(metadata.get("format_version", "0")) > FORMAT_VERSION:
                raise WeightsError(f"{path} was written by a newer nvsvideo (format {metadata['format_version']}); upgrade nvsvideo")
            order = json.loads(metadata["tensor_order"])
            if sorted(order) != sorted(f.keys()):
                raise WeightsError(f"{path}: the tensor list in the metadata does not match the file; it is damaged")
            state_dict = {name: f.get_tensor(name) for name in order}
            config = json.loads(metadata["config"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise WeightsError(f"{path} is not a readable safetensors checkpoint ({type(err).__name__}: {err})") from None
    return EG3DCheckpoint(
        init_kwargs=config["init_kwargs"],
        rendering_kwargs=config["rendering_kwargs"],
        neural_rendering_resolution=int(config["neural_rendering_resolution"]),
        state_dict=state_dict,
        source=str(path),
    )


def _tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _from_torch_object(obj: Any, path: Path) -> EG3DCheckpoint:
    """Recognise the `.pt`/`.pth` layouts that carry an EG3D FFHQ generator."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        # TriPlaneNet (and In-N-Out mapper) checkpoints wrap the frozen generator as `decoder.`.
        prefix = "decoder."
        decoder = {k[len(prefix) :]: v for k, v in obj["state_dict"].items() if k.startswith(prefix)}
        if not _tensor_dict(decoder):
            raise WeightsError(f"{path} holds no EG3D generator (no 'decoder.' tensors); use the EG3D ffhq512-128.pkl instead")
        from nvsvideo.models.eg3d.config import ffhq512_128_checkpoint_config

        config = ffhq512_128_checkpoint_config()
        return EG3DCheckpoint(
            init_kwargs=config["init_kwargs"],
            rendering_kwargs=config["rendering_kwargs"],
            neural_rendering_resolution=int(config["neural_rendering_resolution"]),
            state_dict=decoder,
            source=str(path),
        )
    if isinstance(obj, dict) and _tensor_dict(obj.get("G_ema")) and isinstance(obj.get("init_kwargs"), dict):
        # TriPlaneNet's converted EG3D file: {init_kwargs, G_ema: state dict, latent_avg}.
        init_kwargs = obj["init_kwargs"]
        return EG3DCheckpoint(
            init_kwargs=init_kwargs,
            rendering_kwargs=dict(init_kwargs.get("rendering_kwargs", {})),
            neural_rendering_resolution=int(obj.get("neural_rendering_resolution", _TRIPLANENET_RENDER_RESOLUTION)),
            state_dict=dict(obj["G_ema"]),
            source=str(path),
        )
    raise WeightsError(
        f"{path} is not an EG3D checkpoint this tool knows (expected a TriPlaneNet checkpoint or an EG3D .pkl/.safetensors)"
    )
