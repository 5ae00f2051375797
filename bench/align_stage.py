"""The align stage of `rerender`'s first pass alone, at 1080p, and the head-pose fits inside it.

    python bench/align_stage.py [--repeats 5] [--json]

Input: the 1080p upscale of the shared face clip with its landmarks for the `file` backend, which
bench/host.py makes once into bench/data/ (needs dlib). The stage is what `FirstPassAlign` runs per frame
besides decoding: landmarks from the file, the tracker, `HeadPoses`, and `StreamAligner` (crop squares,
their smoothing, the head-pose fit in each smoothed crop, the cameras' smoothing). The `file` backend and
the landmark cameras read no pixels, so the frames carry none here and decoding is left out.

Baseline in the same run: the same stage with the head-pose fit the package had before (scipy's
Levenberg-Marquardt with a finite-difference Jacobian, tests/scipy_pose.py); and the fit alone, ours
against that one, on the crop landmarks of every frame. Best of `--repeats` (other jobs share the machine).

The mesh backend's fit (the default backend's): ours against the one the package had before (scipy's trust-region
method with a Huber loss and a finite-difference Jacobian, tests/scipy_pose.py), on the meshes of the first
`MESH_FRAMES` frames of the shared clip (640x360) in their official crops; needs the mesh model files
(`nvsvideo weights fetch mesh`), left out without them.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
#: Frames of the shared clip whose meshes the mesh fit is timed on (the landmark model runs once on each).
MESH_FRAMES = 24


def run_stage(landmarks: Path, fps: float, height: int) -> list[Any]:
    """The align stage over every frame of the landmarks file; the aligned frames."""
    from nvsvideo.face.backends.file_backend import FileBackend
    from nvsvideo.pipelines.align import AlignConfig, HeadPoses, StreamAligner, detect_stream, tracked_frame
    from nvsvideo.temporal.tracking import FaceTracker, track_stream
    from nvsvideo.video import FrameBatch

    backend = FileBackend.from_json(landmarks)
    count = len(json.loads(landmarks.read_text()))
    config = AlignConfig()
    blank = np.zeros((config.batch_size, 1, 1, 3), np.uint8)

    def batches() -> Any:
        for start in range(0, count, config.batch_size):
            indices = np.arange(start, min(start + config.batch_size, count))
            yield FrameBatch(blank[: len(indices)], indices, indices, Fraction(1, round(fps)))

    aligner, tracker, poses = StreamAligner(config, fps, height), FaceTracker(config.tracker), HeadPoses(None, 1)
    done = []
    for (index, pts, seconds, image), track in track_stream(detect_stream(backend, batches()), tracker):
        for frame in poses.push(tracked_frame(index, pts, seconds, track), image):
            done.extend(aligner.push(frame))
    done.extend(aligner.finish())
    aligner.metrics()
    return done


def clip_meshes(clip: Path, count: int) -> list[np.ndarray] | None:
    """The meshes [468, 3] of the first `count` frames' faces, in their official crops (crop pixels), as the
    pose fit gets them; None without the mesh backend's files."""
    import torch

    from nvsvideo.face.backends.mesh_backend import MeshBackend, mesh_ready
    from nvsvideo.face.crop import crop_five_points, crop_transform_from_points
    from nvsvideo.face.mesh_pose import mesh_in_crop
    from nvsvideo.video import VideoReader
    from nvsvideo.weights.registry import resolve_weights_dir

    folder = resolve_weights_dir(None, os.environ)
    if not mesh_ready(folder):
        return None
    backend, meshes = MeshBackend(folder, torch.device("cpu")), []
    for batch in VideoReader(clip, batch_size=8):
        assert batch.frames is not None
        for image, found in zip(batch.frames, backend.detect(batch.frames, start=int(batch.indices[0])), strict=True):
            for face in found:
                tf = crop_transform_from_points(crop_five_points(face.landmarks, face.crop_points), image.shape[:2])
                meshes.append(mesh_in_crop(face.mesh, tf))
        if batch.indices[-1] + 1 >= count:
            break
    return meshes


