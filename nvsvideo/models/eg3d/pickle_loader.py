"""Read NVIDIA's EG3D training snapshots (`.pkl`) without running anything stored in them.

The official snapshots are `pickle.dump`s of live modules written by `torch_utils.persistence`: every
persistent class is stored as a call to `_reconstruct_persistent_obj(meta)`, where `meta` carries the
*entire source code* of the defining module, which the official loader `exec`s. We never do that.
A restricted unpickler maps a short allow-list of globals to inert stand-ins (records holding the
saved `__dict__`) or to small, checked rebuild functions for tensors and numpy scalars, and refuses
every other global with a message naming it. The flat state dict is then rebuilt by walking the
records in the same order `torch.nn.Module.state_dict()` uses.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvsvideo.errors import UnsafeCheckpointError, WeightsError
from nvsvideo.models.eg3d.types import EG3DCheckpoint

# Module prefixes whose classes only ever become inert records: the object is never constructed
# through its real class, so any name under them is harmless.
_RECORD_MODULE_PREFIXES = ("training.", "torch.nn.modules.")

# The numpy-1 and numpy-2 spellings of numpy's pickling helpers.
_NUMPY_MULTIARRAY = ("numpy.core.multiarray", "numpy._core.multiarray")


@dataclass
class PersistentRecord:
    """What `torch_utils.persistence` stored for one object, minus its source code (never kept, never run)."""

    class_name: str
    version: int
    state: dict[str, Any]


class PickledObject:
    """Inert stand-in for an instance of a non-persistent class (`training.*`, `torch.nn.modules.*`).

    Subclassed per global by the unpickler so `NEWOBJ` can create it; `BUILD` stores the saved
    `__dict__` in `state`. Calling the stand-in with arguments (a `REDUCE`) is refused.
    """

    module: str = ""
    name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        if args or kwargs:
            raise UnsafeCheckpointError(f"the file tries to call '{cls.module}.{cls.name}' with arguments; refusing it")
        return super().__new__(cls)

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise UnsafeCheckpointError(f"unexpected saved state for {self.module}.{self.name}; the file is not an EG3D snapshot")
        self.state = state


class EasyDictRecord(dict):
    """Stand-in for `dnnlib.util.EasyDict`: the data of a dict, none of its code."""


def _reconstruct_persistent(meta: Any) -> PersistentRecord:
    """Replacement for `torch_utils.persistence._reconstruct_persistent_obj`: keep the data, drop the source."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise UnsafeCheckpointError("a persistent object in the file has an unknown layout; refusing to read it")
    return PersistentRecord(class_name=str(meta.get("class_name")), version=int(meta.get("version", 0)), state=meta["state"])


def _load_storage_from_bytes(data: Any) -> torch.storage.TypedStorage | torch.UntypedStorage:
    """Replacement for `torch.storage._load_from_bytes`: the embedded archive goes through torch's safe loader."""
    if not isinstance(data, bytes):
        raise UnsafeCheckpointError("an embedded tensor archive is not a byte string; refusing to read it")
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeCheckpointError(f"an embedded tensor archive was refused by torch's safe loader ({reason})") from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise UnsafeCheckpointError("an embedded tensor archive holds something other than a tensor storage")
    return storage


def _plain_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """`numpy.dtype` restricted to plain numeric types (no object fields, which could hold anything)."""
    if not isinstance(spec, str):
        raise UnsafeCheckpointError(f"refusing numpy dtype {spec!r} from the file")
    dtype = np.dtype(spec, align=align, copy=copy)
    if dtype.hasobject or dtype.fields is not None:
        raise UnsafeCheckpointError(f"refusing numpy dtype {spec!r} from the file")
    return dtype


