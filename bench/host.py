"""Host ceiling of `rerender` at 1080p: the real pipeline with the model replaced by a pass-through.

    python bench/host.py [--presets medium veryfast] [--json]

The shared face clip (640x360, 72 frames) is upscaled 3x to 1920x1080 (bicubic) once into bench/data/
(git-ignored), with its landmarks (dlib on the original frames, scaled 3x) next to it for the `file`
landmark backend, so the alignment stage costs what tracking and smoothing cost, not dlib at 1080p.

Each run is a whole `run_rerender` (decode, align, crop, model, compose, encode with audio; `--output
paste`) into a fresh cache, where the model stage is a pass-through: every input crop comes back as its
render and nothing is inverted. What is left is what the host does around any model: the most frames/s
any GPU could reach with this pipeline. Reported per run: frames/s of the render pass and of the whole
run (with start-up and the cache's set-up), and busy ms/frame of every stage `StageTimes` records, with the
alignment and the crop split out of `decode` and the compositing out of `render` (the stages they run in).

Runs: ours overlapped (forced: `NVSVIDEO_SEQUENTIAL=0`) and sequential (`=1`) at each preset, and the
baseline in the same run: the same pipeline with the Pillow/numpy crop and paste-back and the RGB frames
it used before issue 19 (tests/pil_compose.py) at `medium`, libx264's default. The overlapped first run is
also repeated on its cache (a re-run: render only), and run once more with RGB frames decoded for the
landmarks, as a landmark model (not a landmark file) needs them. Crop and paste-back alone are also timed
(median of repeated calls on one 1080p frame) for all, and libx264 alone at each preset (speed, size).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "fixtures" / "single_face.mp4"
DATA = ROOT / "bench" / "data"
UPSCALE = 3
#: Issue 19's targets on a 2-core CPU.
TARGET_FPS = 25.0
TARGET_STAGE_MS = 8.0


def load_module(path: Path) -> ModuleType:
    """A helper script outside the package (tests/), imported by path; its own imports of tests/ modules work."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(log: Callable[[str], None]) -> tuple[Path, Path] | None:
    """(the 1080p clip, its landmarks file), made once into bench/data/; None without them and without dlib."""
    from nvsvideo.video import VideoReader, VideoWriter, probe

    clip, landmarks = DATA / "single_face_1080p.mp4", DATA / "single_face_1080p.landmarks.json"
    if clip.is_file() and landmarks.is_file():
        return clip, landmarks
    from nvsvideo.errors import NvsError
    from nvsvideo.face.backends.dlib_backend import DlibBackend

    try:
        backend = DlibBackend()
    except NvsError as err:  # no dlib, or no landmark model file
        log(f"host: skipped, the 1080p clip's landmarks need dlib: {err}")
        return None
    log(f"making {clip.relative_to(ROOT)} and its landmarks (once)")
    DATA.mkdir(parents=True, exist_ok=True)
    info = probe(CLIP)
    faces: list[list] = []
    with VideoWriter(clip, width=info.width * UPSCALE, height=info.height * UPSCALE, fps=info.fps,
                     time_base=info.time_base, crf=18, audio_from=CLIP) as writer:
        for batch in VideoReader(CLIP, batch_size=8, info=info):
            big = np.stack([np.asarray(Image.fromarray(f).resize((info.width * UPSCALE, info.height * UPSCALE),
                                                                  Image.Resampling.BICUBIC)) for f in batch.frames])
            writer.write(big, batch.pts)
            for found in backend.detect(batch.frames):
                # Pixel centres at integers: x' = (x + 1/2)·3 - 1/2.
                faces.append([((f.landmarks + 0.5) * UPSCALE - 0.5).tolist() for f in found])
    landmarks.write_text(json.dumps(faces))
    return clip, landmarks


def timed(fn: Callable[..., Any], total: list[float]) -> Callable[..., Any]:
    """fn, adding its seconds to total[0] (one caller thread per wrapper)."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - started

    return wrapper


class PixelReadingFile:
    """A landmark file's faces, with the frames decoded to RGB for them, as a landmark model needs them."""

    name = "file"

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def detect(self, frames: np.ndarray, *, start: int = 0) -> list:
        return self.backend.detect(frames, start=start)


