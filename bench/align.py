"""Face alignment throughput on the real talking-head clip: dlib landmarks, tracking, 512 crop, head pose.

    python bench/align.py [--loops 3] [--batch 16] [--json]

The clip (640x360, 72 frames) is read `--loops` times back to back as one long stream, so the
tracker and the queue of frames behind it see a video `--loops` times longer. Reported: decode-only
frames/s (the baseline), landmarks-only frames/s, and the whole per-frame path (decode, landmarks,
tracking, crop, pose) against the 15 frames/s target; peak memory after the first pass and
after the last one shows whether memory grows with the video's length.

The 1080p case: the clip upscaled 3x (bicubic) and encoded once into a temporary file; the landmark
stage (decode + landmarks) with the default backend (detection on the reduced frame, faces followed
between detections) against the same stage detecting every frame at full resolution, as before.
Frames per CPU second (all threads) is a lower bound of what an idle machine does per wall-clock
second, so it stays meaningful when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

from nvsvideo.face.backends.dlib_backend import DlibBackend
from nvsvideo.face.crop import apply_crop, crop_transform_from_landmarks, points_to_crop
from nvsvideo.face.landmarks import LandmarkBackend
from nvsvideo.face.pose import estimate_label
from nvsvideo.face.types import Face
from nvsvideo.temporal.tracking import FaceTracker, TrackRecord, track_stream
from nvsvideo.video import VideoReader

CLIP = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "single_face.mp4"
TARGET_FPS = 15.0
UPSCALE = 3

def align_frame(frame: np.ndarray, record: TrackRecord) -> tuple[np.ndarray, np.ndarray] | None:
    """The 512 crop and EG3D label of a frame whose subject is known; missing frames pass through untouched."""
    if record.landmarks is None:
        return None
    tf = crop_transform_from_landmarks(record.landmarks, frame.shape[:2])
    label, _ = estimate_label(points_to_crop(record.landmarks, tf), tf.output_size)
    return apply_crop(frame, tf), label


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batches(loops: int, batch_size: int, peaks: list[float]) -> Iterator[np.ndarray]:
    """The clip's frames `loops` times over, in batches; appends the peak memory after each pass."""
    for _ in range(loops):
        for batch in VideoReader(CLIP, batch_size=batch_size):
            yield batch.frames
        peaks.append(peak_rss_mib())


def detections(backend: LandmarkBackend, frames: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, list[Face]]]:
    position = 0
    for batch in frames:
        yield from zip(batch, backend.detect(batch, start=position), strict=True)
        position += len(batch)


def upscaled_clip(path: Path) -> Path:
    """The clip upscaled UPSCALE times (1920x1080), encoded near-losslessly to `path`."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 640 * UPSCALE, 360 * UPSCALE, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for batch in VideoReader(CLIP, batch_size=16):
            for frame in batch.frames:
                big = Image.fromarray(frame).resize((stream.width, stream.height), Image.BICUBIC)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.asarray(big), format="rgb24")))
        container.mux(stream.encode())
    return path


def landmark_stage(video: Path, backend: LandmarkBackend, batch_size: int) -> int:
    """Decode `video` and find every frame's faces; returns the frame count."""
    frames = 0
    for batch in VideoReader(video, batch_size=batch_size):
        backend.detect(batch.frames, start=int(batch.indices[0]))
        frames += len(batch)
    return frames


#: The 1080p variants: the default backend, and the two steps that lead to it.
VARIANTS_1080P = {
    "full_resolution": {"detect_size": 0, "redetect_every": 1},  # as before: full detection on every frame
    "reduced_every_frame": {"redetect_every": 1},  # detection on the reduced frame, on every frame
    "default": {},  # reduced detection every 5th frame, faces followed in between
}


