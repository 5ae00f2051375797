"""`--ray`: a local Ray instance with 2 CPUs runs the batch on actors, retries dead workers, matches local runs.

One Ray instance is started for the whole module (its start-up time is printed) and shut down at
the end. Job functions defined here are shipped to the workers by value, since Ray workers cannot
import test modules.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nvsvideo.batch import (
    BatchArgs,
    Chunking,
    JobSpec,
    RayExecutor,
    SequentialExecutor,
    Status,
    WorkerContext,
    make_executor,
    read_report,
    run_batch,
)
from nvsvideo.errors import InputError, UsageError

import batch_jobs as syn

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nvsvideo[ray]'); CI installs it")


@pytest.fixture(scope="module")
def ray_session() -> Iterator[float]:
    """A local 2-CPU Ray instance for this module; yields how long `ray.init` took, in seconds."""
    # Test modules are not importable in the actors: ship their functions by value.
    for module in (sys.modules[__name__], syn):
        ray.cloudpickle.register_pickle_by_value(module)
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    seconds = time.perf_counter() - start
    print(f"\nlocal Ray instance (2 CPUs) started in {seconds:.1f} s", file=sys.stderr)
    yield seconds
    ray.shutdown()
    for module in (sys.modules[__name__], syn):
        ray.cloudpickle.unregister_pickle_by_value(module)


def die_once_job(spec: JobSpec, ctx: WorkerContext) -> dict:
    """Kill the actor process the first time it sees `b` (the marker file remembers), then work normally."""
    marker = Path(spec.options["marker"])
    if spec.input.stem == "b" and not marker.exists():
        marker.touch()
        os._exit(1)
    return syn.blur_job(spec, ctx)


def three_videos(folder: Path) -> list[str]:
    """a and b are good frame files; c is corrupt."""
    folder.mkdir(parents=True)
    for seed, name in enumerate("ab"):
        syn.write_frames(
            folder / f"{name}.npy", np.random.default_rng(seed).integers(0, 256, (6, 8, 8, 3), np.uint8)
        )
    (folder / "c.npy").write_bytes(b"\x93NUMPY truncated")
    return [str(folder / f"{name}.npy") for name in "abc"]


def run(inputs: list[str], out: Path, executor, fn=syn.blur_job, **kwargs):
    return run_batch(
        inputs, out, {"work": 2, **kwargs.pop("options", {})}, fn, executor=executor, suffix=".npy", **kwargs
    )


def test_batch_on_ray_reports_the_corrupt_video_skips_on_rerun_and_matches_local(
    ray_session: float, tmp_path: Path
) -> None:
    inputs = three_videos(tmp_path / "in")
    out = tmp_path / "ray"
    executor = RayExecutor(retries=1)
    result = run(inputs, out, executor)
    assert (
        executor.startup_seconds == 0.0 and ray.is_initialized()
    )  # joined the running session, left it running
    assert [i.status for i in result.items] == [Status.OK, Status.OK, Status.FAILED]
    assert result.exit_code == 7
    failed = result.items[2]
    assert failed.exit_code == InputError.exit_code and "c.npy is not a readable frame file" in failed.reason
    assert sorted(p.name for p in out.glob("*.npy")) == ["a.npy", "b.npy"]
    assert all(i.worker.startswith("ray-") and i.details["loads"] == 1 for i in result.items[:2])
    # The report is written in completion order.
    assert {Path(r["input"]).name: r["status"] for r in read_report(out / "report.jsonl")} == {
        "a.npy": "ok",
        "b.npy": "ok",
        "c.npy": "failed",
    }

    again = run(inputs, out, RayExecutor())
    assert [i.status for i in again.items] == [Status.SKIPPED, Status.SKIPPED, Status.FAILED]
    assert again.exit_code == 7

    local = run(inputs, tmp_path / "local", SequentialExecutor())
    assert [i.status for i in local.items] == [i.status for i in result.items]
    for name in ("a.npy", "b.npy"):
        assert (out / name).read_bytes() == (tmp_path / "local" / name).read_bytes()


def test_a_task_whose_actor_dies_is_retried_and_the_batch_completes(
    ray_session: float, tmp_path: Path
) -> None:
    inputs = three_videos(tmp_path / "in")[:2]
    marker = tmp_path / "died-once"
    result = run(
        inputs, tmp_path / "out", RayExecutor(retries=1), fn=die_once_job, options={"marker": str(marker)}
    )
    assert marker.exists()
    assert result.exit_code == 0, [(i.input, i.status, i.reason, i.attempts) for i in result.items]
    assert {Path(i.input).stem: i.attempts for i in result.items} == {"a": 1, "b": 2}
    expected = run(inputs, tmp_path / "local", SequentialExecutor())
    assert expected.exit_code == 0
    assert (tmp_path / "out/b.npy").read_bytes() == (tmp_path / "local/b.npy").read_bytes()


def test_chunks_of_a_video_run_as_ray_tasks_and_join_into_the_same_output(
    ray_session: float, tmp_path: Path
) -> None:
    inputs = three_videos(tmp_path / "in")[:1]
    chunking = Chunking(frames=2, count_frames=syn.count_frames, merge=syn.merge_parts)
    chunked = run(inputs, tmp_path / "chunked", RayExecutor(), chunking=chunking)
    whole = run(inputs, tmp_path / "whole", SequentialExecutor())
    assert chunked.items[0].details["chunks"] == 3 and chunked.items[0].frames == 6
    assert (tmp_path / "chunked/a.npy").read_bytes() == (tmp_path / "whole/a.npy").read_bytes()
    assert whole.exit_code == 0


def test_resource_requests_the_cluster_cannot_meet_fail_clearly(ray_session: float) -> None:
    assert RayExecutor(cpus_per_task=0.5).capacity() == 4
    with pytest.raises(UsageError, match="cannot run a task needing 1 CPUs and 1 GPUs"):
        RayExecutor(gpus_per_task=1).capacity()


def test_ray_options_build_a_ray_executor() -> None:
    executor = make_executor(BatchArgs(inputs=["a.mp4"], outdir=Path("out"), ray="", ray_cpus=2, workers=3))
    assert isinstance(executor, RayExecutor)
    assert (executor.address, executor.num_cpus, executor.workers) == (None, 2, 3)
    with pytest.raises(UsageError, match="--ray-cpus"):
        make_executor(BatchArgs(inputs=["a.mp4"], outdir=Path("out"), ray="auto", ray_cpus=2))