def run_once(clip: Path, landmarks: Path, workdir: Path, *, preset: str, sequential: bool,
             old: ModuleType | None, again: bool = False, rgb_landmarks: bool = False) -> dict[str, Any]:
    """One whole `run_rerender` with the pass-through model; frames/s and busy ms/frame per stage.

    A first run aligns, crops and composes in one pass into a fresh cache in `workdir`; `again` runs once
    more on that cache (the tracks are read: a render-only pass); `rgb_landmarks` decodes RGB frames for the
    landmarks (`PixelReadingFile`). Overlapped runs force the overlap (the
    pipeline itself runs a pass that inverts on the CPU sequentially; with a GPU model it overlaps).
    """
    from nvsvideo.face.landmarks import LandmarkConfig, create_backend
    from nvsvideo.pipelines import rerender
    from nvsvideo.pipelines.stream import SEQUENTIAL_ENV

    double = load_module(ROOT / "tests" / "pass_through.py")
    crop_s, compose_s = [0.0], [0.0]
    functions = double.pillow_functions(old) if old is not None else {"crop_face": rerender.crop_face,
                                                                      "compose_frame": rerender.compose_frame}
    previous = os.environ.pop(SEQUENTIAL_ENV, None)
    os.environ[SEQUENTIAL_ENV] = "1" if sequential else "0"
    workdir.mkdir(exist_ok=again)
    output = workdir / ("again.mp4" if again else "out.mp4")
    try:
        started, cpu = time.perf_counter(), time.process_time()
        backend = create_backend(LandmarkConfig(backend="file", landmarks_file=landmarks), torch.device("cpu"))
        summary = double.run_pass_through(
            clip, output, workdir / "cache", PixelReadingFile(backend) if rgb_landmarks else backend,
            rerender.RerenderConfig(preset=preset),
            {**functions, "crop_face": timed(functions["crop_face"], crop_s),
             "compose_frame": timed(functions["compose_frame"], compose_s)})
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        os.environ.pop(SEQUENTIAL_ENV, None)
        if previous is not None:
            os.environ[SEQUENTIAL_ENV] = previous
    frames = summary["frames"]
    stages = dict(summary["overlap"]["render"])
    passed = stages.pop("wall")
    busy = {name: seconds for name, seconds in stages.items()
            if isinstance(seconds, (int, float)) and name != "overlap_ratio"}
    # The crop and (on a first run) the alignment run inside the decode stage, the compositing inside the
    # model stage. `seconds.align` also holds the short set-up before the pass.
    align = summary["seconds"].get("align", 0.0)
    busy["decode"] -= crop_s[0] + align
    busy["render"] -= compose_s[0]
    busy = {"align": align, **busy, "crop": crop_s[0], "compose": compose_s[0]}
    return {"frames": frames, "render_pass_fps": frames / passed, "whole_run_fps": frames / wall,
            "cpu_ms_per_frame": 1000 * cpu / frames, "mode": summary["overlap"]["render"]["mode"],
            "busy_ms_per_frame": {name: 1000 * s / frames for name, s in busy.items()},
            "output_mib": output.stat().st_size / 2**20}


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median wall ms, median CPU ms of all this process's threads) of `repeats` calls after a warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        started, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return 1000 * statistics.median(walls), 1000 * statistics.median(cpus)


def bench_functions(clip: Path, landmarks: Path, old: ModuleType, repeats: int) -> dict[str, Any]:
    """Crop and paste-back alone on one 1080p frame with its face: ours on the decoded picture (what `--output
    paste` of a 4:2:0 video runs) and on the RGB frame (the other layouts and formats), and the Pillow/numpy
    ones before issue 19: (wall, CPU) ms."""
    from nvsvideo.compose.resample import image_tensor
    from nvsvideo.compose.yuv import i420_planes
    from nvsvideo.face.crop import (
        crop_face,
        crop_square_from_landmarks,
        crop_transform_from_square,
        paste_face_,
        paste_face_yuv_,
    )
    from nvsvideo.video import VideoReader, probe

    info = probe(clip)
    batch = next(iter(VideoReader(clip, batch_size=1, info=info, keep_yuv=True)))
    frame, planes = batch.frames[0], i420_planes(image_tensor(batch.yuv[0].copy()), info.colour)
    lm = np.asarray(json.loads(landmarks.read_text())[0][0])
    tf = crop_transform_from_square(crop_square_from_landmarks(lm, frame.shape[0]))
    render = np.ascontiguousarray(old.pil_crop(frame, tf)[:, ::-1])
    frame_t, render_t, work = image_tensor(frame), image_tensor(render), image_tensor(frame.copy())
    return {"face_side_px": float(512 / tf.matrix[0, 0]),
            "crop_ours": median_ms(lambda: crop_face(planes, tf), repeats),
            "crop_ours_rgb": median_ms(lambda: crop_face(frame_t, tf), repeats),
            "crop_before": median_ms(lambda: old.pil_crop(frame, tf), repeats),
            "paste_ours": median_ms(lambda: paste_face_yuv_(planes, render_t, tf), repeats),
            "paste_ours_rgb": median_ms(lambda: paste_face_(work, render_t, tf), repeats),
            "paste_before": median_ms(lambda: old.pil_paste_back(frame, render, tf), repeats)}


