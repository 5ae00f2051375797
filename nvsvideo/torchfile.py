"""Reading PyTorch files as data only: `torch.load(weights_only=True)` with errors a user can act on.

`weights_only=True` makes torch refuse anything that would need code to rebuild, so a malicious
checkpoint cannot run on load. Every model and edit file nvsvideo reads goes through here.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from nvsvideo.errors import UnsafeCheckpointError, WeightsError


def load_weights_only(path: Path, *, what: str = "checkpoint", mmap: bool = False) -> Any:
    """Load `path` on the CPU as tensors and plain Python values only.

    Args:
        path: the file.
        what: a short noun for messages ("TriPlaneNet checkpoint", "mapper", ...).
        mmap: memory-map a zip-format file instead of reading it (for files of which little is used).

    Raises:
        WeightsError: missing, corrupt or not a PyTorch file.
        UnsafeCheckpointError: the file holds objects the safe loader refuses (nothing from it was run).
    """
    if not path.is_file():
        raise WeightsError(f"{what} file {path} does not exist; check the path or run `nvsvideo weights`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # Name the offending object, not torch's advice to allow-list it (which would defeat the point).
        found = re.search(r"GLOBAL (\S+)", str(err))
        detail = f" (it asks for '{found.group(1).rstrip('.')}')" if found else ""
        raise UnsafeCheckpointError(
            f"{what} file {path} holds objects that torch's safe loader refuses{detail}; "
            "it was refused and nothing from it was run") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, IndexError) as err:
        raise WeightsError(f"{what} file {path} is not a readable PyTorch file and was refused "
                           f"({_load_problem(path, err)})") from None


def _load_problem(path: Path, err: Exception) -> str:
    """What was wrong with a file torch could not load, in words: the unpickler's own errors on a file that is
    no pickle at all ("KeyError: 101", the first byte read as an opcode) say nothing to a user."""
    with open(path, "rb") as f:
        head = f.read(256)
    if not head:
        return "the file is empty"
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "it is a text file"
    if isinstance(err, (KeyError, IndexError)):
        return "it is neither a zip nor a pickle file"
    return f"{type(err).__name__}: {err}"
