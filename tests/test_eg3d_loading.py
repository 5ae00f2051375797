"""Loading EG3D checkpoints safely: the restricted unpickler, our safetensors format, `.pt` files.

Persistence-format pickles are crafted here with stand-in classes registered under the official module
names for the duration of `pickle.dumps` only, so the loader sees exactly the globals NVIDIA's files
use while the official code is never needed. Hostile pickles try to run code in every way the format
allows; each must be refused and must leave no trace (a marker file that any execution would create).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.errors import UnsafeCheckpointError, WeightsError
from nvsvideo.models.eg3d.checkpoint import (
    EG3DCheckpoint,
    build_generator,
    load_eg3d,
    save_eg3d,
)
from nvsvideo.models.eg3d.pickle_loader import read_official_pickle
from nvsvideo.weights.verify import eg3d_manifest

PLACEHOLDER_SRC = "# embedded source omitted\n"


# --- stand-ins for the official classes, registered only while pickling -------------------------------


def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called: only its name is pickled
    raise AssertionError("the stand-in reconstructor must never run")


class _Persistent:
    """Pickles like a `torch_utils.persistence` object: REDUCE of the reconstructor on a meta dict."""

    def __init__(self, class_name: str, state: dict, module_src: str = PLACEHOLDER_SRC) -> None:
        self.meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name, "state": state}

    def __reduce__(self):
        return (_reconstruct_persistent_obj, (self.meta,))


class EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict."""


class OSGDecoder:
    """Stand-in for the non-persistent training.triplane.OSGDecoder (NEWOBJ + BUILD of its __dict__)."""


class Sequential:
    """Stand-in for torch.nn.modules.container.Sequential."""


def _module_state(params=(), buffers=(), modules=(), non_persistent=(), **attrs) -> dict:
    state = {
        "training": False,
        "_parameters": OrderedDict(params),
        "_buffers": OrderedDict(buffers),
        "_non_persistent_buffers_set": set(non_persistent),
        "_modules": OrderedDict(modules),
        "_forward_hooks": OrderedDict(),
    }
    state.update(attrs)
    return state


def _as(obj, cls):
    instance = cls.__new__(cls)
    instance.__dict__.update(obj)
    return instance


def _official_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register the stand-ins under the official module paths (undone after pickling)."""
    spots = {
        "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
        "dnnlib.util": {"EasyDict": EasyDict},
        "training.triplane": {"OSGDecoder": OSGDecoder},
        "torch.nn.modules.container": {"Sequential": Sequential},
    }
    for module_name, members in spots.items():
        parent = module_name.split(".")[0]
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
        module = sys.modules[module_name] if module_name in sys.modules else types.ModuleType(module_name)
        monkeypatch.setitem(sys.modules, module_name, module)
        for name, obj in members.items():
            # Pickle stores classes and functions by reference (`__module__` + name); the names already match.
            monkeypatch.setattr(module, name, obj, raising=False)
            monkeypatch.setattr(obj, "__module__", module_name)


def _snapshot(module_src: str = PLACEHOLDER_SRC, extra_state: dict | None = None) -> dict:
    """A small G_ema in the persistence format, plus the G/D/augment_pipe entries a loader must ignore."""
    gen = torch.Generator().manual_seed(0)
    fc_weight = torch.nn.Parameter(torch.randn(4, 3, generator=gen), requires_grad=False)
    fc_bias = torch.nn.Parameter(torch.randn(4, generator=gen), requires_grad=False)
    w_avg = torch.randn(3, generator=gen)
    net_weight = torch.nn.Parameter(torch.randn(2, 4, generator=gen), requires_grad=False)
    fc = _Persistent("FullyConnectedLayer", _module_state(
        params=[("weight", fc_weight), ("bias", fc_bias)], weight_gain=np.float64(0.5)), module_src)
    mapping = _Persistent("MappingNetwork", _module_state(
        buffers=[("w_avg", w_avg), ("scratch", torch.zeros(2))], modules=[("fc0", fc)], non_persistent=["scratch"]), module_src)
    net = _as(_module_state(modules=[("0", _as(_module_state(params=[("weight", net_weight), ("bias", None)]), Sequential))]), Sequential)
    decoder = _as(_module_state(modules=[("net", net)], hidden_dim=64), OSGDecoder)
    rendering = {"depth_resolution": 24, "box_warp": 1, "avg_camera_pivot": [0, 0, 0.2], "c_scale": 1.0}
    state = _module_state(
        buffers=[("dataset_label_std", torch.full((25,), 0.25))],
        modules=[("backbone", mapping), ("decoder", decoder)],
        _init_args=(),
        _init_kwargs=EasyDict(z_dim=512, mapping_kwargs=EasyDict(num_layers=2), rendering_kwargs=dict(rendering, depth_resolution=48)),
        rendering_kwargs=EasyDict(rendering),
        neural_rendering_resolution=64,
        **(extra_state or {}),
    )
    g_ema = _Persistent("TriPlaneGenerator", state, module_src)
    return {"training_set_kwargs": {"resolution": 512}, "G": g_ema, "D": None, "G_ema": g_ema, "augment_pipe": None}


def _write_snapshot(path: Path, monkeypatch: pytest.MonkeyPatch, **kwargs) -> Path:
    with monkeypatch.context() as patch:
        _official_names(patch)
        path.write_bytes(pickle.dumps(_snapshot(**kwargs), protocol=4))
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """A file that any code executed from a hostile pickle would create."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "code from a model file was executed"


