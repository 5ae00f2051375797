"""GPU throughput: the model path (invert + one novel view) and the whole `nvsvideo rerender` command.

Model level (issue 12), full-size FFHQ 512/128 EG3D + TriPlaneNet v1/v2 with random weights built here, at
the official settings (samples multiplier 2, 128^2 rays, super-resolution to 512): frames/s of "invert once
+ render one novel view", per-stage milliseconds per frame (encoders, EG3D backbone, volume renders,
super-resolution) and peak GPU memory, at batch 1 and at the best of `--batches`, for two paths measured
in the same run:
- device: the kernels chosen for the device (`nvsvideo.models.kernels`) and counter-based draws computed
  on the device (`nvsvideo.models.eg3d.draws`), what nvsvideo runs;
- portable: the CPU-shaped kernels forced everywhere and the random samples drawn on the host by a CPU
  generator and copied over, what nvsvideo ran before it had device-shaped paths.

End to end (issue 13): `nvsvideo rerender` in a fresh process on the real clip (640x360) and on a 1080p
upscale of it, v1 and v2, with full-size random checkpoints written here: frames/s over the whole command
(start-up, align, invert, render, encode), its seconds per stage, the batch size `auto` chose, the GPU's busy
fraction (sampled with nvidia-smi, 'n/a' without it), peak GPU memory and peak host memory; the 1080p run
again with its stages forced sequential (`NVSVIDEO_SEQUENTIAL=1`) for the overlap's ratio. Landmarks come
from a file (`--landmarks file`) so the GPU machine needs no dlib; they are computed once with dlib where
it is installed and kept with the clip copy in `bench/data/` (git-ignored: carry it to a GPU machine).

Without CUDA it says so, runs both model paths with TINY models on the CPU to prove they work, and exits 0.

Run: `python bench/gpu.py [--device cuda] [--batches 8 16 32] [--compile] [--skip-e2e]` (`make bench-gpu`;
a few minutes on one H100/H200). `--tiny` uses tiny models (a smoke test, also of the end-to-end section).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
SOURCE_CLIP = ROOT.parent / "shared" / "fixtures" / "single_face.mp4"
VERSIONS = {"v1": "v1", "v2": "v2-pixelshuffle"}
PATHS = ("device", "portable")
#: The model's costly entry points, by reported stage.
STAGES = {
    "encoders": (("psp_encoder", "forward"), ("triplanenet_encoder", "forward")),
    "backbone": (("decoder", "synthesize_planes"),),
    "renders": (("decoder", "render_features"),),
    "SR": (("decoder", "super_resolve"),),
}
#: The 1080p upscale of the 640x360 clip (landmarks scale by the same factor).
UPSCALE = 3


@functools.cache
def load_module(path: Path) -> ModuleType:
    """A helper script outside any package (bench/, tests/), imported by path once."""
    spec = importlib.util.spec_from_file_location(f"{path.parent.name}_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------- model level


def build(version: str, device: torch.device, tiny: bool) -> nn.Module:
    """TriPlaneNet `version` with random weights: full size with trained-like output magnitudes, or tiny."""
    if tiny:
        return load_module(ROOT / "tests" / "tiny_models.py").tiny_triplanenet(version).to(device)
    rerender = load_module(ROOT / "bench" / "rerender.py")
    model = rerender.full_model(VERSIONS[version], device)
    crops, _, _ = rerender.synthetic_batch(2)
    rerender.tame_(model, crops, device)
    return model


@contextlib.contextmanager
def path_settings(path: str) -> Iterator[None]:
    """The kernels of a path: the device's own, or the CPU-shaped ones everywhere."""
    from nvsvideo.models.kernels import CPU_KERNELS, use_kernels

    with use_kernels(CPU_KERNELS) if path == "portable" else contextlib.nullcontext():
        yield


def draws(path: str, frames: Sequence[int]) -> Any:
    """Counter keys drawn on the device, or one host generator whose samples are copied to the device."""
    from nvsvideo.models.eg3d.draws import DrawKeys

    return DrawKeys.of(0, frames) if path == "device" else torch.Generator().manual_seed(0)


