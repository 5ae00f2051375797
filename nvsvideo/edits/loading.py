"""Reading edit files (`.pt`, `.npy`) without ever running code stored in them."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from nvsvideo.errors import WeightsError
from nvsvideo.torchfile import load_weights_only

# What torch.load / np.load raise on a corrupt, truncated or code-carrying file. Each one means
# the same thing to a user: this file cannot be used as it is.
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, KeyError, EOFError, ValueError, OSError)


def _require_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise WeightsError(f"{what} file {path} does not exist; check the path or run `nvsvideo weights`")


def read_torch_file(path: Path, *, what: str) -> object:
    """Load a `.pt` edit file safely (see `nvsvideo.torchfile`).

    Zip-format files are memory-mapped, so the EG3D generator that In-N-Out mapper checkpoints carry
    beside the mapper is never read into memory.
    """
    return load_weights_only(path, what=what, mmap=zipfile.is_zipfile(path))


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