# --- crafted persistence pickles --------------------------------------------------------------------


def test_crafted_snapshot_rebuilds_state_dict_in_module_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_snapshot(tmp_path / "g.pkl", monkeypatch)
    ckpt = read_official_pickle(path)
    # Own parameters, persistent buffers, then children in registration order; None and non-persistent skipped.
    assert list(ckpt.state_dict) == [
        "dataset_label_std",
        "backbone.w_avg",
        "backbone.fc0.weight",
        "backbone.fc0.bias",
        "decoder.net.0.weight",
    ]
    assert all(type(t) is torch.Tensor for t in ckpt.state_dict.values())
    assert ckpt.neural_rendering_resolution == 64
    # The live rendering kwargs win over the constructor's copy.
    assert ckpt.rendering_kwargs == {"depth_resolution": 24, "box_warp": 1, "avg_camera_pivot": [0, 0, 0.2], "c_scale": 1.0}
    assert ckpt.init_kwargs["mapping_kwargs"] == {"num_layers": 2}
    assert type(ckpt.init_kwargs["mapping_kwargs"]) is dict


def test_crafted_snapshot_tensors_are_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_snapshot(tmp_path / "g.pkl", monkeypatch)
    expected = _snapshot()["G_ema"].meta["state"]
    ckpt = read_official_pickle(path)
    assert torch.equal(ckpt.state_dict["dataset_label_std"], expected["_buffers"]["dataset_label_std"])
    fc = expected["_modules"]["backbone"].meta["state"]["_modules"]["fc0"].meta["state"]
    assert torch.equal(ckpt.state_dict["backbone.fc0.weight"], fc["_parameters"]["weight"])


def test_module_src_is_never_executed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: Path) -> None:
    src = f"open({str(marker)!r}, 'w').write('ran')\n"
    path = _write_snapshot(tmp_path / "g.pkl", monkeypatch, module_src=src)
    ckpt = read_official_pickle(path)
    assert len(ckpt.state_dict) == 5


def _load_in_fresh_process(path: Path) -> None:
    """Load `path` in a new interpreter; fail if any official module got imported or numpy.core was touched."""
    code = (
        "import sys; from nvsvideo.models.eg3d.checkpoint import load_eg3d; load_eg3d(sys.argv[1]); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('training', 'dnnlib', 'torch_utils')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code, str(path)], check=True, timeout=120)


def test_loading_imports_no_official_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _load_in_fresh_process(_write_snapshot(tmp_path / "g.pkl", monkeypatch))


def test_snapshot_without_g_ema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"G": None}))
    with pytest.raises(WeightsError, match="G_ema"):
        load_eg3d(path)


def test_truncated_snapshot_is_a_weights_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write_snapshot(tmp_path / "g.pkl", monkeypatch)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(WeightsError, match="not a readable"):
        load_eg3d(path)


# --- hostile pickles ----------------------------------------------------------------------------------


