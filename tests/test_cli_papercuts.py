"""Small things a new user met (issue 20, item 10): messages in words, usage lines, several files to `info`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nvsvideo.cameras.paths import load_keyframes
from nvsvideo.cli import app, command
from nvsvideo.edits import parse_edit_specs
from nvsvideo.errors import InputError, UsageError, WeightsError
from nvsvideo.torchfile import load_weights_only

from media import make_clip

runner = CliRunner()


def test_a_bad_choice_is_worded_for_people(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rerender", "in.mp4", "-o", "out.mp4", "--precision", "fp16"])
    assert result.exit_code == 2
    assert "Invalid value for '--precision': 'fp16' is not one of 'auto', 'fp32'." in result.output
    assert "Value error" not in result.output


@pytest.mark.parametrize(("args", "usage"), [
    (["rerender"], "Usage: nvsvideo rerender [OPTIONS] VIDEO"),
    (["info"], "Usage: nvsvideo info [OPTIONS] VIDEO..."),
    (["batch"], "Usage: nvsvideo batch [OPTIONS] INPUTS..."),
    (["weights", "fetch"], "Usage: nvsvideo weights fetch [OPTIONS] NAMES..."),
])
def test_usage_lines_name_arguments_plainly(args: list[str], usage: str) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0 and result.output.splitlines()[0] == usage and "{" not in result.output


def test_the_traceback_hint_is_not_given_under_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    @command
    def buggy(verbose: bool = False, quiet: bool = False) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(typer.Exit):
        buggy(verbose=False)
    assert "internal error: RuntimeError: a bug (run with --verbose for the traceback)" in capsys.readouterr().err
    with pytest.raises(typer.Exit):
        buggy(verbose=True)
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: RuntimeError: a bug" in err and "run with --verbose" not in err


def test_info_describes_several_files_and_reports_the_unreadable_one(tmp_path: Path) -> None:
    a = make_clip(tmp_path / "a.mp4", frames=3, audio=False)
    b = make_clip(tmp_path / "b.mp4", frames=5, audio=False)
    result = runner.invoke(app, ["info", str(a), str(b)])
    assert result.exit_code == 0
    assert result.stdout.count("frames      ") == 2 and "a.mp4: h264" in result.stdout and "\n\nb.mp4" in result.stdout
    listed = runner.invoke(app, ["info", str(a), str(tmp_path / "missing.mp4"), str(b), "--json"])
    assert listed.exit_code == 3 and "1 of 3 files could not be read" in listed.stderr
    rows = json.loads(listed.stdout)
    assert [r.get("frame_count") for r in rows] == [3, None, 5] and "not found" in rows[1]["error"]


@pytest.mark.parametrize(("text", "problem"), [
    ('[{"time": 0, "yaw": 1},', "not valid JSON: expecting value at line 2, column 1"),
    ('[{"yaw": 1}]', "a key has no 'time'"),
    ('{"keyframes": 5}', "expected a list of keys, each with a time"),
])
def test_a_bad_keyframe_file_is_explained_in_words(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "keys.json"
    path.write_text(text + "\n")
    with pytest.raises(InputError) as err:
        load_keyframes(path)
    assert problem in str(err.value) and "Error(" not in str(err.value)


def test_a_text_file_given_as_a_checkpoint_is_called_one(tmp_path: Path) -> None:
    path = tmp_path / "triplanenet.pth"
    path.write_text("these are my notes\n")
    with pytest.raises(WeightsError, match=r"not a readable PyTorch file and was refused \(it is a text file\)"):
        load_weights_only(path, what="TriPlaneNet")


def test_dropping_offsets_without_an_edit_is_refused() -> None:
    with pytest.raises(UsageError, match="--edit-offsets drop .* there is no --direction"):
        parse_edit_specs([], offsets="drop")
    assert parse_edit_specs([], offsets="keep") == []
    assert len(parse_edit_specs(["smile"], offsets="drop")) == 1
