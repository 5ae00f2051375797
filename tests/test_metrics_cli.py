"""`nvsvideo metrics` end to end on a real face clip with tiny random models."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_metrics import save_lpips_files, save_tiny_arcface
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.video import VideoReader, VideoWriter, probe

from face_clips import face_clip_with_gap
from tiny_models import tiny_clip_setup

runner = CliRunner()
FRAMES = 4
BLANK = range(2, 3)  # one faceless frame (passed through, not measured)


@pytest.fixture(scope="module")
def setup(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_clip_setup(fixtures_dir / "single_face.mp4", tmp_path_factory.mktemp("metrics"), blank=BLANK,
                           frames=FRAMES)


def models(setup: dict[str, Path]) -> list[str]:
    return ["--triplanenet", str(setup["v2"]), "--eg3d", str(setup["eg3d"]), "--landmarks", "dlib",
            "--max-gap", "0", "--device", "cpu", "--batch-size", "2", "--samples", "1", "--weights", str(setup["root"] / "weights")]


def metrics(*args: str, env: dict[str, str] | None = None) -> dict:
    result = runner.invoke(app, ["metrics", *args, "--json", "--quiet"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def measured(setup: dict[str, Path]) -> dict:
    return metrics(str(setup["clip"]), *models(setup), "--per-frame", str(setup["root"] / "frames.csv"))


def test_reconstruction_is_measured_on_every_face_frame(setup: dict[str, Path], measured: dict) -> None:
    faces = FRAMES - len(BLANK)
    assert measured["frames"] == FRAMES and measured["faces"] == faces and measured["inverted"] == faces
    recon = measured["reconstruction"]
    assert recon["psnr"]["frames"] == recon["ssim"]["frames"] == faces
    assert 5 < recon["psnr"]["mean"] < 40 and -1 < recon["ssim"]["mean"] < 1
    assert recon["lpips"]["frames"] == recon["identity"]["frames"] == 0
    assert [n.split(":")[0] for n in measured["notes"]] == ["LPIPS skipped", "identity skipped"]
    rows = list(csv.DictReader((setup["root"] / "frames.csv").open()))
    assert [r["frame"] for r in rows] == [str(i) for i in range(FRAMES)]
    assert rows[2]["face"] == "False" and rows[2]["psnr"] == ""
    psnrs = [float(r["psnr"]) for r in rows if r["psnr"]]
    assert np.mean(psnrs) == pytest.approx(recon["psnr"]["mean"])
    assert measured["per_frame"][0]["psnr"] == pytest.approx(psnrs[0])
    # A second run reads the cache: nothing is inverted again, and the numbers are the same.
    again = metrics(str(setup["clip"]), *models(setup))
    assert again["inverted"] == 0 and again["reconstruction"] == recon


def test_lpips_and_identity_where_their_files_are(setup: dict[str, Path], measured: dict) -> None:
    weights, hub = setup["root"] / "weights", setup["root"] / "torch"
    alex, lin = save_lpips_files(setup["root"] / "lpips_files")
    (weights / "lpips").mkdir(parents=True)
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    lin.rename(weights / "lpips" / "alex.pth")
    alex.rename(hub / "hub" / "checkpoints" / alex.name)
    save_tiny_arcface(weights / "model_ir_se50.pth")
    summary = metrics(str(setup["clip"]), *models(setup), env={"TORCH_HOME": str(hub)})
    faces = FRAMES - len(BLANK)
    assert summary["notes"] == []
    assert summary["reconstruction"]["lpips"]["frames"] == faces and summary["reconstruction"]["lpips"]["min"] > 0
    assert summary["reconstruction"]["identity"]["frames"] == faces
    assert -1 <= summary["reconstruction"]["identity"]["min"] <= summary["reconstruction"]["identity"]["max"] <= 1
    for path in (weights / "lpips" / "alex.pth", weights / "model_ir_se50.pth"):
        path.unlink()


def video_pts(path: Path) -> list[int]:
    return [int(t) for batch in VideoReader(path) for t in batch.pts]


def flickering_copy(source: Path, path: Path, levels: int) -> Path:
    """`source` with every odd frame brightened by `levels`: a re-render that flickers."""
    info = probe(source)
    with VideoWriter(path, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
                     crf=0) as writer:
        for batch in VideoReader(source, info=info):
            frames = batch.frames.astype(np.int16) + levels * (batch.indices % 2)[:, None, None, None]
            writer.write(np.clip(frames, 0, 255).astype(np.uint8), batch.pts)
    return path


def test_stability_of_the_input_itself_and_of_a_flickering_copy(setup: dict[str, Path], measured: dict) -> None:
    clip = str(setup["clip"])
    same = metrics(clip, "--rendered", clip, "--skip-reconstruction", *models(setup))
    stability = same["stability"]
    # Pairs with a face in both frames: (0, 1) only.
    assert stability["pairs"] == 1 and stability["region"] == "face crop" and "reconstruction" not in same
    assert stability["ratio"] == 1.0 and stability["input_change"] > 0
    flicker = flickering_copy(setup["clip"], setup["root"] / "flicker.mp4", 30)
    flickers = metrics(clip, "--rendered", str(flicker), "--skip-reconstruction", *models(setup))["stability"]
    assert flickers["input_change"] == stability["input_change"]
    assert flickers["ratio"] > 3 and math.isclose(flickers["output_change"], flickers["ratio"] * flickers["input_change"])
    # A rendered video of another size (a crop output) is taken whole: here a still grey square.
    info = probe(setup["clip"])
    still = setup["root"] / "still.mp4"
    with VideoWriter(still, width=64, height=64, fps=info.fps, time_base=info.time_base) as writer:
        writer.write(np.full((FRAMES, 64, 64, 3), 128, np.uint8), np.array(video_pts(setup["clip"])))
    steady = metrics(clip, "--rendered", str(still), "--skip-reconstruction", *models(setup))["stability"]
    assert steady["region"] == "input face crop, rendered frame whole"
    assert steady["output_change"] < 0.01 and steady["ratio"] < 0.01


def grey_clip(path: Path, levels: list[int]) -> Path:
    """A face-less clip, losslessly: frame t is grey at `levels[t]` everywhere."""
    with VideoWriter(path, width=64, height=48, fps=25, crf=0) as writer:
        writer.write(np.stack([np.full((48, 64, 3), level, np.uint8) for level in levels]))
    return path


def test_a_video_without_faces_is_measured_on_whole_frames(setup: dict[str, Path], tmp_path: Path) -> None:
    # Input: every frame 2 levels from the last. Output: 2 levels six times, then 6: 18/7 on average.
    video = grey_clip(tmp_path / "wall.mp4", [100, 102, 100, 102, 100, 102, 100, 102])
    rendered = grey_clip(tmp_path / "out.mp4", [100, 102, 100, 102, 100, 102, 100, 106])
    expected = {"input_change": 2.0, "output_change": 2.571, "ratio": 1.286, "pairs": 7, "region": "whole frames"}
    for reconstruction in ([], ["--skip-reconstruction"]):
        summary = metrics(str(video), "--rendered", str(rendered), *models(setup), *reconstruction)
        stability = summary["stability"]
        assert {k: round(stability[k], 3) if isinstance(stability[k], float) else stability[k]
                for k in expected} == expected
        assert summary["faces"] == 0 and "reconstruction" not in summary
        assert bool(reconstruction) != any("no reconstruction to measure" in note for note in summary["notes"])
    # With nothing but the reconstruction asked for, a face-less video has nothing to measure: exit 4.
    result = runner.invoke(app, ["metrics", str(video), *models(setup)])
    assert result.exit_code == 4 and "no face" in result.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--skip-reconstruction"], 2, "nothing to measure"),
    (["--per-frame", "values.txt", "--skip-reconstruction", "--rendered", "{clip}"], 2, ".csv or .json"),
    (["--rendered", "{short}", "--skip-reconstruction"], 3, "must be made from this input"),
    (["--rendered", "missing.mp4"], 3, "does not exist"),
])
def test_mistakes_are_refused(setup: dict[str, Path], measured: dict, args: list[str], code: int,
                              message: str) -> None:
    short = setup["root"] / "short.mp4"
    if not short.exists():
        face_clip_with_gap(setup["clip"], short, blank=(), frames=3)
    args = [a.format(clip=setup["clip"], short=short) for a in args]
    result = runner.invoke(app, ["metrics", str(setup["clip"]), *args, *models(setup)])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())
