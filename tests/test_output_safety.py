"""Finished outputs are never lost: each output is committed on its own, unwritable or full destinations are
user errors (exit 3), and a later failure never removes an earlier finished file. End to end on a real face
clip with tiny random models."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.errors import UsageError
from nvsvideo.video import probe

from tiny_models import tiny_clip_setup

runner = CliRunner()
FRAMES = 6
BLANK = (3,)


@pytest.fixture(scope="module")
def setup(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_clip_setup(fixtures_dir / "single_face.mp4", tmp_path_factory.mktemp("safety"), blank=BLANK,
                           frames=FRAMES)


def models(setup: dict[str, Path], *, cache: Path | None = None) -> list[str]:
    return ["--triplanenet", str(setup["v2"]), "--eg3d", str(setup["eg3d"]), "--landmarks", "dlib",
            "--max-gap", "0", "--device", "cpu", "--batch-size", "3",
            "--cache", str(cache or setup["root"] / "planes.nvs")]


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_failed_mesh_keeps_the_finished_videos(setup: dict[str, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def no_surface(path: Path, *args: object, **kwargs: object) -> None:
        raise UsageError("the density ranges from 0 to 1 and never crosses the surface level 10")

    monkeypatch.setattr("nvsvideo.pipelines.rerender.export_mesh", no_surface)
    out, depth, mesh = tmp_path / "o.mp4", tmp_path / "d.mp4", tmp_path / "m.obj"
    result = runner.invoke(app, ["rerender", str(setup["clip"]), "-o", str(out), "--depth", str(depth),
                                 "--mesh", str(mesh), *models(setup)])
    assert result.exit_code == 2 and "never crosses" in result.output, result.output
    assert probe(out).frame_count == FRAMES and probe(depth).frame_count == FRAMES
    assert not mesh.exists() and _listing(tmp_path) == {"o.mp4", "d.mp4"}  # no temporary file either


def test_mesh_from_a_recompute_cache(setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []

    def capture(path: Path, density: object, **kwargs: object) -> None:
        points = torch.zeros(5, 3)
        seen.append(density(points))  # type: ignore[operator]
        Path(path).write_text("o mesh\n")

    monkeypatch.setattr("nvsvideo.pipelines.rerender.export_mesh", capture)
    out, mesh = tmp_path / "o.mp4", tmp_path / "m.ply"
    result = runner.invoke(app, ["rerender", str(setup["clip"]), "-o", str(out), "--mesh", str(mesh),
                                 "--mesh-frame", "4", "--store", "recompute",
                                 *models(setup, cache=tmp_path / "recompute.nvs")])
    assert result.exit_code == 0, result.output
    assert mesh.exists() and len(seen) == 1 and seen[0].shape == (5,) and torch.isfinite(seen[0]).all()


@pytest.mark.parametrize(("frame", "words"), [("999", "past the end of the video (6 frames"),
                                              ("3", "--mesh-frame 3 has no face")])
def test_mesh_frame_is_checked_before_rendering(setup: dict[str, Path], tmp_path: Path, frame: str,
                                                words: str) -> None:
    out = tmp_path / "o.mp4"
    result = runner.invoke(app, ["rerender", str(setup["clip"]), "-o", str(out), "--mesh", str(tmp_path / "m.ply"),
                                 "--mesh-frame", frame, *models(setup)])
    assert result.exit_code == 2 and words in result.output, result.output
    assert list(tmp_path.iterdir()) == []


class _FillsUp:
    """An output container whose disk fills after `room` packets: every later write fails with ENOSPC."""

    def __init__(self, container: object, path: str, room: int) -> None:
        self._container, self._path, self._room = container, path, room

    def mux(self, packets: object) -> None:
        self._room -= 1
        if self._room < 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._path)
        self._container.mux(packets)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._container, name)

    def __enter__(self) -> _FillsUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self._container.__exit__(*exc)  # type: ignore[attr-defined]


def test_a_full_disk_exits_3_removes_the_partial_output_and_keeps_the_cache(
        setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nvsvideo.video import writer

    real_open = writer.open_output
    monkeypatch.setattr(writer, "open_output",
                        lambda path, *args: _FillsUp(real_open(path, *args), str(path), room=4))
    out, cache = tmp_path / "o.mp4", tmp_path / "c.nvs"
    result = runner.invoke(app, ["rerender", str(setup["clip"]), "-o", str(out), "--crf", "0",
                                 *models(setup, cache=cache)])
    assert result.exit_code == 3, result.output
    assert f"the disk holding {out} is full: it needs about" in result.output and "free" in result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nvs"]  # no output, no temporary file
    monkeypatch.setattr(writer, "open_output", real_open)
    again = runner.invoke(app, ["rerender", str(setup["clip"]), "-o", str(out), "--json", "--quiet",
                                *models(setup, cache=cache)])
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["inverted"] + summary["cache_hits"] == FRAMES - len(BLANK)
    assert probe(out).frame_count == FRAMES
