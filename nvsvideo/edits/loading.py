"""Reading edit files (`.pt`, `.npy`) without ever running code stored in them."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from nvsvideo.errors import WeightsError

# What torch.load / np.load raise on a corrupt, truncated or code-carrying file. Each one means
# the same thing to a user: this file cannot be used as it is.
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, KeyError, EOFError, ValueError, OSError)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise WeightsError(f"{what} file {path} does not exist; check the path or run `nvsvideo weights`")


def read_torch_file(path: Path, *, what: str) -> object:
    """Load a `.pt` file as tensors and plain Python values only, on the CPU.

    `weights_only=True` makes torch refuse anything that would need code to rebuild, so a
    malicious checkpoint cannot run on load. Zip-format files are memory-mapped, so the EG3D
    generator that In-N-Out mapper checkpoints carry beside the mapper is never read into memory.

    Args:
        path: the file.
        what: a short noun for messages ("mapper", "direction", "edit").

    Raises:
        WeightsError: missing file, corrupt file, or one that holds Python objects.
    """
    _require_file(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except _READ_ERRORS as err:
        raise WeightsError(
            f"{what} file {path} was refused: it is not a PyTorch file made only of tensors and plain values "
            f"(it is corrupt, or holds Python objects, which are never unpickled); re-save its tensors with torch.save"
        ) from err


def read_numpy_file(path: Path, *, what: str) -> np.ndarray:
    """Load a `.npy` array without unpickling (object arrays are refused).

    Raises:
        WeightsError: missing, corrupt, or pickled-object file.
    """
    _require_file(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise WeightsError(
            f"{what} file {path} was refused: it is not a plain numeric .npy array (it is corrupt or pickled)"
        ) from err
