"""From the options of `nvsvideo batch` to a running batch: the executor, the reporting, the result.

The CLI command parses its options into `BatchArgs` and calls `run_from_args` with the pipeline's
job function and batch-wide options; it then exits with `result.exit_code` (or calls
`result.raise_for_failures()`). Everything here is importable and testable without Typer.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nvsvideo.batch.executors import Executor, ProcessExecutor, RayExecutor, SequentialExecutor, import_ray
from nvsvideo.batch.jobs import ProcessFn
from nvsvideo.batch.report import BatchResult, ItemResult, reason_lines, results_table, summary_line
from nvsvideo.batch.runner import Chunking, run_batch
from nvsvideo.console import Reporter
from nvsvideo.errors import UsageError


@dataclass
class BatchArgs:
    """The execution options of `nvsvideo batch` (the pipeline's own options travel separately)."""

    inputs: Sequence[str]
    """INPUTS: files, folders, glob patterns, manifests."""
    outdir: Path
    """-o/--out: output folder; the report goes there too."""
    overwrite: bool = False
    """--overwrite: redo videos whose output exists."""
    recursive: bool = False
    """--recursive: descend into sub-folders of folder inputs."""
    device: str = "auto"
    """--device: one spec, or a comma-separated list handed to the workers in turn (`cuda:0,cuda:1`)."""
    workers: int | None = None
    """--workers: processes on this machine (default 1: in this process); with --ray, the number of
    actors (default: as many as the cluster's resources fit)."""
    ray: str | None = None
    """--ray [ADDRESS]: None: no Ray; "" : start a local instance; else the cluster address."""
    ray_cpus: int | None = None
    """--ray-cpus: CPUs of a local Ray instance (default: all)."""
    cpus_per_task: float = 1.0
    """--cpus-per-task: CPUs each Ray actor reserves."""
    gpus_per_task: float = 0.0
    """--gpus-per-task: GPUs each Ray actor reserves (e.g. 0.5 puts two actors on a GPU)."""
    retries: int = 1
    """--retries: resubmissions of a job whose worker died."""
    chunk_frames: int | None = None
    """--chunk-frames K: process long videos as chunks of K frames (each a job)."""
    json_lines: bool = False
    """--json: one JSON line per video on stdout."""
    quiet: bool = False
    """--quiet: no progress and no table."""
    verbose: bool = False
    """--verbose: also forward Ray workers' logs."""


def make_executor(args: BatchArgs) -> Executor:
    """The executor the arguments ask for: Ray actors, a process pool, or this process.

    Raises:
        UsageError: contradicting options, or --ray without Ray installed.
        DeviceError: a requested GPU that is not there.
    """
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")
    if args.ray is not None:
        import_ray()  # fail now, with the install hint, not after planning the batch
        if args.ray and args.ray_cpus is not None:
            raise UsageError(
                "--ray-cpus sizes a local Ray instance; it cannot be combined with a cluster ADDRESS"
            )
        return RayExecutor(
            address=args.ray or None,
            num_cpus=args.ray_cpus,
            cpus_per_task=args.cpus_per_task,
            gpus_per_task=args.gpus_per_task,
            workers=args.workers,
            retries=args.retries,
            log_to_driver=args.verbose,
        )
    workers = args.workers or 1
    devices = worker_devices(args.device, workers)
    if workers == 1:
        return SequentialExecutor(device=devices[0])
    return ProcessExecutor(workers=workers, devices=devices, retries=args.retries)


def worker_devices(spec: str, workers: int) -> list[str]:
    """Device of each local worker: `cuda`/`auto` on a multi-GPU machine spread over `cuda:0..N-1`.

    A comma-separated list (`cuda:0,cuda:2`) is handed out in turn; a single explicit device
    (`cuda:1`, `cpu`) is shared by all workers. Every device is checked, so a missing GPU fails now.

    Raises:
        UsageError, DeviceError: as `resolve_device`.
    """
    from nvsvideo.device import resolve_device

    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise UsageError("--device is empty: use auto, cpu, cuda, cuda:N, mps or a list like cuda:0,cuda:1")
    resolved = [resolve_device(name) for name in names]
    if len(names) == 1 and names[0].lower() in {"auto", "cuda"} and resolved[0].type == "cuda":
        import torch

        count = torch.cuda.device_count()
        return [f"cuda:{i % count}" for i in range(workers)]
    return [str(resolved[i % len(resolved)]) for i in range(workers)]


def run_from_args(
    args: BatchArgs,
    process_fn: ProcessFn,
    options: Mapping[str, Any],
    *,
    chunking: Callable[[int], Chunking] | None = None,
    suffix: str = ".mp4",
    stdout: TextIO | None = None,
) -> BatchResult:
    """Run the batch the arguments describe, then print the table (stderr) unless quiet.

    Args:
        args: the parsed execution options.
        process_fn: the pipeline's job function.
        options: the pipeline's batch-wide options (manifest rows may override them).
        chunking: builds the pipeline's `Chunking` for a chunk size, called only with --chunk-frames;
            None: the pipeline cannot run in chunks.
        suffix: suffix of derived output names.
        stdout: where --json lines go (default: `sys.stdout`).
    """
    if args.chunk_frames is not None and chunking is None:
        raise UsageError("--chunk-frames is not supported by this command")
    chunks = chunking(args.chunk_frames) if chunking is not None and args.chunk_frames is not None else None
    reporter = Reporter(quiet=args.quiet, verbose=args.verbose)
    if chunks is not None and args.ray is None and (args.workers or 1) == 1:
        reporter.warn("--chunk-frames splits videos for several workers; with one, the chunks run one after "
                      "another (add --workers N or --ray)")
    out = stdout if stdout is not None else sys.stdout

    def emit(result: ItemResult) -> None:
        out.write(json_line(result))
        out.flush()

    result = run_batch(
        args.inputs,
        args.outdir,
        options,
        process_fn,
        executor=make_executor(args),
        overwrite=args.overwrite,
        recursive=args.recursive,
        suffix=suffix,
        chunking=chunks,
        reporter=reporter,
        on_result=emit if args.json_lines else None,
    )
    if not args.quiet:
        reporter.table(results_table(result.items, title=f"nvsvideo batch: {args.outdir}"))
        for line in reason_lines(result.items):
            reporter.info(line)
    reporter.info(summary_line(result))
    return result


def json_line(result: ItemResult) -> str:
    """One compact JSON line for a video's result (what `--json` prints, one per video)."""
    return json.dumps(result.to_dict(), default=str) + "\n"
