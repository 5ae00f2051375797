"""`--workers N`: the process-pool executor gives the same outputs, pins devices and survives dying workers.

Job functions used by pool workers must be importable by name: spawn children import this module
(pytest puts tests/ on sys.path, which the children inherit).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from nvsvideo.batch import JobSpec, ProcessExecutor, SequentialExecutor, Status, WorkerContext, run_batch

import batch_jobs as syn


def die_once_job(spec: JobSpec, ctx: WorkerContext) -> dict:
    """Kill the worker process the first time it sees `b` (the marker file remembers), then work normally."""
    marker = Path(spec.options["marker"])
    if spec.input.stem == "b" and not marker.exists():
        marker.touch()
        os._exit(1)
    return syn.blur_job(spec, ctx)


def always_die_job(spec: JobSpec, ctx: WorkerContext) -> dict:
    if spec.input.stem == "b":
        os._exit(1)
    return syn.blur_job(spec, ctx)


def videos(folder: Path, count: int = 4) -> list[str]:
    paths = []
    for i, name in enumerate("abcdefgh"[:count]):
        path = folder / f"{name}.npy"
        syn.write_frames(path, np.random.default_rng(i).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def run(inputs: list[str], out: Path, fn, executor, **options) -> object:
    return run_batch(inputs, out, {"work": 2, **options}, fn, executor=executor, suffix=".npy")


def test_two_workers_match_one_process_and_keep_models_per_worker(tmp_path: Path) -> None:
    inputs = videos(tmp_path / "in")
    local = run(inputs, tmp_path / "seq", syn.blur_job, SequentialExecutor())
    pooled = run(
        inputs, tmp_path / "pool", syn.blur_job, ProcessExecutor(workers=2, devices=["dev-a", "dev-b"])
    )
    assert pooled.exit_code == 0 and [i.status for i in pooled.items] == [Status.OK] * 4
    for name in "abcd":
        assert (tmp_path / f"pool/{name}.npy").read_bytes() == (tmp_path / f"seq/{name}.npy").read_bytes()
    # Each worker keeps its device for its lifetime and loads its "model" once, whatever it runs.
    pairs = {(i.worker, i.details["device"]) for i in pooled.items}
    assert pairs <= {("proc-0", "dev-a"), ("proc-1", "dev-b")}
    assert all(i.details["loads"] == 1 for i in pooled.items)
    assert local.items[0].worker == "main"


def test_a_dead_worker_is_replaced_and_its_job_retried(tmp_path: Path) -> None:
    inputs = videos(tmp_path / "in", count=3)
    marker = tmp_path / "died-once"
    result = run(
        inputs, tmp_path / "out", die_once_job, ProcessExecutor(workers=2, retries=1), marker=str(marker)
    )
    assert marker.exists()
    assert result.exit_code == 0
    attempts = {Path(i.input).stem: i.attempts for i in result.items}
    assert attempts == {"a": 1, "b": 2, "c": 1}


def test_a_job_that_always_kills_its_worker_fails_alone(tmp_path: Path) -> None:
    inputs = videos(tmp_path / "in", count=3)
    result = run(inputs, tmp_path / "out", always_die_job, ProcessExecutor(workers=2, retries=1))
    status = {Path(i.input).stem: i for i in result.items}
    assert status["a"].status is Status.OK and status["c"].status is Status.OK
    assert status["b"].status is Status.FAILED and status["b"].attempts == 2
    assert status["b"].reason.startswith("the worker died while processing it (2 attempt(s))")
    assert result.exit_code == 7
