"""Camera throughput of `--pose deep3d` against the landmark pose, on the real talking-head clip.

    python bench/deep3d.py [--frames 32] [--batch 16] [--json]

The clip's landmarks are found once (dlib) and are not timed. Then, on the same frames: the landmark camera
(official crop transform + perspective-n-point of the mean face, the baseline) and the Deep3D camera (recon
crop + the ResNet-50 on the CPU + the official conversion), batched as `align` batches it, and once more with
one frame per call (on a quarter of the frames: it is slow). The network has random weights: its cost does not depend on them, so no checkpoint is
needed. Frames per CPU second (all threads) are printed too: they stay meaningful when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nvsvideo.face.backends.dlib_backend import DlibBackend
from nvsvideo.face.crop import crop_transform_from_landmarks, five_points, points_to_crop
from nvsvideo.face.deep3d import Deep3DCameras, label_from_coeffs, recon_crop
from nvsvideo.face.pose import estimate_label
from nvsvideo.models.deep3d import ReconNet
from nvsvideo.video import VideoReader

CLIP = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "single_face.mp4"


def timed(run: Callable[[], int]) -> tuple[float, float]:
    """(frames per wall-clock second, frames per CPU second) of `run`, which returns its frame count."""
    wall, cpu = time.perf_counter(), time.process_time()
    frames = run()
    return frames / (time.perf_counter() - wall), frames / (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run the benchmark, print the numbers (or JSON with --json) and return them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=32, help="frames of the clip to use")
    parser.add_argument("--batch", type=int, default=16, help="frames per network batch")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv or [])

    backend, frames, landmarks = DlibBackend(), [], []
    for batch in VideoReader(CLIP, batch_size=16):
        for frame, faces in zip(batch.frames, backend.detect(batch.frames, start=int(batch.indices[0])), strict=True):
            if faces and len(frames) < args.frames:
                frames.append(frame)
                landmarks.append(faces[0].landmarks)
    model = Deep3DCameras(ReconNet().eval(), "cpu")

    def landmark_cameras() -> int:
        for frame, lm in zip(frames, landmarks, strict=True):
            tf = crop_transform_from_landmarks(lm, frame.shape[:2])
            estimate_label(points_to_crop(lm, tf), tf.output_size)
        return len(frames)

    def deep3d_cameras(batch_size: int, count: int) -> int:
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            pairs = zip(frames[start:stop], landmarks[start:stop], strict=True)
            crops = np.stack([recon_crop(frame, five_points(lm)) for frame, lm in pairs])
            label_from_coeffs(model.predict(crops))
        return count

    for batch_size in (args.batch, 1):  # warm-up: oneDNN picks its kernels on the first call of each shape
        deep3d_cameras(batch_size, batch_size)
    base, base_cpu = timed(landmark_cameras)
    batched, batched_cpu = timed(lambda: deep3d_cameras(args.batch, len(frames)))
    single, single_cpu = timed(lambda: deep3d_cameras(1, max(1, len(frames) // 4)))
    result = {
        "frames": len(frames), "torch_threads": torch.get_num_threads(),
        "landmark_pose_fps": round(base, 1), "landmark_pose_fps_per_cpu_second": round(base_cpu, 1),
        "deep3d_fps": round(batched, 2), "deep3d_fps_per_cpu_second": round(batched_cpu, 2),
        "deep3d_batch1_fps": round(single, 2), "deep3d_batch1_fps_per_cpu_second": round(single_cpu, 2),
        "deep3d_vs_landmark_pose": round(batched / base, 3), "batched_vs_batch1": round(batched / single, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{len(frames)} frames of {CLIP.name}, torch threads {result['torch_threads']}")
        print(f"landmark pose (baseline)   {base:7.1f} frames/s ({base_cpu:.1f} per CPU second)")
        print(f"deep3d, batch {args.batch:<3d}         {batched:7.2f} frames/s ({batched_cpu:.2f} per CPU second; "
              f"{batched / base:.3f}x the baseline)")
        print(f"deep3d, batch 1            {single:7.2f} frames/s ({single_cpu:.2f} per CPU second; "
              f"batched {batched / single:.2f}x)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
