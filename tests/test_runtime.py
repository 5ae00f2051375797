"""Batch sizing (`--batch-size auto|N`), out-of-memory retries, `--precision`, and the `--compile` fallback."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from nvsvideo.cache import StoreMode
from nvsvideo.errors import DeviceError, UsageError
from nvsvideo.pipelines.invert import InvertConfig, invert_batch, model_settings
from nvsvideo.runtime.batching import Batcher, auto_batch_size, is_out_of_memory
from nvsvideo.runtime.compile import compile_hot_path
from nvsvideo.runtime.precision import effective_precision, parse_precision, set_precision, sr_force_fp32
from nvsvideo.validate import parse_batch_size

from tiny_models import tiny_triplanenet

GIB = 2**30
CUDA = torch.device("cuda")  # only a label here: with an injected probe nothing touches a GPU
CPU = torch.device("cpu")


@dataclass
class FakeProbe:
    """A GPU allocator as `Batcher` sees it: the peak of the measured batch and what is free."""

    peak: int
    available: int
    calls: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.calls.append("start")

    def peak_bytes(self) -> int:
        return self.peak

    def available_bytes(self) -> int:
        return self.available

    def release(self) -> None:
        self.calls.append("release")


def oom_above(limit: int, sizes: list[int]):
    """A per-item computation (item -> 10 * item) that runs out of memory on batches above `limit`."""

    def fn(items: list[int]) -> list[int]:
        sizes.append(len(items))
        if len(items) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [10 * i for i in items]

    return fn


def test_parse_batch_size() -> None:
    assert parse_batch_size("auto") == "auto" and parse_batch_size(" AUTO ") == "auto"
    assert parse_batch_size("8") == 8 and parse_batch_size(3) == 3
    for bad in ("0", "-2", "1.5", "big", "", True, 0):
        with pytest.raises(UsageError, match="batch-size"):
            parse_batch_size(bad)


def test_auto_batch_size_arithmetic() -> None:
    # 0.7 x 10 GiB = 7 GiB at 1 GiB per frame: 7 frames.
    assert auto_batch_size(10 * GIB, GIB) == 7
    # 0.5 x 80 GiB = 40 GiB at 1.5 GiB per frame: 26.67 -> 26.
    assert auto_batch_size(80 * GIB, 3 * GIB // 2, safety=0.5) == 26
    # Capped at 32 (139 GiB free on an H200, 1 GiB per frame: 97 would fit).
    assert auto_batch_size(139 * GIB, GIB) == 32
    # Never below one frame, even when the first frame barely fitted.
    assert auto_batch_size(GIB, 4 * GIB) == 1
    assert auto_batch_size(GIB, 0, cap=16) == 16


def test_auto_measures_one_frame_then_sizes_the_rest() -> None:
    probe = FakeProbe(peak=2 * GIB, available=20 * GIB)  # 0.7 x 20 / 2 = 7 frames
    batcher = Batcher("auto", CUDA, probe=probe)
    assert batcher.size is None and batcher.gather == 32
    sizes: list[int] = []
    assert batcher.run(oom_above(100, sizes), list(range(20))) == [10 * i for i in range(20)]
    assert sizes == [1, 7, 7, 5] and batcher.size == 7
    assert probe.calls == ["start"]


def test_auto_is_one_frame_on_the_cpu_and_explicit_sizes_are_kept() -> None:
    sizes: list[int] = []
    assert Batcher("auto", CPU).run(oom_above(100, sizes), list(range(3))) == [0, 10, 20]
    assert sizes == [1, 1, 1]
    explicit = Batcher(5, CUDA, probe=FakeProbe(peak=GIB, available=100 * GIB))
    sizes.clear()
    explicit.run(oom_above(100, sizes), list(range(12)))
    assert sizes == [5, 5, 2] and explicit.size == 5 and explicit.gather == 5


def test_out_of_memory_halves_the_batch_and_keeps_the_smaller_size() -> None:
    probe, warnings, sizes = FakeProbe(peak=0, available=0), [], []
    batcher = Batcher(8, CUDA, probe=probe, warn=warnings.append)
    items = np.arange(8)
    assert batcher.run(oom_above(2, sizes), items) == Batcher(8, CPU).run(oom_above(100, []), items)
    assert sizes == [8, 4, 2, 2, 2, 2] and batcher.size == 2
    assert probe.calls == ["release", "release"] and len(warnings) == 2 and "with 8 frames" in warnings[0]
    sizes.clear()
    batcher.run(oom_above(2, sizes), items)  # the next call starts at the remembered size
    assert sizes == [2, 2, 2, 2]


def test_out_of_memory_with_one_frame_is_a_device_error_and_others_propagate() -> None:
    with pytest.raises(DeviceError, match="one frame per batch"):
        Batcher(4, CUDA, probe=FakeProbe(0, 0)).run(oom_above(0, []), [1, 2, 3])

    def broken(items: list[int]) -> list[int]:
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        Batcher(4, CUDA, probe=FakeProbe(0, 0)).run(broken, [1, 2, 3])
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_split_inversion_equals_a_run_at_the_final_size() -> None:
    """An injected OOM on a batch of 8 retries at 4 then 2: the records are those of an explicit size-2 run
    (the same batch compositions), and within float rounding of an unsplit batch of 8."""
    model = tiny_triplanenet("v1")
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    labels = np.tile(np.r_[np.eye(4).ravel(), [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]], (8, 1))
    labels[:, 11] = 2.7
    indices = list(range(10, 18))
    config = InvertConfig(store=StoreMode.OFFSETS, seed=3)

    def invert(sizes: list[int], limit: int):
        def fn(part: np.ndarray, part_labels: np.ndarray, part_indices: list[int]):
            sizes.append(len(part))
            if len(part) > limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return invert_batch(model, part, part_labels, part_indices, config, CPU)
        return fn

    sizes: list[int] = []
    split = Batcher(8, CUDA, probe=FakeProbe(0, 0)).run(invert(sizes, 2), crops, labels, indices)
    assert sizes == [8, 4, 2, 2, 2, 2]
    at_two = Batcher(2, CPU).run(invert([], 100), crops, labels, indices)
    unsplit = Batcher(8, CPU).run(invert([], 100), crops, labels, indices)
    for a, b, c in zip(split, at_two, unsplit, strict=True):
        assert torch.equal(a.ws, b.ws) and torch.equal(a.offsets, b.offsets)
        torch.testing.assert_close(a.offsets, c.offsets, rtol=0, atol=1e-4)


def test_precision_choices() -> None:
    assert sr_force_fp32("fp32") is True
    assert sr_force_fp32("auto") is False
    with pytest.raises(ValueError, match="precision"):
        sr_force_fp32("fp16")


def test_precision_option_and_what_the_cache_records() -> None:
    assert parse_precision("FP32") == "fp32" and parse_precision("auto") == "auto"
    with pytest.raises(UsageError, match="precision"):
        parse_precision("fp16")
    assert effective_precision(False, CUDA) == "fp16-superresolution"
    assert effective_precision(True, CUDA) == effective_precision(False, CPU) == "fp32"
    model = tiny_triplanenet("v1")
    set_precision(model, "fp32")
    assert model.render_options.force_fp32
    # On the CPU both settings compute in float32, so they share a cache.
    fp32 = model_settings(model, InvertConfig())
    set_precision(model, "auto")
    assert not model.render_options.force_fp32
    assert model_settings(model, InvertConfig()) == fp32 and fp32["precision"] == "fp32"


def test_compile_falls_back_to_eager_once_and_keeps_the_results() -> None:
    model = tiny_triplanenet("v1")
    ws = model.latent_avg.expand(2, 14, -1).clone()
    expected = model.decoder.synthesize_planes(ws)
    warnings: list[str] = []

    def failing_compiler(fn):
        def compiled(*args, **kwargs):
            raise RuntimeError("inductor: no C compiler")
        return compiled

    state = compile_hot_path(model.decoder, CUDA, warnings.append, compiler=failing_compiler)
    torch.testing.assert_close(model.decoder.synthesize_planes(ws), expected, rtol=0, atol=0)
    model.decoder.synthesize_planes(ws)
    assert state.failed and len(warnings) == 1 and "no C compiler" in warnings[0]

    # On the CPU compilation is not attempted: a warning, and the eager modules stay.
    cpu_warnings: list[str] = []
    forward = model.decoder.superresolution.forward
    cpu_state = compile_hot_path(model.decoder, CPU, cpu_warnings.append, compiler=failing_compiler)
    assert cpu_state.failed and "CUDA devices only" in cpu_warnings[0]
    assert model.decoder.superresolution.forward == forward


def test_compile_times_each_new_input_shape() -> None:
    model = tiny_triplanenet("v1")
    calls: list[int] = []

    def counting_compiler(fn):
        def compiled(*args, **kwargs):
            calls.append(args[0].shape[0])
            return fn(*args, **kwargs)
        return compiled

    state = compile_hot_path(model.decoder, CUDA, pytest.fail, compiler=counting_compiler)
    for batch in (2, 2, 1):
        model.decoder.synthesize_planes(model.latent_avg.expand(batch, 14, -1).clone())
    assert calls == [2, 2, 1] and not state.failed
    assert len(state.shapes) == 2 and state.seconds > 0


def test_batch_manifest_values_for_batch_size_and_precision() -> None:
    from nvsvideo.pipelines.batch import BatchJobOptions

    opts = BatchJobOptions.from_mapping({"batch_size": "8", "precision": "fp32", "compile": True})
    assert opts.invert_config().batch_size == 8 and opts.render_config(()).batch_size == 8
    assert opts.render_config(()).render.force_fp32
    defaults = BatchJobOptions.from_mapping({"batch_size": 4})
    assert defaults.invert_config().batch_size == 4 and not defaults.render_config(()).render.force_fp32
    assert BatchJobOptions().invert_config().batch_size == "auto"
    for bad in ({"batch_size": "big"}, {"batch_size": 0}, {"precision": "fp16"}):
        with pytest.raises(UsageError):
            BatchJobOptions.from_mapping(bad).check()
    with pytest.raises(UsageError, match=r"must be int \| str"):
        BatchJobOptions.from_mapping({"batch_size": True})


def test_novel_views_pass_the_precision_to_the_generator() -> None:
    from nvsvideo.render import RenderOptions, render_views

    model = tiny_triplanenet("v1")
    seen: list[bool] = []
    render_planes = model.decoder.render_planes

    def spy(*args, **kwargs):
        seen.append(kwargs["force_fp32"])
        return render_planes(*args, **kwargs)

    model.decoder.render_planes = spy
    ws = model.latent_avg.expand(1, 14, -1).clone()
    planes = model.decoder.synthesize_planes(ws)
    camera = torch.tensor([[1.0, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1,
                            4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]])
    for fp32 in (True, False):
        render_views(model.decoder, planes, ws, camera, [0], RenderOptions(force_fp32=fp32))
    assert seen == [True, False]


def test_cli_refuses_a_bad_batch_size_or_precision_before_inverting(fixtures_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from nvsvideo.cli import app

    from tiny_models import save_tiny_eg3d, save_tiny_triplanenet

    models = ["--triplanenet", str(save_tiny_triplanenet(tmp_path / "tpn.pt", "v1")), "--eg3d",
              str(save_tiny_eg3d(tmp_path / "eg3d.safetensors")), "--device", "cpu", "--out", str(tmp_path / "c")]
    clip = str(fixtures_dir / "single_face.mp4")
    result = CliRunner().invoke(app, ["invert", clip, *models, "--batch-size", "0"])
    assert result.exit_code == 2 and "batch-size" in result.output
    assert not (tmp_path / "c").exists()
    result = CliRunner().invoke(app, ["invert", clip, *models, "--precision", "fp16"])
    assert result.exit_code == 2 and "precision" in result.output
