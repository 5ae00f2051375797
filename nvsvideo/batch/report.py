"""Per-video outcomes of a batch: `OUTDIR/report.jsonl`, the table at the end, and the exit code.

Each finished video appends one JSON line to the report with a single `write` on a file opened in
append mode, so a line is never interleaved with another writer's (several `nvsvideo batch` processes
started by xargs or GNU parallel may share one OUTDIR) and an interrupted batch leaves only whole
lines. Runs append; the newest line for an output is its current state.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from rich.table import Table

from nvsvideo.errors import PartialFailure

REPORT_NAME = "report.jsonl"


class Status(str, Enum):
    """Outcome of one video."""

    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class ItemResult:
    """What happened to one video of the batch (one report line)."""

    input: str
    """The input video, as a path."""
    output: str
    """The output file."""
    status: Status
    """ok, skipped or failed."""
    reason: str = ""
    """Why it was skipped or failed, as one sentence; empty when ok."""
    exit_code: int = 0
    """For a failed video, the exit code its error maps to alone (3 input error, 4 no face, 1 bug, ...)."""
    frames: int | None = None
    """Frames written (summed over chunks); None when nothing was produced."""
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds per pipeline stage, as reported by the job function (summed over chunks)."""
    seconds: float = 0.0
    """Wall time of the video's jobs (summed over chunks, so it can exceed the batch's wall time)."""
    attempts: int = 0
    """Times the job (its most retried chunk) was started; above 1 after a worker died."""
    worker: str = ""
    """Worker(s) that ran it."""
    details: dict[str, Any] = field(default_factory=dict)
    """The rest of the job function's summary."""
    options: dict[str, Any] = field(default_factory=dict)
    """The pipeline options asked for; on an ok line, what the output was made with (a later run that
    skips the output compares them with its own)."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


@dataclass
class BatchResult:
    """All outcomes of one `run_batch` call, in input order."""

    items: list[ItemResult]
    """One result per video."""
    report_path: Path
    """The report file the results were appended to."""
    seconds: float = 0.0
    """Wall time of the whole batch."""

    def counts(self) -> dict[str, int]:
        """Number of videos per status, every status present (0 when none)."""
        found = Counter(item.status for item in self.items)
        return {status.value: found[status] for status in Status}

    @property
    def exit_code(self) -> int:
        """0 when every video is ok or skipped; `PartialFailure.exit_code` (7) when any failed."""
        return PartialFailure.exit_code if self.counts()[Status.FAILED.value] else 0

    def raise_for_failures(self) -> None:
        """Raise `PartialFailure` (exit code 7) naming the report when any video failed."""
        failed = self.counts()[Status.FAILED.value]
        if failed:
            raise PartialFailure(
                f"{failed} of {len(self.items)} videos failed; the reasons are in {self.report_path}"
            )


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line to `path` in a single write (see the module docstring) and flush it to disk."""
    line = (json.dumps({**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, default=str) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def read_report(path: Path) -> list[dict[str, Any]]:
    """All records of a report file, oldest first; a missing file is an empty report."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def results_table(items: Sequence[ItemResult], *, title: str = "batch") -> Table:
    """Rich table with one row per video: status, names, frames, time per stage (reasons: `reason_lines`)."""
    table = Table(title=title, title_justify="left", show_lines=False)
    for column in ("status", "input", "output", "frames", "seconds", "stages"):
        table.add_column(
            column, justify="right" if column in {"frames", "seconds"} else "left", overflow="fold"
        )
    styles = {Status.OK: "green", Status.SKIPPED: "dim", Status.FAILED: "red"}
    for item in items:
        table.add_row(
            f"[{styles[item.status]}]{item.status.value}[/]",
            Path(item.input).name,
            Path(item.output).name,
            "" if item.frames is None else str(item.frames),
            f"{item.seconds:.1f}" if item.status is not Status.SKIPPED else "",
            _stages_text(item.stages),
        )
    return table


def reason_lines(items: Sequence[ItemResult]) -> list[str]:
    """One line `input: reason` per video that has a reason, for under the table (as a column, a long reason
    was left one word per line at 80 columns)."""
    return [f"{Path(item.input).name}: {item.reason}" for item in items if item.reason]


def summary_line(result: BatchResult) -> str:
    """One line for the end of a batch: counts, wall time and where the report is."""
    counts = result.counts()
    parts = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    videos = f"{len(result.items)} video{'' if len(result.items) == 1 else 's'}"
    return f"{videos}: {parts or 'nothing to do'} in {result.seconds:.1f} s; report: {result.report_path}"


def _stages_text(stages: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}s" for name, seconds in stages.items())


def merge_stage_times(summaries: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Sum seconds per stage over chunks, keeping the stages in first-seen order."""
    total: dict[str, float] = {}
    for stages in summaries:
        for name, seconds in stages.items():
            total[name] = total.get(name, 0.0) + float(seconds)
    return total
