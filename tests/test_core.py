"""The CLI's shared contract: version, device resolution, atomic outputs, error → exit code mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nvsvideo import __version__
from nvsvideo.cli import app
from nvsvideo.device import resolve_device
from nvsvideo.errors import DeviceError, UsageError
from nvsvideo.files import atomic_output

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"nvsvideo {__version__}"


def test_help_lists_exit_codes() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Exit codes" in result.stdout


def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the missing-GPU error")
def test_missing_gpu_is_an_error_not_a_fallback() -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda:0")


def test_bad_device_spec() -> None:
    with pytest.raises(UsageError, match="unknown device"):
        resolve_device("gpu")


def test_atomic_output_renames_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with atomic_output(target) as tmp:
        tmp.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert list(tmp_path.iterdir()) == [target]


def test_atomic_output_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_refuses_to_overwrite_input(tmp_path: Path) -> None:
    src = tmp_path / "in.mp4"
    src.write_bytes(b"x")
    with pytest.raises(UsageError, match="refusing to overwrite"), atomic_output(src, protect=(src,)):
        pass
    assert src.read_bytes() == b"x"
