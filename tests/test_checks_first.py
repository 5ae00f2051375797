"""Values checked before any work, without torch: ranges of size-like options, finite numbers, option pairs,
and the memory a run's settings need (exit 2 out of range, 6 too big for this machine)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.errors import DeviceError, UsageError
from nvsvideo.limits import check_memory, check_range, estimate_run_bytes, output_hw
from nvsvideo.validate import check_device, parse_fps

from media import make_clip

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "talk.mp4", frames=4)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Files that exist where the model options point (these refusals come before any model is read)."""
    folder = tmp_path_factory.mktemp("models")
    for name in ("tpn.pt", "eg3d.safetensors"):
        (folder / name).write_bytes(b"x")
    return ["--triplanenet", str(folder / "tpn.pt"), "--eg3d", str(folder / "eg3d.safetensors")]


# (command line with {v} the video and {d} the work folder, exit code, words of the one-line message)
REFUSED = [
    ("rerender {v} -o {d}/o.mp4 --yaw-path orbit:period=0s", 2, "orbit period must be positive"),
    ("rerender {v} -o {d}/o.mp4 --yaw-path orbit:period=-3f", 2, "orbit period must be positive"),
    ("rerender {v} -o {d}/o.mp4 --smooth inf", 2, "--smooth must be a finite number"),
    ("rerender {v} -o {d}/o.mp4 --smooth 1000", 2, "--smooth 1000 is out of range"),
    ("rerender {v} -o {d}/o.mp4 --output crop --size 100000", 2, "--size 100000 is out of range: use 64 to 4096"),
    ("rerender {v} -o {d}/o.mp4 --samples 1e9", 2, "--samples 1000000000 is out of range"),
    ("rerender {v} -o {d}/o.mp4 --render-resolution 100000", 2, "--render-resolution 100000 is out of range"),
    ("rerender {v} -o {d}/o.mp4 --batch-size 100000", 2, "--batch-size 100000 is out of range"),
    ("rerender {v} -o {d}/o.mp4 --device tpu", 2, "unknown device 'tpu'"),
    ("rerender {v} -o {d}/o.mp4 --landmarks-file {d}/x.json", 2, "--landmarks-file is read only with --landmarks file"),
    ("rerender {v} -o {d}/o.mp4 --landmarks file --landmarks-file {d}/x.json", 3, "x.json does not exist"),
    ("rerender {v} -o {d}/o.mp4 --landmarks file", 2, "needs --landmarks-file"),
    ("edit {v} -o {d}/o.mp4 --direction smile --strength nan", 2, "--strength must be a finite number"),
    ("invert {v} --smooth inf", 2, "--smooth must be a finite number"),
    ("align {v} -o {d}/a --landmarks-file {d}/x.json", 2, "--landmarks-file is read only"),
    ("metrics {v} --skip-reconstruction", 2, "nothing to measure"),
    ("metrics {v} --samples 1e9", 2, "--samples 1000000000 is out of range"),
    ("sample -o {d}/s.mp4 --truncation nan", 2, "--truncation must be a finite number"),
    ("sample -o {d}/s.mp4 --yaw 1e400", 2, "--yaw must be a finite number"),
    ("sample -o {d}/s.mp4 --fps 1e9", 2, "--fps 1e9 is out of range"),
    ("sample -o {d}/s.mp4 --frames 100000000", 2, "--frames 100000000 is out of range"),
    ("batch {v} -o {d}/b --smooth inf", 2, "--smooth must be a finite number"),
    ("batch {v} -o {d}/b --size 100000", 2, "--size 100000 is out of range"),
    ("batch {v} -o {d}/b --device cpu,tpu", 2, "unknown device 'tpu'"),
]


@pytest.mark.parametrize(("line", "code", "words"), REFUSED, ids=[r[0].replace(" {v}", "") for r in REFUSED])
def test_refused_before_any_work(clip: Path, tmp_path: Path, line: str, code: int, words: str) -> None:
    args = [part.format(v=clip, d=tmp_path) for part in line.split()]
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert list(tmp_path.iterdir()) == []


