"""Many videos at once: `nvsvideo batch` on this machine (in-process or a process pool) or on Ray.

A pipeline provides a job function (`nvsvideo.batch.jobs`); `run_batch` expands the INPUTS, names
the outputs, skips finished ones, runs the jobs on an executor and writes `OUTDIR/report.jsonl`.
"""

from nvsvideo.batch.cli_args import BatchArgs, json_line, make_executor, run_from_args, worker_devices
from nvsvideo.batch.executors import (
    Executor,
    JobOutcome,
    ProcessExecutor,
    RayExecutor,
    SequentialExecutor,
    run_job,
)
from nvsvideo.batch.inputs import VIDEO_EXTENSIONS, BatchItem, coerce_options, expand_inputs, read_manifest
from nvsvideo.batch.jobs import FrameRange, JobSpec, ProcessFn, WorkerContext
from nvsvideo.batch.naming import assign_outputs
from nvsvideo.batch.report import REPORT_NAME, BatchResult, ItemResult, Status, read_report, results_table
from nvsvideo.batch.runner import Chunking, frame_chunks, run_batch

__all__ = [
    "REPORT_NAME",
    "VIDEO_EXTENSIONS",
    "BatchArgs",
    "BatchItem",
    "BatchResult",
    "Chunking",
    "Executor",
    "FrameRange",
    "ItemResult",
    "JobOutcome",
    "JobSpec",
    "ProcessExecutor",
    "ProcessFn",
    "RayExecutor",
    "SequentialExecutor",
    "Status",
    "WorkerContext",
    "assign_outputs",
    "coerce_options",
    "expand_inputs",
    "frame_chunks",
    "json_line",
    "make_executor",
    "read_manifest",
    "read_report",
    "results_table",
    "run_batch",
    "run_from_args",
    "run_job",
    "worker_devices",
]