def invert_and_view(model: nn.Module, x: torch.Tensor, c: torch.Tensor, c_novel: torch.Tensor, path: str) -> None:
    """What `nvsvideo rerender` runs per frame on the model: invert once, render one novel view."""
    from nvsvideo.models.eg3d.draws import RenderId, keyed_for

    rng = draws(path, range(x.shape[0]))
    result = model.invert(x, c, rng=rng, render_input_view=False)
    model.render(result.planes, result.ws, c_novel, rng=keyed_for(rng, RenderId.NOVEL))


@contextlib.contextmanager
def stage_clock(model: nn.Module, device: torch.device) -> Iterator[dict[str, float]]:
    """Seconds spent in each of `STAGES` while open (synchronised around each call, so only for this)."""
    seconds = dict.fromkeys(STAGES, 0.0)
    patched = []

    def timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            sync(device)
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync(device)
            seconds[stage] += time.perf_counter() - start
            return out

        return call

    for stage, targets in STAGES.items():
        for owner_name, attr in targets:
            owner = getattr(model, owner_name)
            setattr(owner, attr, timed(stage, getattr(owner, attr)))
            patched.append((owner, attr))
    try:
        yield seconds
    finally:
        for owner, attr in patched:
            delattr(owner, attr)


@dataclass
class ModelResult:
    version: str
    path: str
    batch: int
    fps: float
    stage_ms: dict[str, float]
    """Milliseconds per frame, from one extra synchronised pass."""
    peak_gpu_mib: float | None


def measure(model: nn.Module, version: str, path: str, batch: int, device: torch.device,
            min_frames: int) -> ModelResult:
    """Frames/s of `invert_and_view` at `batch` (after a warm-up call), then per-stage times."""
    rerender = load_module(ROOT / "bench" / "rerender.py")
    from nvsvideo.compose.layout import from_uint8_frames

    crops, labels, novel = rerender.synthetic_batch(batch)
    x = from_uint8_frames(crops, device=device)
    c, c_novel = (torch.from_numpy(a).float().to(device) for a in (labels, novel))
    iterations = max(1, math.ceil(min_frames / batch))
    with torch.inference_mode(), path_settings(path):
        invert_and_view(model, x, c, c_novel, path)  # warm-up: kernel selection, allocator growth
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        start = time.perf_counter()
        for _ in range(iterations):
            invert_and_view(model, x, c, c_novel, path)
        sync(device)
        elapsed = time.perf_counter() - start
        with stage_clock(model, device) as seconds:
            invert_and_view(model, x, c, c_novel, path)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return ModelResult(version, path, batch, iterations * batch / elapsed,
                       {k: 1000 * v / batch for k, v in seconds.items()}, peak)


def model_section(versions: Sequence[str], batches: Sequence[int], device: torch.device, tiny: bool,
                  compile_models: bool, log: Callable[[str], None]) -> list[ModelResult]:
    """Both paths of each version at batch 1 and at the device path's best batch."""
    results = []
    for version in versions:
        started = time.perf_counter()
        model = build(version, device, tiny)
        log(f"\n{version}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters "
            f"({'tiny' if tiny else 'full size'}, random weights), built in {time.perf_counter() - started:.1f} s")
        if compile_models:
            from nvsvideo.runtime.compile import compile_hot_path

            state = compile_hot_path(model.decoder, device, lambda m: log(f"  warning: {m}"))
        min_frames = 1 if tiny else 32
        device_runs = {b: measure(model, version, "device", b, device, min_frames) for b in sorted({1, *batches})}
        best = max((b for b in device_runs if b > 1), key=lambda b: device_runs[b].fps, default=1)
        runs = [device_runs[1], device_runs[best]] + [
            measure(model, version, "portable", b, device, min_frames) for b in sorted({1, best})]
        for batch, run in sorted(device_runs.items()):
            if batch not in (1, best):
                log(f"  device batch {batch:3d}: {run.fps:8.2f} frames/s")
        for run in runs:
            log(format_model_result(run))
        for batch in sorted({1, best}):
            ours = next(r for r in runs if r.path == "device" and r.batch == batch)
            portable = next(r for r in runs if r.path == "portable" and r.batch == batch)
            log(f"  batch {batch}: device path {ours.fps / portable.fps:.2f}x the portable path's frames/s")
        if compile_models:
            log(f"  compile: {state.seconds:.1f} s ({'failed, eager' if state.failed else 'compiled'})")
        results += runs
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def format_model_result(run: ModelResult) -> str:
    stages = ", ".join(f"{k} {v:.1f}" for k, v in run.stage_ms.items())
    peak = f"{run.peak_gpu_mib:.0f} MiB" if run.peak_gpu_mib is not None else "n/a (not CUDA)"
    return (f"  {run.path:<8} batch {run.batch:3d}: {run.fps:8.2f} frames/s; ms per frame: {stages}; "
            f"peak GPU memory {peak}")


