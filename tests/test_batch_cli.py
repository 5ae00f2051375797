"""`nvsvideo batch` end to end: the real rerender pipeline with tiny models on two face clips and a corrupt file,
in this process, on two worker processes, and on a local 2-CPU Ray instance.

Each clip has one face frame (inverting it is the costly part); its other frames pass through.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from nvsvideo.batch import read_report
from nvsvideo.cli import app
from nvsvideo.errors import UsageError
from nvsvideo.pipelines.batch import CACHE_DIR, BatchJobOptions
from nvsvideo.video import VideoReader, probe

from face_clips import face_clip_with_gap
from media import audio_packets
from tiny_models import save_tiny_eg3d, save_tiny_triplanenet

runner = CliRunner()
FRAMES = 6


@pytest.fixture(scope="module")
def setup(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("batch_cli")
    clips = root / "clips"
    clips.mkdir()
    source = fixtures_dir / "single_face.mp4"
    face_clip_with_gap(source, clips / "a.mp4", blank=range(1, FRAMES), frames=FRAMES)
    face_clip_with_gap(source, clips / "b.mp4", blank=range(0, FRAMES - 1), frames=FRAMES)
    (clips / "c.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom but no video follows")
    return {
        "root": root,
        "clips": clips,
        "eg3d": save_tiny_eg3d(root / "eg3d.safetensors"),
        "triplanenet": save_tiny_triplanenet(root / "tpn.pt", "v2"),
    }


def batch(setup: dict[str, Path], out: Path, *extra: str, inputs: list[str] | None = None
          ) -> tuple[Result, dict[str, dict]]:
    """Run `nvsvideo batch --json`; returns the result and the JSON lines keyed by output file name."""
    args = ["batch", *(inputs or [str(setup["clips"])]), "-o", str(out), "--json",
            "--triplanenet", str(setup["triplanenet"]), "--eg3d", str(setup["eg3d"]), "--landmarks", "dlib",
            "--max-gap", "0", "--samples", "1", "--batch-size", "2", "--device", "cpu", *extra]
    result = runner.invoke(app, args, env={"COLUMNS": "250"})  # wide: the table keeps each reason on one line
    assert result.exit_code in (0, 7), result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    return result, {Path(line["output"]).name: line for line in lines}


def statuses(lines: dict[str, dict]) -> dict[str, str]:
    return {name: line["status"] for name, line in lines.items()}


@pytest.fixture(scope="module")
def local(setup: dict[str, Path]) -> tuple[Path, Result, dict[str, dict]]:
    out = setup["root"] / "local"
    return out, *batch(setup, out)


def test_one_corrupt_video_fails_alone_with_exit_code_7(local: tuple[Path, Result, dict[str, dict]]) -> None:
    out, result, lines = local
    assert result.exit_code == 7
    assert statuses(lines) == {"a.mp4": "ok", "b.mp4": "ok", "c.mp4": "failed"}
    failed = lines["c.mp4"]
    assert failed["exit_code"] == 3 and "c.mp4 is not a readable video file" in failed["reason"]
    for name in ("a.mp4", "b.mp4"):
        line = lines[name]
        assert line["frames"] == FRAMES and line["worker"] == "main"
        assert {"align", "invert", "render"} <= set(line["stages"])
        assert line["details"]["inverted"] == 1 and line["details"]["rendered"] == 1
        assert probe(out / name).frame_count == FRAMES
    assert "load" in lines["a.mp4"]["stages"] and "load" not in lines["b.mp4"]["stages"]  # models kept
    # Only finished files in OUTDIR: no temporaries, no output for the corrupt input.
    assert sorted(p.name for p in out.iterdir()) == [CACHE_DIR, "a.mp4", "b.mp4", "report.jsonl"]
    assert {Path(r["output"]).name: r["status"] for r in read_report(out / "report.jsonl")} == statuses(lines)
    assert "not a readable video file" in result.stderr and "1 of 3 videos failed" in result.stderr


def test_a_second_run_skips_the_finished_videos(setup: dict[str, Path],
                                                local: tuple[Path, Result, dict[str, dict]]) -> None:
    out = local[0]
    written = {name: (out / name).stat().st_mtime_ns for name in ("a.mp4", "b.mp4")}
    result, lines = batch(setup, out, "--quiet")
    # The corrupt video is attempted again and fails again: still exit code 7.
    assert result.exit_code == 7
    assert statuses(lines) == {"a.mp4": "skipped", "b.mp4": "skipped", "c.mp4": "failed"}
    assert {name: (out / name).stat().st_mtime_ns for name in written} == written
    assert len(read_report(out / "report.jsonl")) == 6


def test_two_worker_processes_resume_from_the_caches_and_take_manifest_options(
        setup: dict[str, Path], local: tuple[Path, Result, dict[str, dict]]) -> None:
    out = setup["root"] / "workers"
    # The inversion caches of the first run, as an interrupted batch leaves them: only rendering is left.
    shutil.copytree(local[0] / CACHE_DIR, out / CACHE_DIR)
    manifest = setup["root"] / "jobs.jsonl"
    rows = [{"input": f"clips/{name}.mp4"} for name in "abc"] + [
        {"input": "clips/a.mp4", "output": "a_crop.mp4", "output_mode": "crop", "size": 64, "camera_path": "follow"}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result, lines = batch(setup, out, "--workers", "2", "--quiet", inputs=[str(manifest)])
    assert result.exit_code == 7
    assert statuses(lines) == {"a.mp4": "ok", "b.mp4": "ok", "c.mp4": "failed", "a_crop.mp4": "ok"}
    assert {line["worker"] for line in lines.values() if line["status"] == "ok"} == {"proc-0", "proc-1"}
    assert [lines[n]["details"]["inverted"] for n in ("a.mp4", "b.mp4", "a_crop.mp4")] == [0, 0, 1]
    for name in ("a.mp4", "b.mp4"):
        assert (out / name).read_bytes() == (local[0] / name).read_bytes()
    crop = lines["a_crop.mp4"]["details"]
    assert (crop["output_mode"], crop["camera_path"]) == ("crop", "follow")
    info = probe(out / "a_crop.mp4")
    assert (info.width, info.height, info.frame_count) == (64, 64, FRAMES)


def test_ray_runs_the_same_batch_and_matches_the_local_run(setup: dict[str, Path],
                                                           local: tuple[Path, Result, dict[str, dict]]) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nvsvideo[ray]'); CI installs it")
    out = setup["root"] / "ray"
    # a resumes from the first run's inversion cache; b is inverted by a Ray actor.
    shutil.copytree(local[0] / CACHE_DIR / "a.mp4.nvs", out / CACHE_DIR / "a.mp4.nvs")
    inputs = [str(setup["clips"] / name) for name in ("a.mp4", "b.mp4")]
    result, lines = batch(setup, out, "--ray", "--ray-cpus", "2", "--quiet", inputs=inputs)
    assert not ray.is_initialized()  # the local instance the batch started is shut down
    assert result.exit_code == 0  # nothing failed
    assert statuses(lines) == {"a.mp4": "ok", "b.mp4": "ok"}
    assert all(lines[n]["worker"].startswith("ray-") for n in ("a.mp4", "b.mp4"))
    assert (lines["a.mp4"]["details"]["inverted"], lines["b.mp4"]["details"]["inverted"]) == (0, 1)
    # Rendering from the same cache is exact.
    assert (out / "a.mp4").read_bytes() == (local[0] / "a.mp4").read_bytes()
    # An inversion is exact only up to float rounding: an actor runs torch on 1 thread, this process on all.
    ours, theirs = (np.concatenate([b.frames for b in VideoReader(d / "b.mp4")]).astype(int) for d in (out, local[0]))
    # A real mistake (another frame, camera or model) moves pixels by tens of levels on average.
    assert ours.shape == theirs.shape and np.abs(ours - theirs).mean() < 0.05


def test_manifest_text_is_typed_and_bad_values_fail_before_any_video(setup: dict[str, Path], tmp_path: Path) -> None:
    row = {**BatchJobOptions().to_dict(), "render_resolution": "64", "strength": "1.5", "direction": "smile"}
    options = BatchJobOptions.from_mapping(row)
    assert (options.render_resolution, options.strength, options.direction) == (64, (1.5,), ("smile",))
    with pytest.raises(UsageError, match="option 'size' must be int"):
        BatchJobOptions.from_mapping({"size": "big"})
    result = runner.invoke(app, ["batch", str(setup["clips"]), "-o", str(tmp_path / "out"), "--output", "mosaic"])
    assert result.exit_code == 2 and "'mosaic' is not one of 'crop', 'paste', 'compare'" in result.output
    assert not (tmp_path / "out").exists()



LONG_FRAMES = 20
LONG_FACES = {0, 9, 18}  # one in each 8-frame chunk


@pytest.fixture(scope="module")
def long_clip(setup: dict[str, Path], fixtures_dir: Path) -> tuple[Path, Path]:
    """A 20-frame clip with faces in frames 0, 9 and 18, and the folder of its unsplit lossless render."""
    source = setup["root"] / "long" / "long.mp4"
    source.parent.mkdir()
    face_clip_with_gap(fixtures_dir / "single_face.mp4", source, blank=set(range(LONG_FRAMES)) - LONG_FACES,
                       frames=LONG_FRAMES)
    out = setup["root"] / "unsplit"
    # crf 0 is lossless: however the video is cut into encodes, the decoded frames are the rendered ones.
    # One worker in this process, with all of torch's threads, where each chunked worker has one: the render
    # does not depend on the thread count.
    result, lines = batch(setup, out, "--crf", "0", "--quiet", inputs=[str(source)])
    assert result.exit_code == 0 and lines["long.mp4"]["details"]["rendered"] == 3
    return source, out


def decoded(path: Path) -> tuple[np.ndarray, list[int]]:
    batches = list(VideoReader(path))
    return np.concatenate([b.frames for b in batches]), np.concatenate([b.pts for b in batches]).tolist()



def test_chunks_of_one_video_render_on_two_workers_and_join_into_the_unsplit_output(
        setup: dict[str, Path], long_clip: tuple[Path, Path]) -> None:
    source, unsplit = long_clip
    out = setup["root"] / "chunked"
    shutil.copytree(unsplit / CACHE_DIR, out / CACHE_DIR)  # only rendering is left, so the result must be exact
    result, lines = batch(setup, out, "--crf", "0", "--chunk-frames", "8", "--workers", "2", "--quiet",
                          inputs=[str(source)])
    assert result.exit_code == 0
    line = lines["long.mp4"]
    assert line["status"] == "ok" and line["frames"] == LONG_FRAMES
    cache = {"path": str(out / CACHE_DIR / "long.mp4.nvs"), "store": "planes"}  # its size: the batch's last line
    assert line["details"] == {"faces_found": 3, "rendered": 3, "inverted": 0, "cache_hits": 3, "chunks": 3,
                               "cache": cache}
    assert {"align", "invert", "render", "merge"} <= set(line["stages"])
    frames, pts = decoded(out / "long.mp4")
    expected_frames, expected_pts = decoded(unsplit / "long.mp4")
    assert pts == expected_pts
    np.testing.assert_array_equal(frames, expected_frames)
    assert audio_packets(out / "long.mp4") == audio_packets(source) != []
    # The parts are gone once joined; the cache stays for later runs.
    assert sorted(p.name for p in out.iterdir()) == [CACHE_DIR, "long.mp4", "report.jsonl"]


def test_ray_aligns_a_video_once_then_inverts_and_renders_its_chunks_as_tasks(
        setup: dict[str, Path], long_clip: tuple[Path, Path]) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'nvsvideo[ray]'); CI installs it")
    source, unsplit = long_clip
    out = setup["root"] / "ray_chunked"
    # 5 frames per chunk is rounded up to the cache's 8, so that no two tasks write the same cache file.
    result, lines = batch(setup, out, "--crf", "0", "--chunk-frames", "5", "--ray", "--ray-cpus", "2", "--quiet",
                          inputs=[str(source)])
    assert result.exit_code == 0
    line = lines["long.mp4"]
    cache = {"path": str(out / CACHE_DIR / "long.mp4.nvs"), "store": "planes"}
    assert line["details"] == {"faces_found": 3, "rendered": 3, "inverted": 3, "cache_hits": 0, "chunks": 3,
                               "cache": cache}
    assert line["worker"].startswith("ray-")
    frames, pts = decoded(out / "long.mp4")
    expected_frames, expected_pts = decoded(unsplit / "long.mp4")
    assert pts == expected_pts and audio_packets(out / "long.mp4") == audio_packets(source)
    # Inverted by actors (torch on one thread): equal to the local run up to float rounding.
    assert np.abs(frames.astype(int) - expected_frames).mean() < 0.05
    # Each task filled its part of one cache: a whole-video run finds every inversion there.
    result, lines = batch(setup, out, "--crf", "0", "--overwrite", "--quiet", inputs=[str(source)])
    assert lines["long.mp4"]["details"]["cache_hits"] == 3 and lines["long.mp4"]["details"]["inverted"] == 0
    assert np.abs(decoded(out / "long.mp4")[0].astype(int) - frames).mean() < 0.05


def test_chunk_frames_must_be_positive(setup: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["batch", str(setup["clips"]), "-o", str(tmp_path / "out"), "--chunk-frames", "0"])
    assert result.exit_code == 2 and "--chunk-frames" in result.output