class _Call:
    """Pickles as REDUCE of `func` on `args`: what an attacker writes."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol-0 pickle calling module.name(arg), for globals that cannot be pickled by reference here."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n(V" + arg.encode() + b"\ntR."


def _touch(marker: Path) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize(
    "payload",
    [
        lambda m: pickle.dumps({"G_ema": _Call(os.system, _touch(m))}),
        lambda m: _global_call("os", "system", _touch(m)),
        lambda m: _global_call("posix", "system", _touch(m)),
        lambda m: pickle.dumps(_Call(eval, f"open({str(m)!r}, 'w')")),
        lambda m: pickle.dumps(_Call(exec, f"open({str(m)!r}, 'w')")),
        lambda m: pickle.dumps(_Call(subprocess.Popen, ["touch", str(m)])),
        lambda m: _global_call("builtins", "__import__", "os"),
        # Allowed modules, disallowed attributes.
        lambda m: _global_call("torch_utils.persistence", "_src_to_module", f"open({str(m)!r}, 'w')"),
        lambda m: _global_call("torch", "load", str(m)),
        lambda m: _global_call("torch.storage", "_load_from_file", str(m)),
        lambda m: _global_call("collections", "namedtuple", "x"),
        lambda m: _global_call("numpy", "load", str(m)),
        lambda m: _global_call("dnnlib.util", "open_url", str(m)),
    ],
    ids=["os.system", "os.system-p0", "posix.system", "eval", "exec", "subprocess.Popen", "__import__",
         "persistence._src_to_module", "torch.load", "storage._load_from_file", "namedtuple", "numpy.load",
         "dnnlib.open_url"],
)
def test_hostile_globals_are_refused(tmp_path: Path, marker: Path, payload) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload(marker))
    with pytest.raises(UnsafeCheckpointError, match="tries to load '") as err:
        load_eg3d(path)
    assert "nothing from the file was run" in str(err.value)


def test_global_nested_in_easydict_in_persistent_record_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, marker: Path
) -> None:
    hostile = {"rendering_kwargs": EasyDict(deep={"deeper": [_Call(os.system, _touch(marker))]})}
    path = _write_snapshot(tmp_path / "g.pkl", monkeypatch, extra_state={"extra": hostile})
    with pytest.raises(UnsafeCheckpointError, match=r"'posix\.system'|'os\.system'"):
        load_eg3d(path)


def test_global_hidden_in_ignored_entry_is_still_refused(tmp_path: Path, marker: Path) -> None:
    # D is ignored by the loader, but unpickling it must not run anything either.
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"D": _Call(os.system, _touch(marker)), "G_ema": None}))
    with pytest.raises(UnsafeCheckpointError):
        load_eg3d(path)


def test_record_class_called_with_arguments_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.pkl"
    path.write_bytes(_global_call("training.triplane", "TriPlaneGenerator", "x"))
    with pytest.raises(UnsafeCheckpointError, match="with arguments"):
        load_eg3d(path)


class _EvilStorageBytes:
    """REDUCE of torch.storage._load_from_bytes on an attacker-made archive."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self):
        return (torch.storage._load_from_bytes, (self.data,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the raw archive's protocol
@pytest.mark.parametrize("archive", ["zip", "raw"])
def test_hostile_embedded_tensor_archive_is_refused(tmp_path: Path, marker: Path, archive: str) -> None:
    if archive == "zip":
        inner = tmp_path / "inner.pt"
        torch.save(_Call(os.system, _touch(marker)), inner)
        data = inner.read_bytes()
    else:
        data = pickle.dumps(_Call(os.system, _touch(marker)))
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _EvilStorageBytes(data)}))
    with pytest.raises(UnsafeCheckpointError, match="safe loader"):
        load_eg3d(path)


def test_embedded_archive_must_hold_a_storage(tmp_path: Path) -> None:
    inner = tmp_path / "inner.pt"
    torch.save({"not": "a storage"}, inner)
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _EvilStorageBytes(inner.read_bytes())}))
    with pytest.raises(UnsafeCheckpointError, match="other than a tensor storage"):
        load_eg3d(path)


def test_object_dtype_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.pkl"
    path.write_bytes(pickle.dumps({"G_ema": np.array([print], dtype=object)}))
    with pytest.raises(UnsafeCheckpointError, match="dtype"):
        load_eg3d(path)


def test_plain_numpy_data_loads_but_ndarray_cannot_be_called(tmp_path: Path) -> None:
    from nvsvideo.models.eg3d.pickle_loader import unpickle_restricted

    path = tmp_path / "np.pkl"
    path.write_bytes(pickle.dumps({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(0.5)}))
    data = unpickle_restricted(path)
    assert np.array_equal(data["a"], np.arange(6, dtype=np.float32).reshape(2, 3)) and data["s"] == 0.5
    path.write_bytes(_global_call("numpy", "ndarray", "3"))
    with pytest.raises(UnsafeCheckpointError, match="call 'numpy.ndarray'"):
        unpickle_restricted(path)


def test_persistent_ids_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.pkl"
    path.write_bytes(b"\x80\x04X\x01\x00\x00\x00xQ.")  # PERSID-style BINPERSID of 'x'
    with pytest.raises(UnsafeCheckpointError, match="persistent ids"):
        load_eg3d(path)