def bench_encode(clip: Path, presets: list[str], workdir: Path) -> dict[str, dict[str, float]]:
    """libx264 alone at each preset on the clip's decoded 1080p frames (--crf 18): wall and CPU ms/frame, MiB."""
    from nvsvideo.video import VideoReader, VideoWriter, probe

    info = probe(clip)
    frames = [(batch.frames, batch.pts) for batch in VideoReader(clip, batch_size=8, info=info)]
    count = sum(len(f) for f, _ in frames)
    results = {}
    for preset in presets:
        out = workdir / f"encode_{preset}.mp4"
        started, cpu = time.perf_counter(), time.process_time()
        with VideoWriter(out, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
                         preset=preset) as writer:
            for images, pts in frames:
                writer.write(images, pts)
        results[preset] = {"wall_ms": 1000 * (time.perf_counter() - started) / count,
                           "cpu_ms": 1000 * (time.process_time() - cpu) / count,
                           "mib": out.stat().st_size / 2**20}
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["medium", "veryfast"])
    parser.add_argument("--repeats", type=int, default=20, help="calls of the crop/paste micro-benchmark")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout (table on stderr)")
    args = parser.parse_args([] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    if not CLIP.is_file():
        log(f"host: skipped, the shared face clip is not at {CLIP}")
        return
    old = load_module(ROOT / "tests" / "pil_compose.py")
    made = make_data(log)
    if made is None:
        return
    clip, landmarks = made
    functions = bench_functions(clip, landmarks, old, args.repeats)
    log(f"host ceiling at 1080p ({clip.name}, 72 frames, --output paste, model = pass-through), "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs")
    log(f"  face {functions['face_side_px']:.0f} px wide; per call, median of {args.repeats}, wall / CPU ms (ours: on the "
        "decoded picture, as `--output paste` runs them; in RGB: for the other layouts and formats):")
    for op in ("crop", "paste"):
        (wall, cpu), (wall0, cpu0) = functions[f"{op}_ours"], functions[f"{op}_before"]
        wall_rgb, cpu_rgb = functions[f"{op}_ours_rgb"]
        log(f"    {op:<6} ours {wall:6.1f} / {cpu:6.1f}   in RGB {wall_rgb:6.1f} / {cpu_rgb:6.1f}   "
            f"before {wall0:6.1f} / {cpu0:6.1f}   ({'meets' if wall <= TARGET_STAGE_MS else 'MISSES'} the "
            f"{TARGET_STAGE_MS:.0f} ms target)")
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="nvs-host-") as tmp:
        encode = bench_encode(clip, ["medium", *[p for p in args.presets if p != "medium"]], Path(tmp))
        log("  encode alone (libx264, --crf 18, 72 frames of 1080p), wall / CPU ms per frame, file size:")
        for preset, e in encode.items():
            log(f"    {preset:<9} {e['wall_ms']:6.1f} / {e['cpu_ms']:6.1f}   {e['mib']:.2f} MiB")
        plan = [("before issue 19, medium, overlapped", "medium", False, old)]
        plan += [(f"ours, {p}, {mode}", p, mode == "sequential", None)
                 for p in args.presets for mode in ("overlapped", "sequential")]
        for n, (name, preset, sequential, variant) in enumerate(plan):
            runs[name] = run_once(clip, landmarks, Path(tmp) / f"run{n}", preset=preset, sequential=sequential,
                                  old=variant)
            if variant is None and not sequential:
                runs[f"{name}, re-run"] = run_once(clip, landmarks, Path(tmp) / f"run{n}", preset=preset,
                                                   sequential=sequential, old=None, again=True)
                runs[f"{name}, RGB landmarks"] = run_once(clip, landmarks, Path(tmp) / f"rgb{n}", preset=preset,
                                                          sequential=sequential, old=None, rgb_landmarks=True)
    names = list(next(iter(runs.values()))["busy_ms_per_frame"])
    log(f"  {'run':<42} {'pass f/s':>8} {'run f/s':>8} {'CPU ms':>7} {'MiB':>6} " + " ".join(f"{n:>8}" for n in names))
    for name, r in runs.items():
        log(f"  {name:<42} {r['render_pass_fps']:8.1f} {r['whole_run_fps']:8.1f} {r['cpu_ms_per_frame']:7.1f} "
            f"{r['output_mib']:6.2f} " + " ".join(f"{r['busy_ms_per_frame'][n]:8.1f}" for n in names))
    log("  (pass f/s = frames / render-pass wall; run f/s includes start-up and the cache set-up; CPU ms = all threads' CPU "
        "time per frame of the whole run; MiB = output size; then busy ms/frame per stage, align and crop inside the "
        "decode thread's pass; a re-run renders from the first run's tracks and cache)")
    baseline = runs["before issue 19, medium, overlapped"]["render_pass_fps"]
    for name, r in runs.items():
        if "veryfast" in name and "overlapped" in name:
            verdict = "meets" if r["render_pass_fps"] >= TARGET_FPS else "MISSES"
            log(f"  {name}: {r['render_pass_fps']:.1f} frames/s, {r['render_pass_fps'] / baseline:.1f}x the baseline "
                f"({verdict} the {TARGET_FPS:.0f} frames/s target{'' if 're-run' in name else ' (a first run)'})")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    log(f"  load average {load} (other jobs on the machine inflate every number)")
    if args.json:
        print(json.dumps({"functions_ms": functions, "encode": encode, "runs": runs, "load_average": os.getloadavg()},
                         indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
