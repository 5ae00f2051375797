"""TriPlaneNet inversion speed: seconds per frame per stage at the full configs, random weights.

One `TriPlaneNet.invert` call per measurement (v1 and v2 with pixel shuffle), the stages timed inside
it: pSp encoder, EG3D backbone, initial render(s) (v2: input and mirror camera), tri-plane predictor,
final render (128^2 rays x (96+96) samples + super-resolution, the official inference settings).
Measured at each `--batch-sizes` for the first variant, then at batch 1 and the best size for the
others (their costly stages are shared). The reference is the
official code on this machine (triplanenet_facts.md §6, process CPU time of one forward pass):
v1 about 36 s, v2 about 72 s. The official video scripts rerun that forward for every output
view; we invert once and render each extra view from the stored planes, so both costs are shown
for K novel views. Other jobs sharing the machine inflate every number here.

Run: `python bench/invert.py [--device cuda] [--batch-sizes 1 4 8] [--threads 2]` (about 3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import torch
from torch import nn

#: Official forward pass on this machine, process CPU seconds per image (triplanenet_facts.md §6).
OFFICIAL_FORWARD_SECONDS = {"v1": 36.0, "v2": 72.0}
VARIANTS = ("v1", "v2-pixelshuffle")
NOVEL_VIEWS = 2


def randomize_(module: nn.Module, generator: torch.Generator) -> None:
    """Fill meta-built encoder tensors with He-scaled random values (fast: no per-layer init schemes)."""
    from nvsvideo.models.triplanenet.psp import EqualLinear

    for sub in module.modules():
        if isinstance(sub, nn.BatchNorm2d):
            sub.weight.data.fill_(1)
            sub.bias.data.zero_()
            sub.running_mean.zero_()
            sub.running_var.fill_(1)
            sub.num_batches_tracked.zero_()
        elif isinstance(sub, nn.PReLU):
            sub.weight.data.fill_(0.25)
        else:
            for name, param in sub.named_parameters(recurse=False):
                if name == "weight":
                    # EqualLinear scales its weight by 1/sqrt(fan_in) at run time itself.
                    fan_in = 1 if isinstance(sub, EqualLinear) else param[0].numel()
                    param.data.normal_(0, (2 / fan_in) ** 0.5, generator=generator)
                else:
                    param.data.zero_()


def build_model(variant: str, device: torch.device) -> nn.Module:
    from nvsvideo.models.eg3d.config import checkpoint_config
    from nvsvideo.models.eg3d.generator import TriPlaneGenerator
    from nvsvideo.models.triplanenet.checkpoint import build_encoders
    from nvsvideo.models.triplanenet.model import TriPlaneNet

    config = checkpoint_config("ffhq512-128")
    generator = TriPlaneGenerator(**config["init_kwargs"])
    with torch.device("meta"):
        psp, predictor = build_encoders(variant)  # type: ignore[arg-type]
    rng = torch.Generator().manual_seed(0)
    encoders = [psp.to_empty(device="cpu"), predictor.to_empty(device="cpu")]
    for encoder in encoders:
        randomize_(encoder, rng)
    model = TriPlaneNet(psp, predictor, generator)
    return model.eval().requires_grad_(False).to(device)


class StageClock:
    """Wall time of the model's stages inside `invert`, by wrapping the four entry points it calls."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = defaultdict(float)
        self.renders = 0
        model.psp_encoder.forward = self._timed("psp encoder", model.psp_encoder.forward)
        model.triplanenet_encoder.forward = self._timed("tri-plane predictor", model.triplanenet_encoder.forward)
        model.decoder.synthesize_planes = self._timed("EG3D backbone", model.decoder.synthesize_planes)
        model.decoder.render_planes = self._timed("render", model.decoder.render_planes)

    def _timed(self, name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            self._sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self._sync()
            stage = name
            if name == "render":
                # invert renders the initial planes (once, or twice with the mirror camera) before the final ones.
                stage = "final render" if "tri-plane predictor" in self.seconds else "initial render(s)"
                self.renders += 1
            self.seconds[stage] += time.perf_counter() - start
            return out

        return wrapper

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reset(self) -> None:
        self.seconds.clear()
        self.renders = 0


def cameras(batch: int) -> torch.Tensor:
    """[B, 25] frontal FFHQ camera at radius 2.7 with the normalised focal 4.2647."""
    cam2world = torch.tensor([[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]], dtype=torch.float32)
    intrinsics = torch.tensor([4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], dtype=torch.float32)
    return torch.cat([cam2world.flatten(), intrinsics]).expand(batch, -1).clone()


def bench_variant(variant: str, batch_sizes: Sequence[int], device: torch.device) -> int:
    """Time `invert` at each batch size and print per-stage seconds per frame; returns the best batch size."""
    model = build_model(variant, device)
    clock = StageClock(model, device)
    version = model.version
    print(f"\n{variant}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
    results = {}
    if device.type == "cuda":  # warm-up: kernel selection and allocator growth are not per-frame costs
        model.invert(torch.zeros(1, 3, 512, 512, device=device), cameras(1).to(device))
    for batch in batch_sizes:
        x = torch.rand(batch, 3, 512, 512, device=device) * 2 - 1
        c = cameras(batch).to(device)
        rng = torch.Generator(device=device).manual_seed(0)
        clock.reset()
        start, start_cpu = time.perf_counter(), time.process_time()
        result = model.invert(x, c, rng=rng)
        total, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        per_render = (clock.seconds["initial render(s)"] + clock.seconds["final render"]) / clock.renders
        results[batch] = total / batch
        print(f"  batch {batch}: {total / batch:6.2f} s/frame for invert, process CPU {cpu / batch:.1f} s/frame "
              f"({clock.renders} renders)")
        for stage, seconds in clock.seconds.items():
            print(f"    {stage:<20} {seconds / batch:7.2f} s/frame")
        del result
        # Per output video frame with K novel views: invert once + K renders, vs (K+1) official forwards.
        ours = (total + NOVEL_VIEWS * per_render) / batch
        if device.type == "cpu":
            # The reference is process CPU time, so compare ours in the same unit.
            official = OFFICIAL_FORWARD_SECONDS[version]
            ours_cpu = cpu / batch * (1 + NOVEL_VIEWS * per_render / total)
            print(f"    invert vs one official forward (CPU time): {official / (cpu / batch):.1f}x faster")
            print(f"    with {NOVEL_VIEWS} novel views: {ours:6.2f} s/frame wall, about {ours_cpu:.0f} s CPU "
                  f"(official scripts about {(NOVEL_VIEWS + 1) * official:.0f} s CPU: "
                  f"{(NOVEL_VIEWS + 1) * official / ours_cpu:.1f}x)")
        else:
            print(f"    with {NOVEL_VIEWS} novel views: {ours:6.3f} s/frame")
    best = min(results, key=results.__getitem__)
    print(f"  best batch size here: {best} ({results[best]:.2f} s/frame)")
    return best


def main(argv: Sequence[str] | None = None) -> None:
    from nvsvideo.device import resolve_device

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=["v1", "v2-pixelshuffle", "v2-nearest"])
    args = parser.parse_args([] if argv is None else argv)
    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # random weights can drive activations into slow denormals
    print(f"TriPlaneNet invert, full configs, random weights, {device}, {torch.get_num_threads()} threads, "
          "128^2 rays x (96+96) samples")
    batch_sizes = sorted(set(args.batch_sizes))
    with torch.no_grad():
        for variant in args.variants:
            best = bench_variant(variant, batch_sizes, device)
            # The variants share their costly stages, so later ones only run batch 1 and the best size.
            batch_sizes = sorted({1, best})
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"peak RSS {peak_mib:.0f} MiB; load average {load} on {os.cpu_count()} cores (other jobs slow this down)")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
