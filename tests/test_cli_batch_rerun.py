"""Batch: each video checked before its models load; a rerun that skips outputs says when options changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from nvsvideo.batch import Status, read_report, run_batch
from nvsvideo.cli import app

import batch_jobs as syn
from media import make_clip


def test_skip_names_the_options_that_changed(tmp_path: Path) -> None:
    video = tmp_path / "in" / "a.npy"
    video.parent.mkdir()
    syn.write_frames(video, np.zeros((2, 4, 4, 3), np.uint8))
    out = tmp_path / "out"

    def run(options: dict) -> str:
        result = run_batch([str(video)], out, options, syn.blur_job, extensions={".npy"}, suffix=".npy")
        return f"{result.items[0].status.value}: {result.items[0].reason}"

    assert run({"work": 1}) == "ok: "
    assert read_report(out / "report.jsonl")[0]["options"] == {"work": 1}
    assert run({"work": 1}) == "skipped: the output already exists; use --overwrite to redo it"
    assert run({"work": 3}) == (f"{Status.SKIPPED.value}: the output exists but was made with other options (work); "
                                "use --overwrite to redo it with these")


def test_each_video_is_checked_before_its_models_load(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "talk.mp4", frames=2)
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"input,output,camera_path\n{clip},bad.mp4,keyframes:{tmp_path / 'missing.json'}\n"
                        f"{clip},worse.avi,orbit\n")
    out = tmp_path / "out"
    # An empty weights folder: a video that got as far as loading models would fail on weights instead.
    result = CliRunner().invoke(app, ["batch", str(manifest), "-o", str(out), "--weights", str(tmp_path / "none"),
                                      "--json"])
    assert result.exit_code == 7, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(line["exit_code"], "missing.json" in line["reason"]) for line in lines] == [(3, True), (2, False)]
    assert "cannot write '.avi'" in lines[1]["reason"]
    assert sorted(p.name for p in out.iterdir()) == ["report.jsonl"]