def test_refusals_import_neither_torch_nor_scipy_interpolate(clip: Path, tmp_path: Path) -> None:
    refusals = [["rerender", str(clip), "-o", "o.mp4", "--smooth", "inf"],
                ["rerender", str(clip), "-o", "o.mp4", "--device", "tpu"],
                ["edit", str(clip), "-o", "o.mp4", "--direction", "x", "--strength", "nan"],
                ["metrics", str(clip), "--skip-reconstruction"],
                ["sample", "-o", "s.mp4", "--truncation", "nan"],
                ["rerender", "missing.mp4", "-o", "o.mp4"]]
    code = (
        "import sys\n"
        "from nvsvideo.cli import app\n"
        "codes = []\n"
        f"for args in {refusals!r}:\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as stop:\n"
        "        codes.append(stop.code)\n"
        "print(codes, [m for m in ('torch', 'scipy.interpolate', 'dlib') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "[2, 2, 2, 2, 2, 3] []", result.stdout + result.stderr


def test_a_run_too_big_for_the_memory_exits_6(clip: Path, tmp_path: Path, model_files: list[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nvsvideo.limits.available_memory", lambda: 4 << 30)
    result = runner.invoke(app, ["rerender", str(clip), "-o", str(tmp_path / "o.mp4"), "--output", "compare",
                                 "--size", "2048", "--batch-size", "8", *model_files])
    assert result.exit_code == 6, result.output
    assert "needs about" in result.output and "4.3 GB is free" in result.output
    assert list(tmp_path.iterdir()) == []
    # The same settings at batch 1 fit.
    assert estimate_run_bytes(batch=1, render_resolution=None, samples=2, frame_hw=(64, 64),
                              out_hw=output_hw("compare", (64, 64), 2048)) < 4 << 30


def test_memory_estimate_hand_checked() -> None:
    # Base 1 GiB + one decoder chunk (128*128*48 samples * 700 B) + per frame at 128 px, 2x samples
    # (192 per ray): draws 16384*192*12, features 16384*160*4, super-resolution 512*512*256*4, composing
    # 360*640*48, queued 3*(2*360*640)*3.
    one = 1073741824 + 550502400 + (37748736 + 10485760 + 268435456 + 11059200 + 4147200)
    assert estimate_run_bytes(batch=1, render_resolution=128, samples=2, frame_hw=(360, 640),
                              out_hw=(360, 640)) == one == 1956120576
    two = estimate_run_bytes(batch=2, render_resolution=None, samples=2, frame_hw=(360, 640), out_hw=(360, 640))
    assert two - one == one - 1073741824 - 550502400
    assert output_hw("paste", (360, 640), 512) == (360, 640)
    assert output_hw("crop", (360, 640), 256) == (256, 256)
    assert output_hw("compare", (360, 640), 256) == (256, 768)
    with pytest.raises(DeviceError, match=r"needs about 2.0 GB of memory and 1.0 GB is free"):
        check_memory(2_000_000_000, 1_000_000_000, "rendering")
    check_memory(2_000_000_000, None, "rendering")  # unknown: not refused


def test_ranges_and_parsers() -> None:
    check_range("--size", 64)
    check_range("--size", 4096)
    check_range("--render-resolution", None)
    for value in (63, 4097, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="--size"):
            check_range("--size", value)
    assert parse_fps("30000/1001") == Fraction(30000, 1001) and parse_fps("1000") == 1000
    for text in ("0", "-5", "1e9", "x", "1/0"):
        with pytest.raises(UsageError):
            parse_fps(text)
    for name in ("auto", "cpu", "cuda", "cuda:3", "mps", " CPU "):
        check_device(name)
    for name in ("tpu", "cuda:x", "gpu", "cpu,cuda"):
        with pytest.raises(UsageError):
            check_device(name)


@pytest.fixture
def read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder this process may not write into, as a read-only disk would be (faked: root ignores modes)."""
    from nvsvideo.files import can_create_in, nearest_existing

    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr("nvsvideo.validate.can_create_in",
                        lambda target: nearest_existing(target) != folder and can_create_in(target))
    return folder


# (command line with {v} the video, {ro} the read-only folder and {d} a writable one; words of the message)
UNWRITABLE = [
    ("rerender {v} -o {ro}/o.mp4", "cannot write --out {ro}/o.mp4: the folder {ro} is not writable"),
    ("rerender {v} -o {d}/o.mp4 --depth {ro}/d.mp4", "cannot write --depth"),
    ("rerender {v} -o {d}/o.mp4 --mesh {ro}/m.ply", "cannot write --mesh"),
    ("rerender {v} -o {d}/o.mp4 --cache {ro}/c.nvs", "cannot write --cache {ro}/c.nvs"),
    ("rerender {ro}/v.mp4 -o {d}/o.mp4", "with --cache DIR (the default sits beside the video)"),
    ("extract {v} -o {ro}/frames", "cannot write --out {ro}/frames"),
    ("align {v} -o {ro}/aligned", "cannot write --out {ro}/aligned"),
    ("invert {v} --cache {ro}/c.nvs", "cannot write --cache"),
    ("invert {ro}/v.mp4", "the default sits beside the video"),
    ("metrics {v} --rendered {v} --skip-reconstruction --per-frame {ro}/m.csv", "cannot write --per-frame"),
    ("metrics {ro}/v.mp4", "cannot write --cache"),
    ("sample -o {ro}/s.mp4", "cannot write --out"),
    ("sample -o {d}/s.mp4 --frames-dir {ro}/png", "cannot write --frames-dir"),
    ("batch {v} -o {ro}/out", "cannot write --out {ro}/out"),
]


@pytest.mark.parametrize(("line", "words"), UNWRITABLE, ids=[r[0].replace(" {v}", "") for r in UNWRITABLE])
def test_unwritable_destinations_exit_3_before_any_work(clip: Path, tmp_path: Path, read_only: Path,
                                                        model_files: list[str], line: str, words: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (read_only / "v.mp4").write_bytes(clip.read_bytes())
    fill = {"v": clip, "ro": read_only, "d": work}
    args = [part.format(**fill) for part in line.split()]
    models = model_files if args[0] in ("rerender", "invert", "metrics") else []
    result = runner.invoke(app, [*args, *models])
    assert result.exit_code == 3, result.output
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert len(lines) == 1 and words.format(**fill) in lines[0], result.output
    assert list(work.iterdir()) == [] and sorted(p.name for p in read_only.iterdir()) == ["v.mp4"]


def test_a_batch_output_in_an_unwritable_folder_fails_that_video_only(clip: Path, tmp_path: Path,
                                                                      read_only: Path) -> None:
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"input,output\n{clip},ro/a.mp4\n{clip},b.mp4\n")
    out = tmp_path
    result = runner.invoke(app, ["batch", str(manifest), "-o", str(out), "--device", "cpu",
                                 "--weights", str(tmp_path / "no-weights")])
    # The writable video goes on to its models (missing here); the other stops at its folder.
    assert result.exit_code == 7, result.output
    report = [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
    reasons = {Path(row["output"]).name: row for row in report}
    assert reasons["a.mp4"]["status"] == "failed" and "is not writable" in reasons["a.mp4"]["reason"]
    assert reasons["b.mp4"]["status"] == "failed" and "weight file" in reasons["b.mp4"]["reason"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write into any folder")
def test_a_folder_without_write_permission_is_refused(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        result = runner.invoke(app, ["extract", str(clip), "-o", str(folder / "frames")])
    finally:
        folder.chmod(0o755)
    assert result.exit_code == 3 and "is not writable" in result.output, result.output


def test_os_errors_of_a_full_or_read_only_destination_are_user_errors(tmp_path: Path) -> None:
    from nvsvideo.errors import OutputError
    from nvsvideo.files import output_error

    target = tmp_path / "cache" / "chunk_000.safetensors"
    full = output_error(OSError(errno.ENOSPC, "No space left on device", str(target)), needed=3_000_000)
    assert isinstance(full, OutputError) and full.exit_code == 3
    assert str(full).startswith(f"the disk holding {target} is full: it needs about 3.0 MB and has ")
    read_only = output_error(OSError(errno.EROFS, "Read-only file system", str(target)))
    assert isinstance(read_only, OutputError) and f"cannot write {target}: read-only file system" in str(read_only)
    assert output_error(OSError(errno.EIO, "Input/output error", str(target))) is None


def test_a_disk_filling_during_any_command_exits_3(clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fill_up(video: Path, out: Path, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "000003.png"))

    monkeypatch.setattr("nvsvideo.video.extract_frames", fill_up)
    result = runner.invoke(app, ["extract", str(clip), "-o", str(tmp_path / "frames")])
    assert result.exit_code == 3, result.output
    assert result.output.startswith(f"error: the disk holding {tmp_path / 'frames' / '000003.png'} is full")
