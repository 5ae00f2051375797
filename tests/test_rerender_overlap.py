"""`rerender` with overlapped stages on the real clip and tiny models: outputs equal to the sequential pass,
invert + render in one pass equal to invert then render, every stage's error surfacing without a hang."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.errors import InputError
from nvsvideo.pipelines import rerender as rerender_module
from nvsvideo.pipelines.stream import SEQUENTIAL_ENV
from nvsvideo.video import VideoReader

from tiny_models import tiny_clip_setup

runner = CliRunner()
FRAMES = 8
BLANK = range(3, 5)


@pytest.fixture(scope="module")
def setup(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_clip_setup(fixtures_dir / "single_face.mp4", tmp_path_factory.mktemp("overlap"), blank=BLANK,
                           frames=FRAMES)


def rerender_args(setup: dict[str, Path], out: Path, cache: Path) -> list[str]:
    # compare + keep-ood: the reconstruction and the mask's smoothing over time (reset at faceless frames).
    return ["rerender", str(setup["clip"]), "-o", str(out), "--cache", str(cache), "--output", "compare",
            "--size", "128", "--keep-ood", "--crf", "0", "--yaw-path", "follow:yaw=3", "--model", "v2",
            "--triplanenet", str(setup["v2"]), "--eg3d", str(setup["eg3d"]), "--landmarks", "dlib",
            "--max-gap", "1", "--device", "cpu", "--batch-size", "2", "--json", "--quiet"]


def invoke(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def frames_of(path: Path) -> np.ndarray:
    return np.concatenate([b.frames for b in VideoReader(path)])


def chunk_bytes(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (cache / "inversion" / "chunks").glob("*.safetensors")}


@pytest.fixture(scope="module")
def first_run(setup: dict[str, Path]) -> dict:
    """Invert and render in one overlapped pass, from an empty cache."""
    return invoke(rerender_args(setup, setup["root"] / "overlapped.mp4", setup["root"] / "a.nvs"))


def test_one_pass_inverts_stores_and_renders(setup: dict[str, Path], first_run: dict) -> None:
    faces = FRAMES - len(BLANK)
    assert first_run["inverted"] == faces and first_run["cache_hits"] == 0 and first_run["rendered"] == faces
    overlap = first_run["overlap"]["render"]
    assert overlap["mode"] == "overlapped" and set(overlap) >= {"decode", "render", "encode", "wall"}
    assert {"align", "invert", "render"} <= set(first_run["seconds"])
    # A render-only run from the cache this pass filled writes exactly the same frames.
    again = invoke(rerender_args(setup, setup["root"] / "again.mp4", setup["root"] / "a.nvs"))
    assert again["inverted"] == 0 and again["cache_hits"] == faces
    np.testing.assert_array_equal(frames_of(setup["root"] / "again.mp4"), frames_of(setup["root"] / "overlapped.mp4"))


def test_overlapped_equals_sequential(setup: dict[str, Path], first_run: dict,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEQUENTIAL_ENV, "1")
    summary = invoke(rerender_args(setup, setup["root"] / "sequential.mp4", setup["root"] / "b.nvs"))
    assert summary["overlap"]["render"]["mode"] == "sequential"
    np.testing.assert_array_equal(frames_of(setup["root"] / "sequential.mp4"),
                                  frames_of(setup["root"] / "overlapped.mp4"))
    # The cache written by the sink thread holds the same bytes as the one written in line.
    assert chunk_bytes(setup["root"] / "b.nvs") == chunk_bytes(setup["root"] / "a.nvs")


def boom(*args: object, **kwargs: object) -> None:
    raise InputError("boom")


@pytest.mark.parametrize("stage", ["crop_face", "render_faces", "compose_frame"])
def test_an_error_in_any_stage_fails_cleanly(setup: dict[str, Path], first_run: dict, stage: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # decode stage (crops), model stage, encode stage (composition)
    monkeypatch.setattr(rerender_module, stage, boom)
    out = setup["root"] / f"failed_{stage}.mp4"
    result = runner.invoke(app, rerender_args(setup, out, setup["root"] / "a.nvs"))
    assert result.exit_code == 3 and "boom" in result.output
    assert not out.exists() and not [p for p in setup["root"].iterdir() if out.name in p.name]
    assert not [t for t in threading.enumerate() if t.name.startswith("nvsvideo-")]