def test_hostile_pt_file_is_refused(tmp_path: Path, marker: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _Call(os.system, _touch(marker))}, path)
    with pytest.raises(UnsafeCheckpointError, match="safe loader refuses"):
        load_eg3d(path)


# --- the official-format fixture --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_pkl(interop_dir: Path) -> Path:
    path = interop_dir / "parity" / "eg3d_dev" / "tiny_eg3d.pkl"
    if not path.is_file():
        pytest.skip("EG3D parity fixture not available")
    return path


@pytest.fixture(scope="module")
def fixture_ckpt(fixture_pkl: Path) -> EG3DCheckpoint:
    return load_eg3d(fixture_pkl)


def _manifest_names(interop_dir: Path) -> list[str]:
    lines = (interop_dir / "eg3d_ffhq512-128_state_dict.tsv").read_text().splitlines()
    return [line.split("\t")[0] for line in lines if line and not line.startswith("#")]


def test_fixture_gives_177_tensors_in_official_order(fixture_ckpt: EG3DCheckpoint, interop_dir: Path) -> None:
    names = _manifest_names(interop_dir)
    assert len(names) == 177
    assert list(fixture_ckpt.state_dict) == names
    assert list(fixture_ckpt.state_dict) == [row.name for row in eg3d_manifest()]
    # Tiny backbone (channel_max 32), full-size SR and decoder.
    assert fixture_ckpt.state_dict["backbone.synthesis.b4.const"].shape == (32, 4, 4)
    assert fixture_ckpt.state_dict["superresolution.block0.conv0.weight"].shape == (256, 32, 3, 3)


def test_fixture_loads_without_official_code(fixture_pkl: Path) -> None:
    # The fixture spells numpy's scalar helper the numpy-1 way (numpy.core), deprecated under numpy 2.
    _load_in_fresh_process(fixture_pkl)


def test_fixture_config(fixture_ckpt: EG3DCheckpoint) -> None:
    assert fixture_ckpt.neural_rendering_resolution == 64
    assert fixture_ckpt.init_kwargs["channel_base"] == 4096
    assert fixture_ckpt.init_kwargs["channel_max"] == 32
    assert fixture_ckpt.rendering_kwargs["depth_resolution"] == 24
    assert fixture_ckpt.rendering_kwargs["superresolution_module"] == "training.superresolution.SuperresolutionHybrid8XDC"


def test_safetensors_round_trip_is_exact(fixture_ckpt: EG3DCheckpoint, tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    save_eg3d(fixture_ckpt, path)
    back = load_eg3d(path)
    assert list(back.state_dict) == list(fixture_ckpt.state_dict)
    for name, tensor in fixture_ckpt.state_dict.items():
        assert back.state_dict[name].dtype == tensor.dtype
        assert torch.equal(back.state_dict[name], tensor), name
    assert back.config() == fixture_ckpt.config()
    assert [p.name for p in tmp_path.iterdir()] == ["g.safetensors"]


def test_foreign_safetensors_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="not an nvsvideo EG3D checkpoint"):
        load_eg3d(path)


def test_build_generator_loads_fixture_strictly(fixture_ckpt: EG3DCheckpoint) -> None:
    generator = build_generator(fixture_ckpt, "cpu")
    state = generator.state_dict()
    assert list(state) == list(fixture_ckpt.state_dict)
    assert all(torch.equal(state[k], v) for k, v in fixture_ckpt.state_dict.items())
    assert generator.neural_rendering_resolution == 64
    assert generator.rendering_kwargs["depth_resolution"] == 24
    assert not generator.training


def test_build_generator_rejects_a_wrong_state_dict(fixture_ckpt: EG3DCheckpoint) -> None:
    broken = dict(fixture_ckpt.state_dict)
    del broken["backbone.mapping.fc0.weight"]
    with pytest.raises(WeightsError, match="1 tensors missing"):
        build_generator(EG3DCheckpoint(**{**vars(fixture_ckpt), "state_dict": broken}), "cpu")
    wrong = dict(fixture_ckpt.state_dict, **{"decoder.net.0.bias": torch.zeros(3)})
    with pytest.raises(WeightsError, match="does not fit"):
        build_generator(EG3DCheckpoint(**{**vars(fixture_ckpt), "state_dict": wrong}), "cpu")