def _numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    """`numpy...multiarray.scalar` for plain dtypes: a scalar from its raw bytes."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafeCheckpointError("refusing a numpy scalar with an unexpected layout")
    return np.frombuffer(data, dtype=dtype)[0]


class NdarrayMarker:
    """Stands for `numpy.ndarray` in the file; only `_numpy_reconstruct` accepts it, and it cannot be called."""

    def __new__(cls, *args: Any, **kwargs: Any) -> NdarrayMarker:
        raise UnsafeCheckpointError("the file tries to call 'numpy.ndarray' directly; refusing it")


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """`numpy...multiarray._reconstruct` for plain ndarrays; `BUILD` then fills the raw data."""
    if subtype is not NdarrayMarker or not isinstance(dtype, (bytes, str)):
        raise UnsafeCheckpointError("refusing a numpy array with an unexpected layout")
    return np.ndarray.__new__(np.ndarray, shape, _plain_dtype(dtype.decode() if isinstance(dtype, bytes) else dtype))


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The exact (module, name) pairs a snapshot may reference, and what each one becomes."""
    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
        ("dnnlib.util", "EasyDict"): EasyDictRecord,
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("numpy", "dtype"): _plain_dtype,
        ("numpy", "ndarray"): NdarrayMarker,
    }
    for module in _NUMPY_MULTIARRAY:
        allowed[(module, "scalar")] = _numpy_scalar
        allowed[(module, "_reconstruct")] = _numpy_reconstruct
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals and turns module classes into inert records."""

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file)
        self._allowed = _allowed_globals()
        self._record_classes: dict[tuple[str, str], type[PickledObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._allowed:
            return self._allowed[key]
        if module.startswith(_RECORD_MODULE_PREFIXES) and name.isidentifier():
            if key not in self._record_classes:
                self._record_classes[key] = type(name, (PickledObject,), {"module": module, "name": name})
            return self._record_classes[key]
        raise UnsafeCheckpointError(
            f"the file tries to load '{module}.{name}', which is not allowed in a model file; refusing it "
            "(nothing from the file was run)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError("the file uses persistent ids, which EG3D snapshots never do; refusing it")


def _module_state(node: Any, where: str) -> dict[str, Any]:
    """The saved `__dict__` of a module record, checked to look like a `torch.nn.Module`'s."""
    if not isinstance(node, (PersistentRecord, PickledObject)):
        raise WeightsError(f"'{where or 'G_ema'}' in the snapshot is not a network module; the file is not an EG3D snapshot")
    state = node.state
    if not all(isinstance(state.get(k), dict) for k in ("_parameters", "_buffers", "_modules")):
        raise WeightsError(f"'{where or 'G_ema'}' in the snapshot lacks module data; the file is not an EG3D snapshot")
    return state


def flatten_state_dict(node: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rebuild `Module.state_dict()` from records: own parameters, persistent buffers, then children."""
    state = _module_state(node, prefix.rstrip("."))
    skip = state.get("_non_persistent_buffers_set") or set()
    out: dict[str, torch.Tensor] = {}
    named = [*state["_parameters"].items(), *((k, v) for k, v in state["_buffers"].items() if k not in skip)]
    for name, tensor in named:
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"'{prefix}{name}' in the snapshot is not a tensor; the file is not an EG3D snapshot")
        # Called through the class: a rebuilt Parameter's instance dict comes from the file.
        out[prefix + name] = torch.Tensor.detach(tensor)
    for name, child in state["_modules"].items():
        if child is not None:
            out.update(flatten_state_dict(child, f"{prefix}{name}."))
    return out


def to_plain(value: Any) -> Any:
    """Config values as plain JSON-able Python: EasyDicts to dicts, tuples to lists, numpy scalars to numbers."""
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise WeightsError(f"unexpected configuration value of type {type(value).__name__} in the snapshot")


def unpickle_restricted(path: Path) -> Any:
    """Unpickle `path` with `RestrictedUnpickler`; refusals and corruption become `WeightsError`s."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load()
    except WeightsError as err:
        raise type(err)(f"{path}: {err}") from None
    except FileNotFoundError:
        raise WeightsError(f"model file {path} does not exist") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, RuntimeError, IndexError, KeyError) as err:
        raise WeightsError(f"{path} is not a readable EG3D snapshot ({type(err).__name__}: {err})") from None


def read_official_pickle(path: str | os.PathLike[str]) -> EG3DCheckpoint:
    """Read `G_ema` of an official EG3D snapshot: config, live rendering kwargs and the flat state dict.

    Other entries (`G`, `D`, `augment_pipe`, `training_set_kwargs`) are unpickled as inert data and ignored.
    """
    path = Path(path)
    data = unpickle_restricted(path)
    if not isinstance(data, dict) or "G_ema" not in data:
        raise WeightsError(f"{path} has no 'G_ema' entry; it is not an EG3D training snapshot")
    g_ema = data["G_ema"]
    if not isinstance(g_ema, PersistentRecord) or g_ema.class_name != "TriPlaneGenerator":
        found = g_ema.class_name if isinstance(g_ema, PersistentRecord) else type(g_ema).__name__
        raise WeightsError(f"{path}: G_ema is a '{found}', not an EG3D TriPlaneGenerator")
    state = g_ema.state
    if state.get("_init_args"):
        raise WeightsError(f"{path}: G_ema was built with positional arguments, which this loader does not support")
    init_kwargs = to_plain(state.get("_init_kwargs", {}))
    # The training loop copies G's rendering kwargs into G_ema at every step: the live attribute wins.
    rendering_kwargs = to_plain(state.get("rendering_kwargs", init_kwargs.get("rendering_kwargs", {})))
    resolution = state.get("neural_rendering_resolution")
    if not isinstance(resolution, (int, np.integer)) or not rendering_kwargs:
        raise WeightsError(f"{path}: G_ema lacks its rendering settings; the file is not a complete EG3D snapshot")
    return EG3DCheckpoint(
        init_kwargs=init_kwargs,
        rendering_kwargs=rendering_kwargs,
        neural_rendering_resolution=int(resolution),
        state_dict=flatten_state_dict(g_ema),
        source=str(path),
    )