def bench_1080p(batch_size: int) -> dict[str, float]:
    """Landmark stage (decode + landmarks) at 1080p: frames/s, wall clock and per CPU second, per variant."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = upscaled_clip(Path(tmp) / "clip1080.mp4")
        wall, cpu, _ = timed(lambda: sum(len(b) for b in VideoReader(video, batch_size=batch_size)))
        result.update(decode_fps_1080p=round(wall, 1), decode_fps_1080p_per_cpu_second=round(cpu, 1))
        for name, options in VARIANTS_1080P.items():
            wall, cpu, _ = timed(lambda options=options: landmark_stage(video, DlibBackend(**options), batch_size))
            result.update({f"stage_fps_1080p_{name}": round(wall, 1), f"stage_fps_1080p_{name}_per_cpu_second": round(cpu, 1)})
    for clock in ("", "_per_cpu_second"):
        result[f"stage_1080p_default_vs_full_resolution{clock}"] = round(
            result[f"stage_fps_1080p_default{clock}"] / result[f"stage_fps_1080p_full_resolution{clock}"], 2)
    return result


def timed(run: Callable[[], int]) -> tuple[float, float, int]:
    """(frames per wall-clock second, frames per CPU second, frames) of `run`, which returns its frame count.

    CPU seconds (all threads of this process) tell what an idle machine would do when other jobs share the cores.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    frames = run()
    return frames / (time.perf_counter() - wall), frames / (time.process_time() - cpu), frames


def main(argv: list[str] | None = None) -> dict[str, float | int]:
    """Run the benchmark, print the numbers (or JSON with --json) and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=3, help="passes over the clip, read as one stream")
    parser.add_argument("--batch", type=int, default=16, help="frames per landmark batch")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv or [])
    backend = DlibBackend()

    decode_fps, _, _ = timed(lambda: sum(len(b) for b in batches(1, args.batch, [])))
    landmark_fps, _, _ = timed(lambda: landmark_stage(CLIP, DlibBackend(), args.batch))

    peaks: list[float] = []
    tracker = FaceTracker()

    def whole_path() -> int:
        count = 0
        for frame, record in track_stream(detections(backend, batches(args.loops, args.batch, peaks)), tracker):
            align_frame(frame, record)
            count += 1
        return count

    total_fps, total_cpu_fps, frames = timed(whole_path)
    result = {
        "frames": frames,
        "detected": tracker.summary.detected,
        "decode_fps": round(decode_fps, 1),
        "landmarks_fps": round(landmark_fps, 1),
        "align_fps": round(total_fps, 1),
        "align_fps_per_cpu_second": round(total_cpu_fps, 1),
        "align_vs_target": round(total_fps / TARGET_FPS, 2),
        "align_vs_decode": round(total_fps / decode_fps, 3),
        "peak_rss_mib_first_pass": round(peaks[0], 1),
        "peak_rss_mib_last_pass": round(peaks[-1], 1),
        **bench_1080p(args.batch),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"clip {CLIP.name} x{args.loops}: {frames} frames, {tracker.summary.detected} with the subject detected")
        print(f"decode only          {decode_fps:7.1f} frames/s   (baseline)")
        print(f"dlib landmarks       {landmark_fps:7.1f} frames/s")
        print(f"landmarks+crop+pose  {total_fps:7.1f} frames/s   ({total_fps / TARGET_FPS:.2f}x the {TARGET_FPS:.0f} fps target; "
              f"{total_cpu_fps:.1f} frames per CPU second)")
        print(f"peak memory          {peaks[0]:7.1f} MiB after pass 1, {peaks[-1]:.1f} MiB after pass {args.loops}")
        print(f"1080p decode only    {result['decode_fps_1080p']:7.1f} frames/s   "
              f"({result['decode_fps_1080p_per_cpu_second']:.1f} per CPU second)")
        for name in VARIANTS_1080P:
            wall, cpu = result[f"stage_fps_1080p_{name}"], result[f"stage_fps_1080p_{name}_per_cpu_second"]
            print(f"1080p decode+landmarks, {name:20s} {wall:7.1f} frames/s ({cpu:.1f} per CPU second; "
                  f"{wall / TARGET_FPS:.2f}x the {TARGET_FPS:.0f} fps target)")
        print(f"1080p default vs full resolution: {result['stage_1080p_default_vs_full_resolution']:.2f}x "
              f"({result['stage_1080p_default_vs_full_resolution_per_cpu_second']:.2f}x per CPU second)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