# ---------------------------------------------------------------------------------------------- end to end


def prepare_clip(log: Callable[[str], None]) -> tuple[Path, Path] | None:
    """The clip and its landmarks file in `bench/data/` (copied / computed once), or None with the reason logged."""
    clip, landmarks = DATA / SOURCE_CLIP.name, DATA / f"{SOURCE_CLIP.stem}.landmarks.json"
    if not clip.is_file():
        if not SOURCE_CLIP.is_file():
            log(f"end to end: skipped, no clip at {clip} and none at {SOURCE_CLIP} to copy")
            return None
        DATA.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SOURCE_CLIP, clip)
    if not landmarks.is_file():
        if importlib.util.find_spec("dlib") is None:
            log(f"end to end: skipped, {landmarks} is missing and dlib (needed once to compute it) is not installed")
            return None
        write_landmarks(clip, landmarks)
    return clip, landmarks


def write_landmarks(clip: Path, path: Path, scale: float = 1.0) -> None:
    """The per-frame landmarks of the tracked face (dlib, our align stage), as a `--landmarks file` JSON."""
    from nvsvideo.console import Reporter
    from nvsvideo.face.landmarks import LandmarkConfig, create_backend
    from nvsvideo.pipelines.align import AlignConfig, track_video

    alignment = track_video(clip, create_backend(LandmarkConfig(backend="dlib"), torch.device("cpu")),
                            AlignConfig(), Reporter(quiet=True))
    faces = [[] if f.landmarks is None else [(np.asarray(f.landmarks) * scale).round(3).tolist()]
             for f in alignment.frames]
    path.write_text(json.dumps(faces))


def upscale(clip: Path, landmarks: Path, out_dir: Path) -> tuple[Path, Path]:
    """The clip resized to 1080p (bicubic, with its timestamps) and its landmarks scaled alike."""
    from PIL import Image

    from nvsvideo.video import VideoReader, VideoWriter, probe

    info = probe(clip)
    big = out_dir / f"{clip.stem}_1080p.mp4"
    size = (info.width * UPSCALE, info.height * UPSCALE)
    with VideoWriter(big, width=size[0], height=size[1], fps=info.fps, time_base=info.time_base, crf=18) as writer:
        for batch in VideoReader(clip, info=info):
            frames = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f in batch.frames])
            writer.write(frames, batch.pts)
    scaled = out_dir / f"{clip.stem}_1080p.landmarks.json"
    faces = json.loads(landmarks.read_text())
    scaled.write_text(json.dumps([[(np.asarray(face) * UPSCALE).tolist() for face in frame] for frame in faces]))
    return big, scaled


def save_checkpoints(version: str, device: torch.device, tiny: bool, out_dir: Path) -> tuple[Path, Path]:
    """(TriPlaneNet .pt without its generator, EG3D .safetensors) with random weights, in the official layouts."""
    tpn, eg3d = out_dir / f"triplanenet_{version}.pt", out_dir / f"eg3d_{version}.safetensors"
    if tiny:
        tiny_models = load_module(ROOT / "tests" / "tiny_models.py")
        return tiny_models.save_tiny_triplanenet(tpn, version), tiny_models.save_tiny_eg3d(eg3d)
    from nvsvideo.models.eg3d.checkpoint import EG3DCheckpoint, save_eg3d
    from nvsvideo.models.eg3d.config import FFHQ_NEURAL_RENDERING_RESOLUTION, checkpoint_config
    from nvsvideo.models.triplanenet.checkpoint import DECODER_PREFIX

    model = build(version, device, tiny)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    opts = {"exp_dir": "bench", "device": "cpu", "n_styles": 14, "checkpoint_path": None}
    if version == "v2":
        opts["use_pixelshuffle"] = True
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith(DECODER_PREFIX)}, "opts": opts,
                "best_val_loss": None, "step": 0}, tpn)
    save_eg3d(EG3DCheckpoint(init_kwargs=checkpoint_config("ffhq512-128")["init_kwargs"],
                             rendering_kwargs=dict(model.decoder.rendering_kwargs),
                             neural_rendering_resolution=FFHQ_NEURAL_RENDERING_RESOLUTION,
                             state_dict={k[len(DECODER_PREFIX):]: v for k, v in state.items()
                                         if k.startswith(DECODER_PREFIX)},
                             source="bench/gpu.py random weights"), eg3d)
    return tpn, eg3d


