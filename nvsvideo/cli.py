"""The `nvsvideo` command line: parse, validate, call the library, print. Nothing else lives here.

Conventions shared by every command: `--device`, `--quiet`, `--verbose` (tracebacks only there),
`--json` (a machine summary on stdout; humans' text goes to stderr), and the exit codes of
`nvsvideo.errors`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from nvsvideo import __version__
from nvsvideo.console import Reporter
from nvsvideo.errors import EXIT_CODES, EXIT_INTERRUPTED, NvsError

app = typer.Typer(
    name="nvsvideo",
    help="Re-render and edit portrait videos from new camera viewpoints with EG3D + TriPlaneNet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Exit codes: " + "; ".join(f"{k} {v.split(':')[0]}" for k, v in EXIT_CODES.items()),
)

# Options every command shares. Declared once so they read the same everywhere.
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and warnings on stderr.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="More detail; full tracebacks on errors.")]
Json = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda[:N] | mps. A missing GPU is an error.")]

F = TypeVar("F", bound=Callable[..., Any])


def command(func: F) -> F:
    """Run a command body with the CLI's error contract.

    An `NvsError` becomes one red sentence and its exit code; Ctrl-C exits 130; anything else is a
    bug, reported in one line (with the traceback under --verbose) and exit code 1.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        verbose = bool(kwargs.get("verbose", False))
        reporter = Reporter(quiet=bool(kwargs.get("quiet", False)), verbose=verbose)
        try:
            return func(*args, **kwargs)
        except NvsError as err:
            if verbose:
                reporter.console.print_exception()
            reporter.error(str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            reporter.error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except typer.Exit:
            raise
        except Exception as err:  # noqa: BLE001 - the last line of defence: no raw traceback for users
            if verbose:
                reporter.console.print_exception()
            reporter.error(f"internal error: {type(err).__name__}: {err} (run with --verbose for the traceback)")
            raise typer.Exit(1) from None

    wrapper.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"nvsvideo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Re-render and edit portrait videos from new camera viewpoints."""


@app.command()
@command
def info(
    video: Annotated[Path, typer.Argument(help="Video file to probe.")],
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Show a video's streams: size, exact frame rate, duration, frame count, rotation, audio."""
    from nvsvideo.video import probe

    meta = probe(video)
    if json_out:
        Reporter.emit_json(meta.to_dict())
    else:
        Reporter(quiet=quiet).info(meta.describe())


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
