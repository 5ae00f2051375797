"""Batch throughput: 1 worker vs 2 workers on this machine, and what Ray costs over the local executor.

    python bench/batch.py [--videos 8] [--frames 32] [--size 96] [--work 60] [--job MODULE:FUNCTION] [--no-ray] [--json]

The same batch (synthetic videos, the same job function) runs on a 1-process pool, a 2-process pool,
and a local 2-CPU Ray instance with 2 actors. Throughput is output frames per second of wall time,
worker start-up included (it is part of what a user waits for); Ray's own start-up (`ray.init`) is
also shown separately. The default job is the CPU-bound `nvsvideo.batch.synthetic:blur_job`;
`--job` takes any job function with the same contract (inputs are `.npy` frame stacks). Every
executor's outputs are checked to be byte-identical to the 1-worker run. The machine's load average is
printed with the numbers: on a shared machine, 2 workers cannot be twice as fast as 1.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from nvsvideo.batch import Executor, ProcessExecutor, ProcessFn, RayExecutor, run_batch
from nvsvideo.batch import synthetic as syn


def load_job(spec: str) -> ProcessFn:
    """`package.module:function` -> the function."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def make_videos(folder: Path, videos: int, frames: int, size: int) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(videos):
        path = folder / f"clip{i:02d}{syn.SUFFIX}"
        syn.write_frames(path, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))
        paths.append(str(path))
    return paths


def timed_batch(
    inputs: list[str], outdir: Path, job: ProcessFn, work: int, executor: Executor
) -> dict[str, float]:
    """Run the batch once: frames/s over the whole run (worker start-up included), mean seconds per job."""
    result = run_batch(inputs, outdir, {"work": work}, job, executor=executor, suffix=syn.SUFFIX)
    if result.exit_code != 0:
        raise RuntimeError(f"the benchmark batch failed: {[i.reason for i in result.items if i.reason]}")
    frames = sum(item.frames or 0 for item in result.items)
    job_seconds = sum(item.seconds for item in result.items) / len(result.items)
    return {
        "seconds": result.seconds,
        "frames": frames,
        "fps": frames / result.seconds,
        "job_seconds": job_seconds,
    }


def same_outputs(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob(f"*{syn.SUFFIX}"))
    return names == sorted(p.name for p in b.glob(f"*{syn.SUFFIX}")) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def measure(
    videos: int, frames: int, size: int, work: int, job: ProcessFn, with_ray: bool
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nvsvideo-bench-batch-") as tmp:
        work_dir = Path(tmp)
        inputs = make_videos(work_dir / "in", videos, frames, size)
        one = timed_batch(inputs, work_dir / "w1", job, work, ProcessExecutor(workers=1))
        two = timed_batch(inputs, work_dir / "w2", job, work, ProcessExecutor(workers=2))
        assert same_outputs(work_dir / "w1", work_dir / "w2"), "2 workers wrote different outputs than 1"
        result = {
            "videos": videos,
            "frames_per_video": frames,
            "fps_1_worker": one["fps"],
            "fps_2_workers": two["fps"],
            "speedup_2_vs_1": two["fps"] / one["fps"],
            "seconds_2_workers": two["seconds"],
            "job_seconds_1_worker": one["job_seconds"],
            "job_seconds_2_workers": two["job_seconds"],
            "load_average_1min": os.getloadavg()[0],
            "cpus": os.cpu_count() or 0,
        }
        if with_ray:
            ray_executor = RayExecutor(num_cpus=2, workers=2)
            ray = timed_batch(inputs, work_dir / "ray", job, work, ray_executor)
            assert same_outputs(work_dir / "w1", work_dir / "ray"), (
                "Ray wrote different outputs than 1 worker"
            )
            result |= {
                "fps_ray_2_actors": ray["fps"],
                "seconds_ray": ray["seconds"],
                "seconds_ray_init": ray_executor.startup_seconds,
                "ray_overhead_seconds": ray["seconds"] - two["seconds"],
                "ray_overhead_seconds_after_init": ray["seconds"]
                - ray_executor.startup_seconds
                - two["seconds"],
            }
    return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the numbers (or JSON with --json) and return them.

    `argv` defaults to no arguments (not sys.argv), so a runner script can call `main()` directly.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8, help="videos in the batch")
    parser.add_argument("--frames", type=int, default=32, help="frames per video")
    parser.add_argument("--size", type=int, default=96, help="square frame size in pixels")
    parser.add_argument("--work", type=int, default=60, help="blur passes per frame (the job's CPU cost)")
    parser.add_argument(
        "--job", default="nvsvideo.batch.synthetic:blur_job", help="job function, MODULE:FUNCTION"
    )
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv if argv is not None else [])
    with_ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    result = measure(args.videos, args.frames, args.size, args.work, load_job(args.job), with_ray)
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(
        f"batch of {args.videos} videos x {args.frames} frames ({args.size}x{args.size}), job {args.job}, work {args.work}"
    )
    print(f"machine: {result['cpus']} CPUs, load average {result['load_average_1min']:.1f} at the end")
    print(
        f"1 worker   {result['fps_1_worker']:8.1f} frames/s   {result['job_seconds_1_worker']:.2f} s per video"
    )
    print(
        f"2 workers  {result['fps_2_workers']:8.1f} frames/s   {result['job_seconds_2_workers']:.2f} s per video"
        f"   speed-up x{result['speedup_2_vs_1']:.2f}"
    )
    print(
        "(a video taking longer with 2 workers than with 1 means the CPUs are not free: the machine is shared)"
    )
    if with_ray:
        print(
            f"Ray, 2 actors {result['fps_ray_2_actors']:5.1f} frames/s   {result['seconds_ray']:.1f} s "
            f"(ray.init {result['seconds_ray_init']:.1f} s) vs 2 workers {result['seconds_2_workers']:.1f} s"
        )
        print(
            f"Ray overhead: {result['ray_overhead_seconds']:+.1f} s in all, "
            f"{result['ray_overhead_seconds_after_init']:+.1f} s after ray.init"
        )
    else:
        print("Ray: not measured (not installed, or --no-ray)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
