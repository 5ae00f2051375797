"""One reporting object for humans (stderr, rich) and scripts (JSON on stdout).

It is created by the CLI and passed down to pipelines; library code never prints directly.
"""

from __future__ import annotations

import contextlib
import json
import sys
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


@dataclass
class Reporter:
    """Human messages and progress bars go to stderr; `emit_json` writes the machine summary to stdout."""

    quiet: bool = False
    verbose: bool = False
    console: Console = field(default_factory=lambda: Console(stderr=True, highlight=False))

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(escape(message), soft_wrap=True)

    def debug(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.console.print(f"[dim]{escape(message)}[/dim]", soft_wrap=True)

    def warn(self, message: str) -> None:
        # Warnings survive --quiet: they tell the user the output may not be what they expect.
        self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)

    def error(self, message: str) -> None:
        self.console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """Context yielding `advance(n)`; shows a bar with ETA unless quiet."""
        if self.quiet:
            yield lambda n=1: None
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

    @staticmethod
    def emit_json(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        sys.stdout.flush()
