"""Batch throughput of `nvsvideo batch`: 1 worker vs 2 workers on this machine, what Ray costs over them,
and what `--chunk-frames` gains on one long video.

    python bench/batch.py [--videos 4] [--frames 4] [--faces 1] [--long-frames 32] [--no-ray] [--json]

The real rerender pipeline (`nvsvideo.pipelines.batch.rerender_job`: decode, align, invert, render,
encode) with TINY random models (tests/tiny_models.py) runs the same batch of short clips cut from the
shared face clip, each with `--faces` face frames (the rest blanked, so they pass through), on a 1-process
pool, a 2-process pool and a local 2-CPU Ray instance with 2 actors. Every run starts from an empty
OUTDIR, so each one aligns and inverts everything. Throughput is output frames per second of wall time,
worker start-up and model loading included (it is part of what a user waits for); Ray's own start-up
(`ray.init`) is shown separately. The 2-worker outputs are checked to be byte-identical to the 1-worker
ones; Ray's are compared pixel by pixel, since an actor runs torch on 1 thread and float rounding then
differs slightly. The load average is printed with the numbers: on a shared machine, 2 workers cannot be
twice as fast as 1.

The long-video part renders one clip of `--long-frames` frames (a face in every other one) on 2 workers,
whole (one worker does everything) and with `--chunk-frames` (one worker aligns and inverts, then both
render chunks). Both runs encode losslessly (crf 0), so their outputs must decode to identical frames.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from nvsvideo.batch import Chunking, Executor, ProcessExecutor, RayExecutor, run_batch
from nvsvideo.pipelines.batch import BatchJobOptions, rerender_chunking, rerender_job
from nvsvideo.video import VideoReader

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "fixtures" / "single_face.mp4"


def tests_module(name: str) -> ModuleType:
    """A helper module of tests/ (tiny models, clip helpers), imported by path."""
    spec = importlib.util.spec_from_file_location(f"tests_{name}", ROOT / "tests" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_batch(folder: Path, videos: int, frames: int, faces: int) -> tuple[list[str], dict[str, Any]]:
    """Clips of `frames` frames whose first `faces` frames show the face, tiny models; (inputs, options)."""
    clips, tiny = tests_module("face_clips"), tests_module("tiny_models")
    folder.mkdir(parents=True)
    inputs = [
        str(clips.face_clip_with_gap(CLIP, folder / f"clip{i:02d}.mp4", blank=range(faces, frames), frames=frames))
        for i in range(videos)
    ]
    options = BatchJobOptions(
        triplanenet=str(tiny.save_tiny_triplanenet(folder / "tpn.pt", "v2")),
        eg3d=str(tiny.save_tiny_eg3d(folder / "eg3d.safetensors")),
        landmarks="dlib",
        max_gap=0,
        samples=1.0,
        batch_size=2,
    )
    return inputs, options.to_dict()


def timed_batch(inputs: list[str], outdir: Path, options: dict[str, Any], executor: Executor,
                chunking: Chunking | None = None) -> dict[str, float]:
    """Run the batch once: frames/s over the whole run (worker start-up included), mean seconds per video."""
    result = run_batch(inputs, outdir, options, rerender_job, executor=executor, chunking=chunking)
    if result.exit_code != 0:
        raise RuntimeError(f"the benchmark batch failed: {[i.reason for i in result.items if i.reason]}")
    frames = sum(item.frames or 0 for item in result.items)
    return {
        "seconds": result.seconds,
        "frames": frames,
        "fps": frames / result.seconds,
        "job_seconds": sum(item.seconds for item in result.items) / len(result.items),
    }


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.mp4"))}


def pixel_differences(a: Path, b: Path) -> tuple[int, float]:
    """(largest, mean) absolute difference of decoded pixel values between same-named videos in two folders."""
    diffs = []
    for name in outputs(a):
        x, y = (np.concatenate([batch.frames for batch in VideoReader(d / name)]).astype(int) for d in (a, b))
        if x.shape != y.shape:
            raise RuntimeError(f"{name}: {x.shape} frames in one run, {y.shape} in the other")
        diffs.append(np.abs(x - y).ravel())
    every = np.concatenate(diffs)
    return int(every.max()), float(every.mean())


def measure_long_video(work: Path, options: dict[str, Any], frames: int, chunk: int) -> dict[str, float]:
    """One long video on 2 workers, whole and in chunks of `chunk` frames (lossless, so outputs must match)."""
    clips = tests_module("face_clips")
    (work / "long").mkdir()
    clip = clips.face_clip_with_gap(CLIP, work / "long" / "long.mp4", blank=range(1, frames, 2), frames=frames)
    lossless = {**options, "crf": 0}
    whole = timed_batch([str(clip)], work / "long_whole", lossless, ProcessExecutor(workers=2))
    chunking = rerender_chunking(chunk)
    chunked = timed_batch([str(clip)], work / "long_chunked", lossless, ProcessExecutor(workers=2), chunking=chunking)
    largest, _ = pixel_differences(work / "long_whole", work / "long_chunked")
    return {
        "long_frames": frames,
        "long_chunk_frames": chunking.frames,
        "long_seconds_whole": whole["seconds"],
        "long_seconds_chunked": chunked["seconds"],
        "long_speedup_chunked": whole["seconds"] / chunked["seconds"],
        "long_max_pixel_difference": largest,
    }


def measure(videos: int, frames: int, faces: int, with_ray: bool, long_frames: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nvsvideo-bench-batch-") as tmp:
        work = Path(tmp)
        inputs, options = make_batch(work / "in", videos, frames, faces)
        one = timed_batch(inputs, work / "w1", options, ProcessExecutor(workers=1))
        two = timed_batch(inputs, work / "w2", options, ProcessExecutor(workers=2))
        if outputs(work / "w1") != outputs(work / "w2"):
            raise RuntimeError("2 workers wrote different outputs than 1")
        result = {
            "videos": videos,
            "frames_per_video": frames,
            "face_frames_per_video": faces,
            "fps_1_worker": one["fps"],
            "fps_2_workers": two["fps"],
            "speedup_2_vs_1": two["fps"] / one["fps"],
            "seconds_1_worker": one["seconds"],
            "seconds_2_workers": two["seconds"],
            "job_seconds_1_worker": one["job_seconds"],
            "job_seconds_2_workers": two["job_seconds"],
        }
        if with_ray:
            ray_executor = RayExecutor(num_cpus=2, workers=2)
            ray = timed_batch(inputs, work / "ray", options, ray_executor)
            largest, mean = pixel_differences(work / "w1", work / "ray")
            result |= {
                "fps_ray_2_actors": ray["fps"],
                "seconds_ray": ray["seconds"],
                "seconds_ray_init": ray_executor.startup_seconds,
                "ray_overhead_seconds": ray["seconds"] - two["seconds"],
                "ray_max_pixel_difference": largest,
                "ray_mean_pixel_difference": mean,
            }
        if long_frames:
            result |= measure_long_video(work, options, long_frames, chunk=8)
        result |= {"load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count() or 0}
    return result


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the numbers (or JSON with --json) and return them.

    `argv` defaults to no arguments (not sys.argv), so a runner script can call `main()` directly.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4, help="videos in the batch")
    parser.add_argument("--frames", type=int, default=4, help="frames per video")
    parser.add_argument("--faces", type=int, default=1, help="frames per video that show the face (the costly ones)")
    parser.add_argument("--long-frames", type=int, default=32,
                        help="frames of the long video, run whole and in chunks of 8 (0: skip)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray measurement")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv if argv is not None else [])
    if not CLIP.is_file():
        raise SystemExit(f"the shared face clip is not at {CLIP}")
    if not 1 <= args.faces <= args.frames:
        raise SystemExit("--faces must be between 1 and --frames")
    with_ray = not args.no_ray and importlib.util.find_spec("ray") is not None
    result = measure(args.videos, args.frames, args.faces, with_ray, args.long_frames)
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"real rerender pipeline, tiny random models: {args.videos} videos x {args.frames} frames "
          f"({args.faces} with a face), 640x360")
    print(f"machine: {result['cpus']} CPUs, load average {result['load_average_1min']:.1f} at the end")
    print(f"1 worker   {result['fps_1_worker']:6.2f} frames/s   {result['seconds_1_worker']:5.1f} s in all   "
          f"{result['job_seconds_1_worker']:.1f} s per video")
    print(f"2 workers  {result['fps_2_workers']:6.2f} frames/s   {result['seconds_2_workers']:5.1f} s in all   "
          f"{result['job_seconds_2_workers']:.1f} s per video   speed-up x{result['speedup_2_vs_1']:.2f}")
    print("(worker start-up and model loading are included; a video taking longer with 2 workers than with 1 "
          "means the CPUs are not free)")
    if with_ray:
        print(f"Ray, 2 actors {result['fps_ray_2_actors']:3.2f} frames/s   {result['seconds_ray']:5.1f} s in all "
              f"(ray.init {result['seconds_ray_init']:.1f} s); overhead vs 2 workers {result['ray_overhead_seconds']:+.1f} s")
        print(f"Ray outputs vs 1 worker: pixel values differ by {result['ray_mean_pixel_difference']:.4f} on average, "
              f"{result['ray_max_pixel_difference']} at most (float rounding: an actor runs torch on 1 thread)")
    else:
        print("Ray: not measured (not installed, or --no-ray)")
    if args.long_frames:
        print(f"one {result['long_frames']}-frame video on 2 workers: whole {result['long_seconds_whole']:.1f} s, "
              f"--chunk-frames {result['long_chunk_frames']} {result['long_seconds_chunked']:.1f} s "
              f"(x{result['long_speedup_chunked']:.2f}); outputs differ by at most "
              f"{result['long_max_pixel_difference']} pixel levels (lossless encode: 0 expected)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
