"""One reporting object for humans (stderr, rich) and scripts (JSON on stdout).

It is created by the CLI and passed down to pipelines; library code never prints directly.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table


@dataclass
class Reporter:
    """Human messages and progress bars go to stderr; `emit_json` writes the machine summary to stdout."""

    quiet: bool = False
    verbose: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))
    _warned: set[str] = field(default_factory=set, init=False, repr=False)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(escape(message), soft_wrap=True)

    def debug(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.console.print(f"[dim]{escape(message)}[/dim]", soft_wrap=True)

    def warn(self, message: str) -> None:
        # Warnings survive --quiet: they tell the user the output may not be what they expect. Each is
        # said once: stages that read the same file (align, then render) meet the same damage.
        if message in self._warned:
            return
        self._warned.add(message)
        self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)

    def error(self, message: str) -> None:
        self.console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Context yielding `advance(n)`; shows a bar with ETA unless quiet.

        When stderr is not a terminal (a log file, CI) a live bar would print nothing until the end,
        so plain lines are written instead, one per tenth of the work.
        """
        if self.quiet:
            yield lambda n=1: None
            return
        if not self.console.is_terminal:
            started, done, shown = time.monotonic(), 0, 0

            def log(n: int = 1) -> None:
                nonlocal done, shown
                done += n
                step = progress_step(done, total)
                if step > shown:
                    shown = step
                    self.console.print(progress_line(description, done, total, time.monotonic() - started),
                                       soft_wrap=True, markup=False)

            yield log
            return
        columns = [
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        ]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda n=1: bar.advance(task, n)

    def table(self, table: Table) -> None:
        """Print a table (stderr): drawn with boxes on a terminal; in a log file or pipe, plain columns
        without box characters, wrapping or trailing spaces."""
        if self.console.is_terminal:
            self.console.print(table)
            return
        table.box, table.pad_edge = None, False
        plain = Console(width=10_000, no_color=True, highlight=False, file=io.StringIO())
        plain.print(table)
        for line in plain.file.getvalue().splitlines():
            self.console.print(line.rstrip(), markup=False, highlight=False, soft_wrap=True)

    @staticmethod
    def emit_json(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        sys.stdout.flush()


def progress_step(done: int, total: int | None) -> int:
    """Which tenth of the work `done` items reach (0..10); without a total, one step per 100 items."""
    if total is None or total <= 0:
        return done // 100
    return min(10, done * 10 // total)


def progress_line(description: str, done: int, total: int | None, elapsed: float) -> str:
    """One plain progress line, e.g. 'rendering: 30/120 (25%), 12 s elapsed, about 36 s left'."""
    if total is None or total <= 0:
        return f"{description}: {done}, {elapsed:.0f} s elapsed"
    # The ETA assumes the rate so far continues.
    eta = f", about {elapsed * (total - done) / done:.0f} s left" if 0 < done < total else ""
    return f"{description}: {done}/{total} ({100 * done // total}%), {elapsed:.0f} s elapsed{eta}"


def plural(count: int, noun: str) -> str:
    """`1 frame`, `2 frames`: a count with its noun (a regular plural)."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
