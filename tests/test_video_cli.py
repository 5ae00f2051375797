"""`nvsvideo info` and `nvsvideo extract`: outputs, and one clear sentence with exit code 3 for bad inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.video import VideoReader

from media import make_audio_only, make_clip, make_faststart, make_truncated, make_unsupported_codec

runner = CliRunner()


def missing(d: Path) -> Path:
    return d / "nothing_here.mp4"


def folder(d: Path) -> Path:
    (d / "clips.mp4").mkdir()
    return d / "clips.mp4"


def zero_bytes(d: Path) -> Path:
    (d / "empty.mp4").touch()
    return d / "empty.mp4"


def text_file(d: Path) -> Path:
    (d / "notes.mp4").write_text("not a video\n")
    return d / "notes.mp4"


def audio_only(d: Path) -> Path:
    return make_audio_only(d / "song.m4a")


def audio_with_cover_art(d: Path) -> Path:
    return make_audio_only(d / "song_with_cover.m4a", cover_art=True)


def unsupported_codec(d: Path) -> Path:
    return make_unsupported_codec(d / "odd_codec.avi")


def nothing_decodable(d: Path) -> Path:
    # Only the index survived: the header promises frames but the media data stops at its first bytes.
    whole = make_faststart(make_clip(d / "whole.mp4", frames=24), d / "fs.mp4")
    data = whole.read_bytes()
    (d / "whole.mp4").unlink()
    whole.unlink()
    (d / "cut.mp4").write_bytes(data[: data.index(b"mdat") + 16])
    return d / "cut.mp4"


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (missing, "video not found"),
    "folder": (folder, "is a folder"),
    "zero_bytes": (zero_bytes, "empty file"),
    "text_file": (text_file, "not a readable video file"),
    "audio_only": (audio_only, "has no video stream"),
    "audio_with_cover_art": (audio_with_cover_art, "has no video stream"),
    "unsupported_codec": (unsupported_codec, "cannot decode"),
    "nothing_decodable": (nothing_decodable, "no decodable video frames"),
}


def assert_one_clear_error(result, expected: str) -> None:
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert result.stderr.count("error:") == 1
    # Rich wraps long lines to the terminal width; the sentence is judged with wrapping undone.
    assert expected in " ".join(result.stderr.split())
    assert result.stdout == ""


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_info_rejects_bad_input_in_one_sentence(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    result = runner.invoke(app, ["info", str(make(tmp_path)), "--json"])
    assert_one_clear_error(result, expected)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_extract_rejects_bad_input_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    make, expected = BAD_INPUTS[case]
    inputs = tmp_path / "in"
    inputs.mkdir()
    video = make(inputs)
    result = runner.invoke(app, ["extract", str(video), "-o", str(tmp_path / "frames")])
    assert_one_clear_error(result, expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # no output folder, no hidden temp folder


def test_info_json_has_exact_rate(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", str(make_clip(tmp_path / "clip.mp4", frames=12)), "--json"])
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert (meta["fps"], meta["frame_count"], meta["width"], meta["height"]) == ("30000/1001", 12, 64, 48)
    assert meta["audio"][0]["codec"] == "aac"


def test_extract_writes_pngs_and_index(fixtures_dir: Path, tmp_path: Path) -> None:
    video, out = fixtures_dir / "single_face.mp4", tmp_path / "frames"
    result = runner.invoke(app, ["extract", str(video), "-o", str(out), "--every", "10", "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["frames_written"] == 8 and summary["fps"] == "30/1" and Path(summary["output_dir"]) == out
    index = json.loads((out / "frames.json").read_text())
    assert (index["fps"], index["time_base"]) == ("30/1", "1/15360")
    entries = index["frames"]
    assert [e["index"] for e in entries] == list(range(0, 72, 10))
    assert [e["pts"] for e in entries] == [512 * i for i in range(0, 72, 10)]
    # Files are numbered by frame index: frame 10 is 000010.png.
    assert entries[1] == {"index": 10, "pts": 5120, "time_seconds": pytest.approx(1 / 3), "file": "000010.png"}
    assert sorted(p.name for p in out.iterdir()) == sorted(["frames.json"] + [f"{i:06d}.png" for i in range(0, 72, 10)])
    # The PNGs hold exactly the decoded frames (PNG is lossless).
    first = next(iter(VideoReader(video, batch_size=1))).frames[0]
    np.testing.assert_array_equal(np.asarray(Image.open(out / "000000.png")), first)


def test_extract_time_range(tmp_path: Path) -> None:
    video, out = make_clip(tmp_path / "clip.mp4", frames=30, rate="30"), tmp_path / "frames"
    result = runner.invoke(app, ["extract", str(video), "-o", str(out), "--start", "0.5", "--end", "0.6", "-q"])
    assert result.exit_code == 0, result.output
    entries = json.loads((out / "frames.json").read_text())["frames"]
    assert [e["index"] for e in entries] == [15, 16, 17]
    assert [e["file"] for e in entries] == ["000015.png", "000016.png", "000017.png"]
    one = runner.invoke(app, ["extract", str(video), "-o", str(tmp_path / "one"), "--start", "0.5", "--end", "0.52"])
    assert one.exit_code == 0 and "wrote 1 frame and frames.json" in one.stderr
    assert [p.name for p in (tmp_path / "one").glob("*.png")] == ["000015.png"]


def test_extract_truncated_file_writes_what_is_there_and_warns(tmp_path: Path) -> None:
    whole = make_faststart(make_clip(tmp_path / "whole.mp4", frames=48, width=160, height=120), tmp_path / "fs.mp4")
    video, out = make_truncated(whole, tmp_path / "cut.mp4", keep=0.5), tmp_path / "frames"
    result = runner.invoke(app, ["extract", str(video), "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "truncated" in result.stderr
    written = len(json.loads((out / "frames.json").read_text())["frames"])
    assert 0 < written < 48
    assert f"decoded {written} of ~48 frames" in result.stderr


def test_extract_refuses_a_non_empty_output_folder(tmp_path: Path) -> None:
    video, out = make_clip(tmp_path / "clip.mp4", frames=4), tmp_path / "frames"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["extract", str(video), "-o", str(out)])
    assert result.exit_code == 2
    assert "not an empty folder" in " ".join(result.stderr.split())
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--start", "5"], "after the end of the video"), (["--start", "0.5", "--end", "0.2"], "must be after --start")],
)
def test_extract_rejects_an_empty_time_range(tmp_path: Path, args: list[str], message: str) -> None:
    video = make_clip(tmp_path / "clip.mp4", frames=12)
    result = runner.invoke(app, ["extract", str(video), "-o", str(tmp_path / "frames"), *args])
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