class GpuSampler:
    """Samples the GPU's utilisation with nvidia-smi in a thread while open; `busy` is None without it."""

    def __init__(self, index: int, period_s: float = 0.25) -> None:
        self.index, self.period_s = index, period_s
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.tool = shutil.which("nvidia-smi")

    def __enter__(self) -> GpuSampler:
        if self.tool is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        command = [self.tool, f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(self.period_s):
            out = subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()
            with contextlib.suppress(ValueError):
                self.samples.append(float(out) / 100)

    @property
    def busy(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def rerender_child(args: list[str]) -> None:
    """In a fresh process: `nvsvideo rerender ARGS --json`, then one `BENCH {...}` line with the peaks."""
    from nvsvideo.cli import app

    try:
        code = app(args=args, prog_name="nvsvideo", standalone_mode=False)
    finally:
        status = Path("/proc/self/status").read_text()
        rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        print("BENCH " + json.dumps({"peak_rss_mib": rss_kib / 1024, "peak_gpu_mib": gpu}), flush=True)
    if isinstance(code, int) and code:  # the command's own exit code (its message is on stderr)
        sys.exit(code)


@dataclass
class EndToEnd:
    version: str
    clip: str
    sequential: bool
    frames: int
    wall_s: float
    summary: dict[str, Any] = field(default_factory=dict)
    peaks: dict[str, Any] = field(default_factory=dict)
    busy: float | None = None


def run_rerender(version: str, clip: Path, landmarks: Path, models: tuple[Path, Path], device: torch.device,
                 workdir: Path, extra: Sequence[str], sequential: bool) -> EndToEnd:
    """`nvsvideo rerender` of the whole clip (fresh cache) in a child process, timed and sampled; `sequential`
    runs its stages one after another (`NVSVIDEO_SEQUENTIAL`), the reference for the overlap's benefit."""
    from nvsvideo.pipelines.stream import SEQUENTIAL_ENV

    tpn, eg3d = models
    args = ["rerender", str(clip), "-o", str(workdir / "out.mp4"), "--cache", str(workdir / "cache"),
            "--yaw-path", "orbit", "--model", version, "--triplanenet", str(tpn), "--eg3d", str(eg3d),
            "--landmarks", "file", "--landmarks-file", str(landmarks), "--device", str(device),
            "--json", "--quiet", *extra]
    start = time.perf_counter()
    with GpuSampler(device.index or 0) as sampler:
        done = subprocess.run([sys.executable, __file__, "--rerender-child", *args], capture_output=True, text=True,
                              check=False, env={**os.environ, SEQUENTIAL_ENV: "1" if sequential else "0"})
    wall = time.perf_counter() - start
    lines = done.stdout.splitlines()
    bench_lines = [line for line in lines if line.startswith("BENCH ")]
    if done.returncode != 0 or not bench_lines:
        raise RuntimeError(f"rerender failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
    summary = json.loads("\n".join(line for line in lines if not line.startswith("BENCH ")))
    return EndToEnd(version, clip.name, sequential, int(summary["frames"]), wall, summary,
                    json.loads(bench_lines[-1][6:]), sampler.busy)


def format_end_to_end(run: EndToEnd) -> str:
    seconds = ", ".join(f"{k} {v:.1f}" for k, v in run.summary.get("seconds", {}).items())
    busy = f"{100 * run.busy:.0f} %" if run.busy is not None else "n/a (no nvidia-smi)"
    gpu = run.peaks.get("peak_gpu_mib")
    mode = "sequential" if run.sequential else "overlapped"
    # Wall time / slowest stage's busy time of each streaming pass (1.0 = perfect overlap).
    ratios = ", ".join(f"{k} {v.get('overlap_ratio')}" for k, v in run.summary.get("overlap", {}).items())
    return (f"  {run.version} {run.clip} {mode}: {run.frames / run.wall_s:6.2f} frames/s end to end ({run.frames} frames in "
            f"{run.wall_s:.1f} s); stages s: {seconds}; wall/slowest stage: {ratios or 'n/a'}; batch size {run.summary.get('batch_size')}; GPU busy {busy}; "
            f"peak GPU {f'{gpu:.0f} MiB' if gpu is not None else 'n/a'}; peak host {run.peaks['peak_rss_mib']:.0f} MiB")


def first_frames(clip: Path, landmarks: Path, frames: int, out_dir: Path) -> tuple[Path, Path]:
    """The clip's first `frames` frames and their landmarks (a shorter smoke test)."""
    clips = load_module(ROOT / "tests" / "face_clips.py")
    short = clips.face_clip_with_gap(clip, out_dir / f"{clip.stem}_{frames}f.mp4", blank=range(0), frames=frames)
    short_landmarks = out_dir / f"{clip.stem}_{frames}f.landmarks.json"
    short_landmarks.write_text(json.dumps(json.loads(landmarks.read_text())[:frames]))
    return short, short_landmarks


def end_to_end_section(versions: Sequence[str], device: torch.device, tiny: bool, compile_models: bool,
                       frames: int | None, log: Callable[[str], None]) -> list[EndToEnd]:
    """The whole command on the clip (or its first `frames`) and its 1080p upscale, each version (fresh caches);
    the 1080p run also with its stages sequential, for the ratio."""
    log("\nend to end: `nvsvideo rerender` (orbit, paste) in a fresh process, fresh cache, landmarks from a file")
    prepared = prepare_clip(log)
    if prepared is None:
        return []
    results = []
    extra = ["--compile"] if compile_models else []
    with tempfile.TemporaryDirectory(prefix="nvs-bench-gpu-") as tmp:
        if frames is not None:
            prepared = first_frames(*prepared, frames, Path(tmp))
        clips = [prepared, upscale(*prepared, Path(tmp))]
        for version in versions:
            models = save_checkpoints(version, device, tiny, Path(tmp))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            for (clip, landmarks), sequential in [(clips[0], False), (clips[1], False), (clips[1], True)]:
                workdir = Path(tmp) / f"{version}_{clip.stem}_{'sequential' if sequential else 'overlapped'}"
                workdir.mkdir()
                results.append(run_rerender(version, clip, landmarks, models, device, workdir, extra, sequential))
                log(format_end_to_end(results[-1]))
            overlapped, sequential_run = results[-2:]
            log(f"  {version} 1080p: sequential / overlapped wall time {sequential_run.wall_s / overlapped.wall_s:.2f}")
    return results


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> None:
    args_in = list(argv or [])
    if args_in[:1] == ["--rerender-child"]:
        rerender_child(args_in[1:])
        return
    from nvsvideo.device import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS), choices=list(VERSIONS))
    parser.add_argument("--tiny", action="store_true", help="tiny models (a smoke test of every section)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator's hot path")
    parser.add_argument("--skip-e2e", action="store_true", help="only the model-level section")
    parser.add_argument("--e2e-frames", type=int, help="end to end on the clip's first N frames (default: all)")
    parser.add_argument("--json", type=Path, help="also write every number here")
    args = parser.parse_args(args_in)
    device = resolve_device(args.device)
    tiny, batches, run_e2e = args.tiny, args.batches, not args.skip_e2e
    if device.type != "cuda":
        print(f"no CUDA device here (torch {torch.__version__}, {device}): the GPU numbers cannot be measured; "
              "running both model paths with TINY models on the CPU to show they work")
        tiny, batches = True, [2]
        run_e2e = run_e2e and args.tiny  # the end-to-end section on the CPU only when asked for with --tiny
    else:
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print("model level: invert + one novel view per frame, samples x2, 128^2 rays (tiny: 32^2), SR to 512 "
          "(tiny: 128); device path vs portable path (CPU-shaped kernels, host-drawn samples)")
    started = time.perf_counter()
    models = model_section(args.versions, batches, device, tiny, args.compile, print)
    e2e = end_to_end_section(args.versions, device, tiny, args.compile, args.e2e_frames, print) if run_e2e else []
    if not run_e2e:
        print("\nend to end: skipped" + ("" if device.type == "cuda" else " (no CUDA; add --tiny to smoke-test it)"))
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"device": str(device), "tiny": tiny,
                                         "model": [vars(r) for r in models], "end_to_end": [vars(r) for r in e2e]},
                                        indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