def mesh_fit_numbers(clip: Path, repeats: int, log: Callable[[str], None], scipy_pose: Any) -> dict[str, float]:
    """ms per fit of the mesh pose, ours and scipy's (the fit before), and their largest label difference."""
    from nvsvideo.face.mesh_pose import estimate_label_from_mesh

    meshes = clip_meshes(clip, MESH_FRAMES)
    if not meshes:
        log("  mesh fit: skipped, the mesh model files are missing (`nvsvideo weights fetch mesh`)")
        return {}
    fit = best_ms(lambda: [estimate_label_from_mesh(m) for m in meshes], repeats, len(meshes))
    before = best_ms(lambda: [scipy_pose.scipy_estimate_label_from_mesh(m) for m in meshes], repeats, len(meshes))
    labels = max(float(np.abs(estimate_label_from_mesh(m)[0] - scipy_pose.scipy_estimate_label_from_mesh(m)[0]).max())
                 for m in meshes)
    log(f"  mesh fit ours {fit:7.3f}   before {before:7.3f}   {before / fit:5.1f}x faster "
        f"({len(meshes)} meshes of the 640x360 clip; labels differ by <= {labels:.1e}, scipy's default tolerances)")
    return {"mesh_fits": len(meshes), "mesh_fit_ms": fit, "mesh_fit_before_ms": before,
            "mesh_label_difference_max": labels}


def best_ms(fn: Callable[[], Any], repeats: int, per: int) -> float:
    """Fastest of `repeats` calls (after a warm-up), in ms per item of `per`."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * min(times) / per


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout (table on stderr)")
    args = parser.parse_args([] if argv is None else argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    host = runpy.run_path(str(HERE / "host.py"))
    if not host["CLIP"].is_file():
        log(f"align_stage: skipped, the shared face clip is not at {host['CLIP']}")
        return
    scipy_pose = host["load_module"](HERE.parent / "tests" / "scipy_pose.py")
    made = host["make_data"](log)
    if made is None:
        numbers = mesh_fit_numbers(host["CLIP"], args.repeats, log, scipy_pose)
        if args.json:
            print(json.dumps(numbers, indent=2))
        return
    clip, landmarks = made
    from nvsvideo.face import pose
    from nvsvideo.face.crop import points_to_crop
    from nvsvideo.pipelines import align
    from nvsvideo.video import probe

    info = probe(clip)
    fps, height = float(info.fps), info.height
    frames = run_stage(landmarks, fps, height)
    crops = [points_to_crop(f.landmarks, f.transform) for f in frames if f.transform is not None]
    stage = best_ms(lambda: run_stage(landmarks, fps, height), args.repeats, len(frames))
    fit = best_ms(lambda: [pose.estimate_label(lm) for lm in crops], args.repeats, len(crops))
    fit_before = best_ms(lambda: [scipy_pose.scipy_estimate_label(lm) for lm in crops], args.repeats, len(crops))
    ours_label = align.estimate_label
    align.estimate_label = scipy_pose.scipy_estimate_label  # the stage as it was: only the fit differs
    try:
        stage_before = best_ms(lambda: run_stage(landmarks, fps, height), args.repeats, len(frames))
    finally:
        align.estimate_label = ours_label
    labels = np.abs(np.stack([pose.estimate_label(lm)[0] - scipy_pose.scipy_estimate_label(lm)[0] for lm in crops]))
    load = os.getloadavg()
    log(f"align stage at {info.width}x{height} ({len(frames)} frames, landmarks from a file, no decoding), "
        f"best of {args.repeats}, ms/frame:")
    log(f"  stage    ours {stage:7.3f}   before {stage_before:7.3f}   {stage_before / stage:5.1f}x faster")
    log(f"  pose fit ours {fit:7.3f}   before {fit_before:7.3f}   {fit_before / fit:5.1f}x faster "
        f"(labels differ by <= {labels.max():.1e}: scipy's default tolerances stop short of the optimum)")
    numbers = mesh_fit_numbers(host["CLIP"], args.repeats, log, scipy_pose)
    log(f"  load average {', '.join(f'{x:.1f}' for x in load)} (other jobs on the machine inflate every number)")
    if args.json:
        print(json.dumps({"frames": len(frames), "stage_ms": stage, "stage_before_ms": stage_before,
                          "pose_fit_ms": fit, "pose_fit_before_ms": fit_before,
                          "label_difference_max": float(labels.max()), **numbers, "load_average": load}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