def test_triplanenet_checkpoint_yields_its_generator(fixture_ckpt: EG3DCheckpoint, tmp_path: Path) -> None:
    # TriPlaneNet stores the frozen generator under `decoder.`, without the training-only label buffer.
    decoder = {f"decoder.{k}": v for k, v in fixture_ckpt.state_dict.items() if k != "dataset_label_std"}
    path = tmp_path / "triplanenet.pth"
    torch.save({"state_dict": {"psp_encoder.w": torch.zeros(2), **decoder}, "opts": {"n_styles": 14}, "step": 3}, path)
    ckpt = load_eg3d(path)
    assert list(ckpt.state_dict) == list(fixture_ckpt.state_dict)[1:]
    assert ckpt.neural_rendering_resolution == 128
    assert ckpt.init_kwargs["channel_base"] == 32768  # the FFHQ preset, since the file carries no config
    # A tiny generator, but with the config a test can build: the missing label buffer is tolerated.
    built = build_generator(EG3DCheckpoint(**{**vars(fixture_ckpt), "state_dict": ckpt.state_dict}), "cpu")
    assert torch.equal(built.state_dict()["backbone.mapping.w_avg"], fixture_ckpt.state_dict["backbone.mapping.w_avg"])


def test_triplanenet_converted_eg3d_pth_is_read(fixture_ckpt: EG3DCheckpoint, tmp_path: Path) -> None:
    # TriPlaneNet's `ffhq512-128.pth`: {init_kwargs, G_ema: state dict, latent_avg}; its loader renders at 128.
    path = tmp_path / "ffhq512-128.pth"
    torch.save({"init_kwargs": fixture_ckpt.init_kwargs, "G_ema": fixture_ckpt.state_dict, "latent_avg": torch.zeros(512)}, path)
    ckpt = load_eg3d(path)
    assert ckpt.neural_rendering_resolution == 128
    assert ckpt.rendering_kwargs == fixture_ckpt.init_kwargs["rendering_kwargs"]
    assert list(ckpt.state_dict) == list(fixture_ckpt.state_dict)


def test_pt_without_generator_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "enc.pt"
    torch.save({"state_dict": {"psp_encoder.w": torch.zeros(2)}}, path)
    with pytest.raises(WeightsError, match="no 'decoder.' tensors"):
        load_eg3d(path)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_eg3d(tmp_path / "nope.pkl")
    (tmp_path / "g.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown suffix"):
        load_eg3d(tmp_path / "g.onnx")


# --- CLI convert ------------------------------------------------------------------------------------


def test_cli_convert_writes_safetensors(fixture_pkl: Path, fixture_ckpt: EG3DCheckpoint, tmp_path: Path) -> None:
    out = tmp_path / "tiny.safetensors"
    result = CliRunner().invoke(app, ["weights", "convert", str(fixture_pkl), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert '"tensors": 177' in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.safetensors"]
    back = load_eg3d(out)
    assert all(torch.equal(back.state_dict[k], v) for k, v in fixture_ckpt.state_dict.items())


def test_cli_convert_refuses_hostile_input(tmp_path: Path, marker: Path) -> None:
    src = tmp_path / "evil.pkl"
    src.write_bytes(pickle.dumps({"G_ema": _Call(os.system, _touch(marker))}))
    out = tmp_path / "out.safetensors"
    result = CliRunner().invoke(app, ["weights", "convert", str(src), "-o", str(out)])
    assert result.exit_code == 5
    # One message (rich may wrap it), naming the refused global, and no traceback.
    assert result.output.startswith("error:") and result.output.count("error:") == 1
    assert "posix.system" in " ".join(result.output.split()) and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pkl"]


def test_cli_convert_refuses_to_overwrite_its_input(fixture_ckpt: EG3DCheckpoint, tmp_path: Path) -> None:
    path = tmp_path / "g.safetensors"
    save_eg3d(fixture_ckpt, path)
    before = path.read_bytes()
    result = CliRunner().invoke(app, ["weights", "convert", str(path), "-o", str(path)])
    assert result.exit_code == 2
    assert path.read_bytes() == before


def test_the_checkpoint_readers_import_one_way() -> None:
    """The pickle reader and the file factory share `types`; the reader never imports the factory."""
    code = ("import sys; import nvsvideo.models.eg3d.pickle_loader; "
            "assert 'nvsvideo.models.eg3d.checkpoint' not in sys.modules, 'pickle_loader imports checkpoint'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    from nvsvideo.models.eg3d import checkpoint, pickle_loader, types

    assert checkpoint.EG3DCheckpoint is pickle_loader.EG3DCheckpoint is types.EG3DCheckpoint
