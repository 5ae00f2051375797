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

    # eval_str: this module uses postponed annotations, and Typer reads the signature as given.
    wrapper.__signature__ = inspect.signature(func, eval_str=True)  # type: ignore[attr-defined]
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


@app.command()
@command
def extract(
    video: Annotated[Path, typer.Argument(help="Video file to read.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to create for the PNG frames and frames.json.")],
    every: Annotated[int, typer.Option("--every", min=1, help="Keep one frame in N.")] = 1,
    start: Annotated[float | None, typer.Option("--start", min=0, help="First time to keep, in seconds.")] = None,
    end: Annotated[float | None, typer.Option("--end", min=0, help="Stop before this time, in seconds.")] = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Write a video's frames as PNG files (000000.png, ...) plus frames.json with their timestamps."""
    from nvsvideo.video import extract_frames, probe
    from nvsvideo.video.extract import count_selected

    reporter = Reporter(quiet=quiet, verbose=verbose)
    meta = probe(video)
    total = count_selected(meta, every=every, start=start, end=end)
    with reporter.progress("extracting frames", total=total) as advance:
        result = extract_frames(video, out, every=every, start=start, end=end, info=meta, on_progress=advance)
    if result.warning:
        reporter.warn(result.warning)
    reporter.info(f"wrote {result.frames_written} frames and frames.json to {result.out_dir}")
    if json_out:
        Reporter.emit_json(result.to_dict())


weights_app = typer.Typer(
    help="List, check, convert and fetch the model weight files nvsvideo uses.",
    no_args_is_help=False,
)
app.add_typer(weights_app, name="weights")

WeightsDir = Annotated[
    Path | None,
    typer.Option("--weights", help="Folder of weight files (default: $NVSVIDEO_HOME, else ~/.cache/nvsvideo)."),
]


def _print_weights(weights_dir: Path | None, *, deep: bool, json_out: bool, quiet: bool) -> list[Any]:
    """List every known weight file with its status; returns the rows."""
    import os

    from rich.table import Table

    from nvsvideo.weights import resolve_weights_dir
    from nvsvideo.weights.verify import weights_status

    folder = resolve_weights_dir(weights_dir, os.environ)
    rows = weights_status(folder, os.environ, deep=deep)
    if json_out:
        Reporter.emit_json({"weights_dir": str(folder), "files": [row.to_dict() for row in rows]})
    elif not quiet:
        colour = {"present": "green", "missing": "yellow", "invalid": "red"}
        table = Table(title=f"weights folder: {folder}", title_justify="left")
        for column in ("name", "kind", "status", "path", "download", "for"):
            table.add_column(column, overflow="fold")
        for row in rows:
            status = f"[{colour[row.status]}]{row.status}[/]" + (f"\n{row.detail}" if row.detail else "")
            download = row.entry.url if row.entry.direct else f"{row.entry.url}\n(manual: {row.entry.source})"
            table.add_row(row.entry.name, row.entry.kind, status, str(row.path), download, row.entry.purpose)
        Reporter(quiet=quiet).console.print(table)
    return rows


@weights_app.callback(invoke_without_command=True)
@command
def weights(
    ctx: typer.Context,
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """List every weight file nvsvideo can use, where it is looked for and where to get it."""
    if ctx.invoked_subcommand is None:
        _print_weights(weights_dir, deep=False, json_out=json_out, quiet=quiet)


@weights_app.command("list")
@command
def weights_list(
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """List every weight file nvsvideo can use, where it is looked for and where to get it."""
    _print_weights(weights_dir, deep=False, json_out=json_out, quiet=quiet)


@weights_app.command("verify")
@command
def weights_verify(
    file: Annotated[Path | None, typer.Argument(help="One weight file to check (default: every known file present).")] = None,
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Check weight files: readable without running code, tensor names and shapes as the official ones."""
    from nvsvideo.errors import WeightsError
    from nvsvideo.weights.verify import verify_file

    if file is None:
        rows = _print_weights(weights_dir, deep=True, json_out=json_out, quiet=quiet)
        bad = [row.entry.name for row in rows if row.status == "invalid"]
        if bad:
            raise WeightsError(f"{len(bad)} weight files failed the check ({', '.join(bad)}); replace them")
        return
    result = verify_file(file)
    if json_out:
        Reporter.emit_json({"path": str(file), "ok": result.ok, "detail": result.detail})
    if not result.ok:
        raise WeightsError(f"{file}: {result.detail}")
    Reporter(quiet=quiet).info(f"{file}: ok, {result.detail}")


@weights_app.command("convert")
@command
def weights_convert(
    source: Annotated[Path, typer.Argument(help="EG3D weights: official .pkl, TriPlaneNet .pth, or .safetensors.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output .safetensors (default: beside the input).")] = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Convert EG3D generator weights to nvsvideo's safe format (.safetensors: tensors + config)."""
    from nvsvideo.errors import UsageError
    from nvsvideo.models.eg3d.checkpoint import load_eg3d, save_eg3d

    target = out if out is not None else source.with_suffix(".safetensors")
    if target.suffix != ".safetensors":
        raise UsageError(f"the output must end in .safetensors, not '{target.suffix}'")
    ckpt = load_eg3d(source)
    save_eg3d(ckpt, target, protect=(source,))
    summary = {
        "source": str(source),
        "out": str(target),
        "tensors": len(ckpt.state_dict),
        "parameters": sum(t.numel() for t in ckpt.state_dict.values()),
        "neural_rendering_resolution": ckpt.neural_rendering_resolution,
    }
    Reporter(quiet=quiet).info(f"wrote {target} ({summary['tensors']} tensors, {summary['parameters']:,} values)")
    if json_out:
        Reporter.emit_json(summary)


@weights_app.command("fetch")
@command
def weights_fetch(
    names: Annotated[list[str], typer.Argument(help="Registry names, as listed by `nvsvideo weights`.")],
    weights_dir: WeightsDir = None,
    json_out: Json = False,
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Download known weight files from their official locations (where a direct download exists)."""
    import os

    from nvsvideo.weights import get_weight, resolve_weights_dir
    from nvsvideo.weights.fetch import fetch_weight

    reporter = Reporter(quiet=quiet, verbose=verbose)
    folder = resolve_weights_dir(weights_dir, os.environ)
    entries = [get_weight(name) for name in names]
    paths = {entry.name: str(fetch_weight(entry, folder, os.environ, reporter)) for entry in entries}
    if json_out:
        Reporter.emit_json({"weights_dir": str(folder), "files": paths})


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
