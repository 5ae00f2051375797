"""`nvsvideo sample`: a random identity rendered along a camera path, end to end on a tiny generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.pipelines.sample import SampleConfig, identity_latent, sample_labels
from nvsvideo.video import VideoReader, probe

from tiny_models import TINY_NEURAL_RES, save_tiny_eg3d

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_eg3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_eg3d(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


def test_identity_latent_matches_numpy_convention() -> None:
    z = identity_latent(7, 512)
    assert z.shape == (1, 512)
    np.testing.assert_allclose(z[0].numpy(), np.random.RandomState(7).randn(512).astype(np.float32))


def test_sample_labels_offsets_and_refusals() -> None:
    base = sample_labels(SampleConfig(camera_path="fixed:yaw=0,pitch=0", frames=3))
    shifted = sample_labels(SampleConfig(camera_path="fixed:yaw=0,pitch=0", yaw=20.0, frames=3))
    assert base.shape == shifted.shape == (3, 25)
    # A positive yaw moves the camera towards world +x (cam2world translation x is entry 3).
    assert base[0, 3] == pytest.approx(0.0, abs=1e-9) and shifted[0, 3] > 0.5
    from nvsvideo.errors import UsageError

    with pytest.raises(UsageError, match="follows an input video"):
        sample_labels(SampleConfig(camera_path="follow", frames=3))


def test_sample_cli_writes_video_depth_and_frames(tiny_eg3d: Path, tmp_path: Path) -> None:
    out = tmp_path / "orbit.mp4"
    depth = tmp_path / "depth.mp4"
    frames_dir = tmp_path / "frames"
    result = runner.invoke(app, ["sample", "-o", str(out), "--seed", "3", "--frames", "3", "--fps", "30000/1001",
                                 "--eg3d", str(tiny_eg3d), "--depth", str(depth), "--frames-dir", str(frames_dir),
                                 "--device", "cpu", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames"] == 3
    info = probe(out)
    assert (info.width, info.height, info.frame_count) == (128, 128, 3)  # the tiny model renders 128 px
    assert str(info.fps) == "30000/1001"
    assert probe(depth).width == TINY_NEURAL_RES
    assert sorted(p.name for p in frames_dir.iterdir()) == ["000000.png", "000001.png", "000002.png"]
    # The orbit moves the camera, so consecutive frames differ.
    frames = np.concatenate([b.frames for b in VideoReader(out)])
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).mean() > 0.5


def test_sample_is_reproducible(tiny_eg3d: Path, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        frames_dir = tmp_path / name
        result = runner.invoke(app, ["sample", "--seed", "1", "--frames", "2", "--eg3d", str(tiny_eg3d),
                                     "-o", str(tmp_path / f"{name}.mp4"), "--frames-dir", str(frames_dir),
                                     "--device", "cpu", "--quiet"])
        assert result.exit_code == 0, result.output
        outs.append([(frames_dir / f).read_bytes() for f in ("000000.png", "000001.png")])
    assert outs[0] == outs[1]


def test_sample_without_weights_says_where_to_put_them(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sample", "-o", str(tmp_path / "x.mp4"), "--weights", str(tmp_path / "empty"),
                                 "--device", "cpu"])
    assert result.exit_code == 5
    assert "ffhqrebalanced512-128" in result.output
    assert not (tmp_path / "x.mp4").exists()


def test_sample_missing_gpu_is_an_error(tiny_eg3d: Path, tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = runner.invoke(app, ["sample", "-o", str(tmp_path / "x.mp4"), "--eg3d", str(tiny_eg3d),
                                 "--device", "cuda"])
    assert result.exit_code == 6
