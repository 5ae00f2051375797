"""The align stage and `nvsvideo align`: real faces, gaps, no face, stills, smoothing metrics."""

from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.pipelines.align import AlignConfig, FrameAlignment, VideoAlignment, smooth_alignment
from nvsvideo.temporal.tracking import TrackStatus

from face_clips import face_clip_with_gap

runner = CliRunner()


@pytest.fixture(scope="module")
def aligned_clip(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("align") / "clip"
    result = runner.invoke(app, ["align", str(fixtures_dir / "single_face.mp4"), "-o", str(out), "--landmarks",
                                 "dlib", "--json", "--quiet", "--preview"])
    assert result.exit_code == 0, result.output
    (out / "summary.json").write_text(result.stdout)
    return out


def test_align_video_writes_crops_labels_and_tracks(aligned_clip: Path) -> None:
    summary = json.loads((aligned_clip / "summary.json").read_text())
    assert summary["frames"] == 72 and summary["detected"] == 72 and summary["crops"] == 72
    dataset = json.loads((aligned_clip / "dataset.json").read_text())
    names = [name for name, _ in dataset["labels"]]
    assert names == [f"{i:06d}.png" for i in range(72)]
    assert all(len(label) == 25 for _, label in dataset["labels"])
    # The official label layout: row-major cam2world (last row 0 0 0 1) then intrinsics with f = 4.2647.
    label = np.asarray(dataset["labels"][0][1])
    np.testing.assert_allclose(label[12:16], [0, 0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(label[16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=1e-4)
    assert Image.open(aligned_clip / "000010.png").size == (512, 512)
    tracks = VideoAlignment.load(aligned_clip / "tracks.json")
    assert len(tracks.frames) == 72 and tracks.valid().all()
    assert (aligned_clip / "preview.mp4").is_file()


def test_align_smoothing_metrics_on_real_clip(aligned_clip: Path) -> None:
    metrics = json.loads((aligned_clip / "summary.json").read_text())["metrics"]
    for key in ("jitter_crop_center_px", "jitter_crop_size_px", "jitter_pose_deg"):
        assert metrics[key]["smoothed"] < metrics[key]["raw"]
    assert abs(metrics["lag_frames"]["crop_center"]) <= 1.0
    assert abs(metrics["lag_frames"]["pose_yaw"]) <= 1.0


def test_injected_jitter_is_reduced_three_times_without_lag(aligned_clip: Path) -> None:
    tracks = VideoAlignment.load(aligned_clip / "tracks.json")
    base = tracks.frames[0].landmarks
    rng = np.random.default_rng(0)
    frames = []
    for i in range(90):
        drift = np.array([40 * np.sin(2 * np.pi * i / 60), 15 * np.cos(2 * np.pi * i / 45)])
        noisy = base + drift + rng.normal(0, 2.0, size=2) + rng.normal(0, 0.7, size=base.shape)
        frames.append(FrameAlignment(i, i, i / 30, TrackStatus.DETECTED, noisy))
    alignment = dataclasses.replace(tracks, fps=Fraction(30), frames=frames, metrics={}, settings={})
    smooth_alignment(alignment, AlignConfig(smooth=0.1))
    m = alignment.metrics
    assert m["jitter_crop_center_px"]["reduction"] >= 3
    assert m["jitter_pose_deg"]["reduction"] >= 3
    assert abs(m["lag_frames"]["crop_center"]) <= 1 and abs(m["lag_frames"]["pose_yaw"]) <= 1


def test_align_video_with_missing_middle(fixtures_dir: Path, tmp_path: Path) -> None:
    clip = face_clip_with_gap(fixtures_dir / "single_face.mp4", tmp_path / "gap.mp4", blank=range(10, 22),
                              frames=36)
    # Short holes are interpolated, long ones pass through: 3 blank frames at 30-32 would be filled.
    out = tmp_path / "aligned"
    result = runner.invoke(app, ["align", str(clip), "-o", str(out), "--landmarks", "dlib", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    tracks = VideoAlignment.load(out / "tracks.json")
    status = [f.status for f in tracks.frames]
    assert len(status) == 36
    assert all(s is TrackStatus.MISSING for s in status[10:22])
    assert all(s is TrackStatus.DETECTED for s in status[:10] + status[22:])
    assert not (out / "000015.png").exists() and (out / "000009.png").exists()


def test_no_face_video_exits_4_and_leaves_nothing(fixtures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "none"
    result = runner.invoke(app, ["align", str(fixtures_dir / "no_face.mp4"), "-o", str(out), "--landmarks", "dlib"])
    assert result.exit_code == 4
    assert "no face" in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_align_stills_and_face_index(fixtures_dir: Path, tmp_path: Path) -> None:
    import skimage.data

    folder = tmp_path / "stills"
    folder.mkdir()
    Image.fromarray(skimage.data.astronaut()).save(folder / "astronaut.png")
    (folder / "person.jpg").write_bytes((fixtures_dir / "single_face.jpg").read_bytes())
    out = tmp_path / "aligned"
    result = runner.invoke(app, ["align", str(folder), "-o", str(out), "--landmarks", "dlib", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    names = sorted(n for n, _ in json.loads((out / "dataset.json").read_text())["labels"])
    assert names == ["astronaut.png", "person.png"]
    # An image that cannot be read is skipped and reported, as one without a face is.
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    result = runner.invoke(app, ["align", str(folder), "-o", str(tmp_path / "again"), "--landmarks", "dlib", "--json"])
    assert result.exit_code == 0, result.output
    [skipped] = json.loads(result.stdout)["unreadable"]
    assert skipped.startswith("skipped broken.jpg: cannot read it as an image")
    assert "skipped broken.jpg: cannot read it as an image" in result.stderr
    assert sorted(n for n, _ in json.loads((tmp_path / "again" / "dataset.json").read_text())["labels"]) == names

    largest, second = tmp_path / "largest", tmp_path / "second"
    for target, index in ((largest, "0"), (second, "1")):
        result = runner.invoke(app, ["align", str(fixtures_dir / "multi_face.jpg"), "-o", str(target),
                                     "--landmarks", "dlib", "--face-index", index, "--quiet"])
        assert result.exit_code == 0, result.output
    box0 = VideoAlignment.load(largest / "tracks.json").frames[0].box
    box1 = VideoAlignment.load(second / "tracks.json").frames[0].box
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert area(box0) >= area(box1) and not np.allclose(box0, box1)


def test_official_cameras_replace_ours(aligned_clip: Path, fixtures_dir: Path, tmp_path: Path) -> None:
    dataset = json.loads((aligned_clip / "dataset.json").read_text())
    offset = np.zeros(25)
    offset[3] = 0.5  # move every camera along world x
    shifted = {"labels": [[n, (np.asarray(lb) + offset).tolist()] for n, lb in dataset["labels"]]}
    cams = tmp_path / "official.json"
    cams.write_text(json.dumps(shifted))
    out = tmp_path / "with_cams"
    result = runner.invoke(app, ["align", str(fixtures_dir / "single_face.mp4"), "-o", str(out), "--landmarks", "dlib",
                                 "--cameras", str(cams), "--quiet"])
    assert result.exit_code == 0, result.output
    got = json.loads((out / "dataset.json").read_text())["labels"]
    np.testing.assert_allclose(got[5][1], shifted["labels"][5][1])
