"""Help and listings read whole at 80 and 120 columns; plain progress lines when stderr is not a terminal."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nvsvideo.cameras.paths import CAMERA_PATH_SYNTAX
from nvsvideo.cli import app
from nvsvideo.console import Reporter, progress_line, progress_step
from nvsvideo.errors import exit_code_summary
from nvsvideo.weights.listing import format_weights
from nvsvideo.weights.registry import KNOWN_WEIGHTS
from nvsvideo.weights.verify import WeightStatus

runner = CliRunner()

COMMANDS = [[], ["info"], ["extract"], ["sample"], ["align"], ["invert"], ["rerender"], ["edit"], ["batch"],
            ["weights"], ["weights", "verify"], ["weights", "convert"], ["weights", "fetch"]]


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "nvsvideo")
def test_help_is_never_cut(command: list[str], width: int) -> None:
    result = runner.invoke(app, [*command, "--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output and "<bool>" not in result.output
    assert max(len(line) for line in result.output.splitlines()) <= width


@pytest.mark.parametrize("command", ["rerender", "edit", "sample", "batch"])
def test_help_lists_each_camera_path_whole_on_its_line(command: str) -> None:
    lines = [line.strip() for line in runner.invoke(app, [command, "--help"], terminal_width=80).output.splitlines()]
    for syntax in CAMERA_PATH_SYNTAX:
        assert syntax in lines, syntax


def test_rerender_help_names_options_and_values_in_full() -> None:
    text = " ".join(runner.invoke(app, ["rerender", "--help"], terminal_width=80).output.split())
    for piece in ("--yaw-path, --camera-path KIND[:ARGS]", "--keep-ood Blend", "--direction NAME|FILE",
                  "--output <crop|paste|compare>", "--model <v1|v2>"):
        assert piece in text, piece


def test_flags_take_no_value(tmp_path: Path) -> None:
    result = runner.invoke(app, ["rerender", "in.mp4", "-o", str(tmp_path / "o.mp4"), "--keep-ood", "true"])
    assert result.exit_code == 2 and "unexpected extra argument" in result.output.lower()


def test_exit_code_summary_is_balanced_and_complete() -> None:
    text = exit_code_summary()
    assert text.count("(") == text.count(")")
    assert "1 internal error;" in text and "130 interrupted" in text and "143 terminated" in text


def _rows(present: set[str]) -> list[WeightStatus]:
    return [WeightStatus(entry, Path("/w") / entry.filename, "present" if entry.name in present else "missing", "")
            for entry in KNOWN_WEIGHTS]


def test_weights_listing_puts_models_first_and_folds_directions() -> None:
    lines = format_weights(_rows({"triplanenet-v2", "direction-smiling"}), "/w")
    assert lines[0] == "weights folder: /w"
    assert lines[2].startswith("Models") and lines[3] == "  missing  triplanenet-v1"
    assert "  present  triplanenet-v2" in lines
    assert not any("direction-bangs" in line for line in lines)
    summary = next(line for line in lines if "linear edit directions" in line)
    assert "1 present (smiling)" in summary
    # Folded, a bare folder's listing stays about one screen (models, landmarks, cameras, metrics, edits).
    assert len(lines) < 85
    every = format_weights(_rows(set()), "/w", show_all=True)
    assert any("direction-bangs" in line for line in every) and len(every) > len(lines)


def test_info_writes_its_result_to_stdout(fixtures_dir: Path) -> None:
    result = runner.invoke(app, ["info", str(fixtures_dir / "single_face.mp4")])
    assert result.exit_code == 0 and "frames" in result.stdout


def test_progress_steps_and_lines() -> None:
    assert [progress_step(n, 20) for n in (0, 1, 2, 3, 19, 20, 25)] == [0, 0, 1, 1, 9, 10, 10]
    assert progress_step(250, None) == 2
    assert progress_line("rendering", 30, 120, 12.0) == "rendering: 30/120 (25%), 12 s elapsed, about 36 s left"
    assert progress_line("rendering", 120, 120, 48.4) == "rendering: 120/120 (100%), 48 s elapsed"
    assert progress_line("aligning", 7, None, 3.0) == "aligning: 7, 3 s elapsed"


def test_progress_prints_lines_when_stderr_is_not_a_terminal() -> None:
    sink = io.StringIO()
    reporter = Reporter(console=Console(file=sink, force_terminal=False, width=80))
    with reporter.progress("inverting", 20) as advance:
        for _ in range(20):
            advance(1)
    lines = sink.getvalue().splitlines()
    assert len(lines) == 10 and lines[0].startswith("inverting: 2/20 (10%)") and "20/20 (100%)" in lines[-1]


def test_a_warning_is_said_once() -> None:
    sink = io.StringIO()
    reporter = Reporter(console=Console(file=sink, force_terminal=False, width=80))
    for message in ("cut.mp4 is truncated", "cut.mp4 is truncated", "another"):
        reporter.warn(message)
    assert sink.getvalue().splitlines() == ["warning: cut.mp4 is truncated", "warning: another"]
