"""Face alignment throughput on the real talking-head clip: dlib landmarks, tracking, 512 crop, head pose.

    python bench/align.py [--loops 3] [--batch 16] [--json]

The clip (640x360, 72 frames) is read `--loops` times back to back as one long stream, so the
tracker and the queue of frames behind it see a video `--loops` times longer. Reported: decode-only
frames/s (the baseline), landmarks-only frames/s, and the whole per-frame path (decode, landmarks,
tracking, crop, pose) against the 15 frames/s target; peak memory after the first pass and
after the last one shows whether memory grows with the video's length.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from nvsvideo.face.backends.dlib_backend import DlibBackend
from nvsvideo.face.crop import apply_crop, crop_transform_from_landmarks, points_to_crop
from nvsvideo.face.landmarks import Face, LandmarkBackend
from nvsvideo.face.pose import estimate_label
from nvsvideo.temporal.tracking import FaceTracker, TrackRecord, track_stream
from nvsvideo.video import VideoReader

CLIP = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "single_face.mp4"
TARGET_FPS = 15.0

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
    landmark_fps, _, _ = timed(lambda: sum(len(backend.detect(b)) for b in batches(1, args.batch, [])))

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
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
