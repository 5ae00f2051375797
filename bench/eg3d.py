"""EG3D generator speed: seconds per frame per stage at the full FFHQ 512/128 config, random weights.

Stages: mapping, backbone (tri-planes), rendering (rays, 48+48 samples, 128^2 neural rendering) and
super-resolution, at batch 1 and 4, under `torch.inference_mode()` with 2 threads. The reference is the
official NVlabs/eg3d code measured on this machine (quiet, batch 1, `eg3d_facts.md` §5). Other jobs
sharing the machine inflate every number here; compare the ratio only on a quiet machine.

Run: `python bench/eg3d.py` (about 30 s on a quiet machine, a few minutes on a busy one).
"""

from __future__ import annotations

import os
import resource
import time

import torch

#: Official code on this machine, seconds per frame at batch 1 (eg3d_facts.md §5).
OFFICIAL_SECONDS = {"mapping": 0.0, "backbone": 0.74, "rendering": 2.43, "super-resolution": 2.52}
OFFICIAL_TOTAL = 5.9
OFFICIAL_TOTAL_BATCH4 = 6.5
#: Official process CPU time per frame at batch 1 (user + system, both threads); less sensitive than
#: wall time to other jobs, though waiting threads still inflate it.
OFFICIAL_CPU_SECONDS = 10.8
REPEATS = {1: 3, 4: 1}


def frontal_camera(batch: int) -> torch.Tensor:
    """[B, 25] frontal FFHQ camera: cam2world at (0, 0, 2.7) looking down -z, normalised intrinsics f=4.2647."""
    cam2world = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]], dtype=torch.float32)
    intrinsics = torch.tensor([[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]], dtype=torch.float32)
    return torch.cat([cam2world.flatten(), intrinsics.flatten()]).expand(batch, -1).clone()


def time_stages(generator: torch.nn.Module, batch: int, repeats: int) -> dict[str, float]:
    """Median seconds per frame of each stage over `repeats` full forward passes."""
    z = torch.randn(batch, generator.z_dim)
    c = frontal_camera(batch)
    samples: dict[str, list[float]] = {name: [] for name in OFFICIAL_SECONDS}
    for rep in range(repeats):
        rng = torch.Generator().manual_seed(rep)
        start = time.perf_counter()
        ws = generator.mapping(z, c)
        t_map = time.perf_counter()
        planes = generator.synthesize_planes(ws)
        t_backbone = time.perf_counter()
        rendered = generator.render_features(planes, c, rng=rng)
        t_render = time.perf_counter()
        generator.super_resolve(rendered["feature_image"], ws)
        t_sr = time.perf_counter()
        for name, seconds in zip(samples, (t_map - start, t_backbone - t_map, t_render - t_backbone, t_sr - t_render), strict=True):
            samples[name].append(seconds / batch)
    return {name: sorted(values)[len(values) // 2] for name, values in samples.items()}


def main() -> None:
    from nvsvideo.models.eg3d.config import checkpoint_config
    from nvsvideo.models.eg3d.generator import TriPlaneGenerator

    torch.set_num_threads(2)
    torch.manual_seed(0)
    config = checkpoint_config("ffhq512-128")
    generator = TriPlaneGenerator(**config["init_kwargs"]).eval().requires_grad_(False)
    generator.neural_rendering_resolution = config["neural_rendering_resolution"]
    print(f"EG3D full FFHQ 512/128 config, random weights, {torch.get_num_threads()} threads, fp32 CPU")
    with torch.inference_mode():
        time_stages(generator, 1, 1)  # warm-up: oneDNN primitive creation, allocator growth
        for batch, repeats in REPEATS.items():
            cpu_start = time.process_time()
            stages = time_stages(generator, batch, repeats)
            cpu = (time.process_time() - cpu_start) / (batch * repeats)
            total = sum(stages.values())
            reference = OFFICIAL_TOTAL if batch == 1 else OFFICIAL_TOTAL_BATCH4
            print(f"batch {batch}: {total:.2f} s/frame (official {reference:.1f} s/frame, {reference / total:.2f}x faster); "
                  f"CPU time {cpu:.2f} s/frame" + (f" (official {OFFICIAL_CPU_SECONDS:.1f} s)" if batch == 1 else ""))
            for name, seconds in stages.items():
                official = OFFICIAL_SECONDS[name]
                ratio = f"{official / seconds:.2f}x faster" if official > 0 and batch == 1 else ""
                print(f"  {name:<17} {seconds:7.3f} s/frame" + (f"  (official {official:.2f} s, {ratio})" if ratio else ""))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"peak RSS {peak_mib:.0f} MiB; load average {load} on {os.cpu_count()} cores (other jobs slow this down)")


if __name__ == "__main__":
    main()
