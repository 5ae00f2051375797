"""The inversion cache as a user meets it: keyed on the video's content, refusals without side effects,
render-only runs that share the cache, `--store auto` and the free-space check, and the size report.

Tiny random models of the real classes on 2-frame and 1-frame real face clips (see tiny_models.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nvsvideo.cache import plan as plan_module
from nvsvideo.cli import app

from face_clips import face_clip_with_gap
from tiny_models import save_tiny_eg3d, save_tiny_triplanenet

runner = CliRunner()
FRAMES = 2


@pytest.fixture(scope="module")
def setup(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cache_cli")
    return {
        "root": root,
        "clip": face_clip_with_gap(fixtures_dir / "single_face.mp4", root / "clip.mp4", blank=(), frames=FRAMES),
        "other": face_clip_with_gap(fixtures_dir / "single_face.mp4", root / "other.mp4", blank=(1,), frames=FRAMES),
        "still": face_clip_with_gap(fixtures_dir / "single_face.mp4", root / "still.mp4", blank=(), frames=1),
        "eg3d": save_tiny_eg3d(root / "eg3d.safetensors"),
        "tpn": save_tiny_triplanenet(root / "tpn_v2.pt", "v2"),
    }


def models(setup: dict[str, Path]) -> list[str]:
    return ["--model", "v2", "--triplanenet", str(setup["tpn"]), "--eg3d", str(setup["eg3d"]),
            "--landmarks", "dlib", "--device", "cpu", "--batch-size", "4"]


def invoke(*args: str) -> tuple[dict, str]:
    """(the --json summary, the human text on stderr)."""
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.stderr


def files(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Content and modification time of every file but the lock files."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name not in {"lock", "manifest.lock"}}


@pytest.fixture(scope="module")
def cache(setup: dict[str, Path]) -> Path:
    summary, text = invoke("invert", str(setup["clip"]), *models(setup))
    cache_dir = setup["root"] / "clip.mp4.nvs"
    assert summary["inverted"] == FRAMES and summary["cache"]["path"] == str(cache_dir)
    assert summary["cache"]["store"] == "planes"  # auto: 2 frames of planes are small
    on_disk = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())
    assert summary["cache"]["bytes"] == on_disk > FRAMES * 96 * 256 * 256 * 2
    assert f"cache: {cache_dir} (" in text and "--store planes)" in text
    return cache_dir


def test_a_touched_or_copied_video_hits_the_cache(setup: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    os.utime(setup["clip"], ns=(10**18, 10**18))
    copy = tmp_path / "download" / "clip.mp4"
    copy.parent.mkdir()
    shutil.copyfile(setup["clip"], copy)  # new mtime, new inode, same content
    for video in (setup["clip"], copy):
        summary, _ = invoke("invert", str(video), "--cache", str(cache), *models(setup))
        assert summary["inverted"] == 0 and summary["cache_hits"] == FRAMES and summary["align_cached"]


def test_another_video_is_refused_before_anything_is_written(setup: dict[str, Path], cache: Path) -> None:
    before = files(cache)
    result = runner.invoke(app, ["invert", str(setup["other"]), "--cache", str(cache), *models(setup)])
    assert result.exit_code == 3 and "made from another video" in result.output and "--fresh" in result.output
    assert "mtime" not in result.output and "sha256" not in result.output
    assert files(cache) == before  # tracks.json included: nothing re-aligned or rewritten


def test_a_cache_keyed_on_modification_times_is_refused_in_words(setup: dict[str, Path], cache: Path,
                                                                 tmp_path: Path) -> None:
    old = tmp_path / "old.nvs"
    shutil.copytree(cache, old)
    manifest = json.loads((old / "inversion" / "manifest.json").read_text())
    manifest["identity"]["settings"]["align"]["source"] = {"size": 123456, "mtime_ns": 1733311111222333444}
    (old / "inversion" / "manifest.json").write_text(json.dumps(manifest))
    before = files(old)
    result = runner.invoke(app, ["invert", str(setup["clip"]), "--cache", str(old), *models(setup)])
    assert result.exit_code == 3 and "earlier nvsvideo" in result.output and "--fresh" in result.output
    assert "1733311111222333444" not in result.output
    assert files(old) == before


def test_render_only_runs_share_the_cache(setup: dict[str, Path], cache: Path, tmp_path: Path) -> None:
    # Another process holds the cache's shared lock, as a second render-only run does while it renders.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from nvsvideo.cache.lock import DirectoryLock; "
         "DirectoryLock(Path(sys.argv[1])).acquire(shared=True); print('ready', flush=True); sys.stdin.read()",
         str(cache / "inversion")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        out = tmp_path / "crop.mp4"
        summary, text = invoke("rerender", str(setup["clip"]), "-o", str(out), "--output", "crop", "--size", "64",
                               "--render-resolution", "16", "--samples", "0.5", *models(setup))
        assert summary["inverted"] == 0 and summary["rendered"] == FRAMES and out.is_file()
        assert summary["cache"] == {"path": str(cache), "bytes": summary["cache"]["bytes"], "store": "planes"}
        assert f"cache: {cache} (" in text
        # A writer is still kept out while a reader renders.
        writer = runner.invoke(app, ["invert", str(setup["clip"]), "--cache", str(cache), *models(setup)])
        assert writer.exit_code == 3 and "in use" in writer.output
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_auto_store_and_free_space_are_decided_before_any_work(setup: dict[str, Path], tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "small_disk.nvs"
    monkeypatch.setattr(plan_module, "free_bytes", lambda directory: 1_000_000)
    result = runner.invoke(app, ["invert", str(setup["still"]), "--cache", str(target), "--store", "planes",
                                 *models(setup)])
    # One frame of planes, and once more for its chunk being rewritten: 2 x 12.6 MB.
    assert result.exit_code == 3 and "needs about 25.2 MB" in result.output and "1.0 MB free" in result.output
    assert "--store recompute" in result.output and "--cache DIR" in result.output
    assert not target.exists()
    # 20 MB free: planes for the frame (12.6 MB) exceed a quarter of it, so auto keeps codes only.
    monkeypatch.setattr(plan_module, "free_bytes", lambda directory: 20_000_000)
    summary, text = invoke("invert", str(setup["still"]), "--cache", str(target), *models(setup))
    assert summary["cache"]["store"] == "recompute" and "--store recompute" in text
    assert summary["cache"]["bytes"] < 40_000
