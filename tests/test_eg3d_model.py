"""EG3D generator: the full config against the official manifest, the maths of each piece against
plain reference formulations, and the rendering controls (rng, injected draws, chunking, overrides)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.models.eg3d.config import checkpoint_config, ffhq_init_kwargs, ffhq_rendering_kwargs
from nvsvideo.models.eg3d.generator import TriPlaneGenerator
from nvsvideo.models.eg3d.layers import fir_filter, modulated_conv2d, upsample2d
from nvsvideo.models.eg3d.renderer import (
    RenderSettings,
    SampleDraws,
    importance_depths,
    march_weights,
    plane_table,
    sample_rays,
    sample_triplane,
)
from nvsvideo.models.eg3d.stylegan2 import SynthesisLayer

MANIFEST = "eg3d_ffhq512-128_state_dict.tsv"


def read_manifest(path) -> list[tuple[str, list[int]]]:
    """(name, shape) rows of the official state-dict manifest, in order."""
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, _dtype = line.split("\t")
        rows.append((name, [int(d) for d in shape.strip("[]").split(",") if d]))
    return rows


def tiny_init_kwargs(**rendering_overrides) -> dict:
    """FFHQ config with a narrow backbone and few samples: the same classes, a fraction of the cost."""
    kwargs = ffhq_init_kwargs()
    kwargs.update(channel_base=512, channel_max=16)
    kwargs["rendering_kwargs"].update(depth_resolution=6, depth_resolution_importance=5, **rendering_overrides)
    return kwargs


def frontal_c(batch: int = 1, yaw: float = 0.0) -> torch.Tensor:
    """[B, 25] camera at radius 2.7 rotated by `yaw` around world y, looking at the origin."""
    cs, sn = math.cos(yaw), math.sin(yaw)
    cam2world = torch.tensor([[cs, 0, -sn, 2.7 * sn], [0, -1, 0, 0], [-sn, 0, -cs, 2.7 * cs], [0, 0, 0, 1]],
                             dtype=torch.float32)
    intrinsics = torch.tensor([[4.2647, 0, 0.5], [0, 4.2647, 0.5], [0, 0, 1]])
    return torch.cat([cam2world.flatten(), intrinsics.flatten()]).expand(batch, -1).clone()


@pytest.fixture(scope="module")
def tiny() -> TriPlaneGenerator:
    torch.manual_seed(0)
    generator = TriPlaneGenerator(**tiny_init_kwargs()).eval().requires_grad_(False)
    with torch.no_grad():  # a visible density so that importance sampling has structure to follow
        generator.decoder.net[2].bias[0] = 3.0
    generator.neural_rendering_resolution = 16
    return generator


@pytest.fixture(scope="module")
def tiny_planes(tiny) -> torch.Tensor:
    ws = tiny.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), frontal_c(2))
    with torch.no_grad():
        return tiny.synthesize_planes(ws)


def test_full_config_matches_official_manifest(interop_dir):
    """Every tensor name, shape and the order of the official FFHQ 512/128 G_ema, without allocating it."""
    with torch.device("meta"):
        generator = TriPlaneGenerator(**checkpoint_config("ffhq512-128")["init_kwargs"])
    ours = [(name, list(t.shape)) for name, t in generator.state_dict().items()]
    assert ours == read_manifest(interop_dir / MANIFEST)
    assert len(ours) == 177
    assert sum(p.numel() for p in generator.parameters()) == 30_662_136
    assert sum(b.numel() for b in generator.buffers()) == 831_049
    assert generator.backbone.num_ws == 14


def test_upsample2d_equals_zero_insertion_then_fir():
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    f = fir_filter([1, 3, 3, 1]).double()
    stuffed = torch.zeros(2, 3, 10, 14, dtype=torch.float64)
    stuffed[:, :, ::2, ::2] = x
    padded = F.pad(stuffed, (2, 1, 2, 1))
    reference = F.conv2d(padded, (f * 4).flip((0, 1))[None, None].expand(3, 1, 4, 4), groups=3)
    torch.testing.assert_close(upsample2d(x, f), reference)


def test_modulated_conv_equals_input_scaling_formulation():
    """The weight-modulated conv equals scaling activations by styles and outputs by the demod factor."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, generator=gen, dtype=torch.float64)
    styles = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    f = fir_filter([1, 3, 3, 1]).double()
    for up in (1, 2):
        out = modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f)
        demod = ((weight[None] * styles[:, None, :, None, None]) ** 2).sum(dim=[2, 3, 4]).add(1e-8).rsqrt()
        scaled = x * styles[:, :, None, None]
        if up == 1:
            ref = F.conv2d(scaled, weight, padding=1)
        else:
            ref = F.conv_transpose2d(scaled, weight.transpose(0, 1), stride=2)
            ref = F.conv2d(F.pad(ref, (1, 1, 1, 1)), (f * 4).flip((0, 1))[None, None].expand(5, 1, 4, 4), groups=5)
        torch.testing.assert_close(out, ref * demod[:, :, None, None])
        assert out.shape == (2, 5, 6 * up, 6 * up)


def test_half_precision_modulated_conv_stays_close_despite_large_weights():
    """fp16 blocks pre-normalise weight and styles (cancelled by demodulation), so big values do not overflow."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 8, 8, 8, generator=gen)
    weight = torch.randn(4, 8, 3, 3, generator=gen) * 300
    styles = torch.randn(2, 8, generator=gen) * 300
    f = fir_filter([1, 3, 3, 1])
    for up in (1, 2):
        full = modulated_conv2d(x, weight, styles, up=up, padding=1, resample_filter=f)
        half = modulated_conv2d(x.half(), weight, styles, up=up, padding=1, resample_filter=f)
        assert half.dtype == torch.float16 and torch.isfinite(half).all()
        torch.testing.assert_close(half.float(), full, rtol=0, atol=1e-2)


def test_layer_noise_modes():
    """const adds strength * noise_const; random draws from the given generator; none adds nothing."""
    torch.manual_seed(0)
    layer = SynthesisLayer(4, 4, w_dim=8, resolution=8, activation="linear").eval()
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    with torch.no_grad():
        layer.noise_strength.fill_(0.5)
        none = layer(x, w, noise_mode="none")
        const = layer(x, w, noise_mode="const")
        rand_a = layer(x, w, noise_mode="random", generator=torch.Generator().manual_seed(4))
        rand_b = layer(x, w, noise_mode="random", generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(const - none, (0.5 * layer.noise_const).expand_as(none))
    expected = 0.5 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(rand_a - none, expected.expand_as(none))
    assert torch.equal(rand_a, rand_b)


def test_triplane_sampling_equals_grid_sample_on_xy_xz_zx():
    """Bilinear, zero outside, planes indexed (x, y), (x, z), (z, x) with x along columns."""
    gen = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 4, 9, 9, generator=gen, dtype=torch.float64)
    points = (torch.rand(2, 50, 3, generator=gen, dtype=torch.float64) - 0.5) * 1.6  # a third outside the box
    box_warp = 1.3
    coords = points * (2 / box_warp)
    x, y, z = coords.unbind(-1)
    reference = 0
    for p, (gx, gy) in enumerate([(x, y), (x, z), (z, x)]):
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(1)  # [N, 1, P, 2]
        reference = reference + F.grid_sample(planes[:, p], grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)[:, :, 0].transpose(1, 2)
    ours = sample_triplane(plane_table(planes), 9, points, box_warp)
    torch.testing.assert_close(ours, reference / 3)


def test_rays_are_unit_and_pass_through_pixel_centres():
    c = frontal_c(1, yaw=0.3)
    origins, directions = sample_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), 4)
    torch.testing.assert_close(directions.norm(dim=-1), torch.ones(1, 16))
    cam2world = c[0, :16].reshape(4, 4)
    torch.testing.assert_close(origins[0, 0], cam2world[:3, 3])
    # Pixel (row 0, col 3) projects back to image coordinates ((3 + 0.5) / 4, 0.5 / 4).
    d_cam = cam2world[:3, :3].t() @ directions[0, 3]
    u, v = d_cam[0] / d_cam[2] * 4.2647 + 0.5, d_cam[1] / d_cam[2] * 4.2647 + 0.5
    assert (round(u.item(), 5), round(v.item(), 5)) == (0.875, 0.125)


def test_march_weights_match_alpha_compositing():
    gen = torch.Generator().manual_seed(0)
    depths = torch.sort(torch.rand(3, 8, generator=gen, dtype=torch.float64) + 2, dim=1).values
    sigma = torch.randn(3, 8, generator=gen, dtype=torch.float64) * 5
    weights = march_weights(sigma, depths)
    transmittance = torch.ones(3, dtype=torch.float64)
    for k in range(7):
        density = F.softplus((sigma[:, k] + sigma[:, k + 1]) / 2 - 1)
        alpha = 1 - torch.exp(-density * (depths[:, k + 1] - depths[:, k]))
        torch.testing.assert_close(weights[:, k], alpha * transmittance)
        transmittance = transmittance * (1 - alpha + 1e-10)


def test_importance_samples_follow_the_smoothed_weights():
    """One coarse interval holds all weight. Smoothing (max-pool, avg-pool, +0.01) gives the pdf over the bins
    between midpoints 0.51, 1.01, 0.51 around it and 0.01 elsewhere; the last midpoint is never reached."""
    depths = torch.linspace(2, 3, 11).expand(4, -1)
    weights = torch.zeros(4, 10)
    weights[:, 6] = 1.0
    fine = importance_depths(depths, weights, torch.rand(4, 500, generator=torch.Generator().manual_seed(0)))
    bins = 0.5 * (depths[0, :-1] + depths[0, 1:])
    centre = ((fine >= bins[5]) & (fine < bins[6])).float().mean().item()
    around = ((fine >= bins[4]) & (fine < bins[7])).float().mean().item()
    total = 0.51 + 1.01 + 0.51 + 5 * 0.01
    assert abs(centre - 1.01 / total) < 0.05
    assert abs(around - 2.03 / total) < 0.02
    assert fine.max() <= bins[-2] + 1e-6 and fine.min() >= bins[0] - 1e-6


def test_render_is_reproducible_from_rng_and_leaves_global_rng_alone(tiny, tiny_planes):
    c = frontal_c(2, yaw=0.2)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    with torch.no_grad():
        a = tiny.render_features(tiny_planes, c, rng=torch.Generator().manual_seed(5))
        b = tiny.render_features(tiny_planes, c, rng=torch.Generator().manual_seed(5))
        other = tiny.render_features(tiny_planes, c, rng=torch.Generator().manual_seed(6))
    assert torch.rand(1) == before  # the global generator was not consumed
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["feature_image"], other["feature_image"])


def test_draws_follow_the_official_order_and_can_be_injected(tiny, tiny_planes):
    """rng draws = rand([N, M, D, 1]) then rand([N*M, D_imp]); explicit SampleDraws give the same render."""
    settings = RenderSettings.from_rendering_kwargs(tiny.rendering_kwargs)
    m = 16 * 16
    gen = torch.Generator().manual_seed(11)
    jitter = torch.rand(2, m, settings.depth_resolution, 1, generator=gen)
    uniform = torch.rand(2 * m, settings.depth_resolution_importance, generator=gen)
    draws = SampleDraws.draw(2, m, settings, torch.Generator().manual_seed(11), torch.device("cpu"))
    assert torch.equal(draws.jitter, jitter[..., 0]) and torch.equal(draws.importance, uniform.reshape(2, m, -1))
    c = frontal_c(2)
    with torch.no_grad():
        from_rng = tiny.render_features(tiny_planes, c, rng=torch.Generator().manual_seed(11))
        injected = tiny.render_features(tiny_planes, c, draws=SampleDraws(jitter[..., 0], uniform.reshape(2, m, -1)))
    assert torch.equal(from_rng["feature_image"], injected["feature_image"])


def test_chunking_does_not_change_the_render(tiny, tiny_planes):
    c = frontal_c(2, yaw=-0.4)
    with torch.no_grad():
        whole = tiny.render_features(tiny_planes, c, rng=torch.Generator().manual_seed(3), chunk_rays=10**6)
        chunked = tiny.render_features(tiny_planes, c, rng=torch.Generator().manual_seed(3), chunk_rays=37)
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], rtol=0, atol=1e-6)


def test_resolution_override_and_samples_multiplier(tiny, tiny_planes):
    c = frontal_c(2)
    with torch.no_grad():
        out = tiny.render_features(tiny_planes, c, neural_rendering_resolution=8, samples_multiplier=2,
                                   rng=torch.Generator().manual_seed(0))
    assert out["feature_image"].shape == (2, 32, 8, 8) and out["image_depth"].shape == (2, 1, 8, 8)
    assert tiny.neural_rendering_resolution == 16  # an override is for that call only
    settings = RenderSettings.from_rendering_kwargs(tiny.rendering_kwargs, samples_multiplier=2)
    assert (settings.depth_resolution, settings.depth_resolution_importance) == (12, 10)
    depth = out["image_depth"]
    assert depth.min() >= tiny.rendering_kwargs["ray_start"] and torch.isfinite(depth).all()
    assert out["feature_image"].abs().max() <= 1.0 + 2e-3


def test_full_forward_shapes(tiny):
    z = torch.randn(1, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = tiny(z, frontal_c(1), rng=torch.Generator().manual_seed(0))
    assert out["image"].shape == (1, 3, 512, 512)  # 16 px neural rendering, resized to 128 then SR x4
    assert out["image_raw"].shape == (1, 3, 16, 16) and out["image_depth"].shape == (1, 1, 16, 16)
    assert torch.equal(out["image_raw"], out["feature_image"][:, :3])
    assert torch.isfinite(out["image"]).all()


@pytest.mark.parametrize(
    ("module", "resolution", "expected"),
    [
        ("SuperresolutionHybrid8X", 512, {"resample_filter": [4, 4], "block0.conv0.weight": [128, 32, 3, 3],
                                          "block1.torgb.weight": [3, 64, 1, 1], "block1.conv1.noise_const": [512, 512]}),
        ("SuperresolutionHybrid4X", 256, {"block0.conv0.weight": [128, 32, 3, 3], "block0.conv0.noise_const": [128, 128],
                                          "block1.conv0.noise_const": [256, 256]}),
        ("SuperresolutionHybrid2X", 128, {"block0.conv1.noise_const": [64, 64], "block1.torgb.bias": [3]}),
    ],
)
def test_other_official_superresolution_modules(module, resolution, expected):
    """The 8X/4X/2X variants build with the official tensor names (the 4X/2X first block does not upsample)."""
    kwargs = tiny_init_kwargs(superresolution_module=f"training.superresolution.{module}")
    kwargs["img_resolution"] = resolution
    with torch.device("meta"):
        sr = TriPlaneGenerator(**kwargs).superresolution
    shapes = {name: list(t.shape) for name, t in sr.state_dict().items()}
    assert all(shapes[name] == shape for name, shape in expected.items())
    assert sr.block0.upsample == (module == "SuperresolutionHybrid8X")


def test_non_upsampling_superresolution_runs():
    torch.manual_seed(0)
    kwargs = tiny_init_kwargs(superresolution_module="training.superresolution.SuperresolutionHybrid2X")
    kwargs["img_resolution"] = 128
    generator = TriPlaneGenerator(**kwargs).eval()
    generator.neural_rendering_resolution = 16
    with torch.no_grad():
        out = generator(torch.randn(1, 512), frontal_c(1), rng=torch.Generator().manual_seed(0))
    assert out["image"].shape == (1, 3, 128, 128) and torch.isfinite(out["image"]).all()


@pytest.mark.parametrize(
    "override",
    [{"superresolution_module": "training.superresolution.SuperresolutionHybridDeepfp32"}, {"ray_start": "auto"}],
)
def test_unsupported_variants_are_refused_clearly(override):
    kwargs = tiny_init_kwargs()
    kwargs["rendering_kwargs"].update(override)
    with pytest.raises(WeightsError):
        generator = TriPlaneGenerator(**kwargs)
        planes = torch.zeros(1, 96, 8, 8)
        generator.render_features(planes, frontal_c(1))


def test_too_few_samples_is_a_usage_error():
    with pytest.raises(UsageError, match="samples multiplier"):
        RenderSettings.from_rendering_kwargs(ffhq_rendering_kwargs(), samples_multiplier=0.02)


def test_presets_are_fresh_copies():
    first = ffhq_rendering_kwargs()
    first["depth_resolution"] = 1
    assert ffhq_rendering_kwargs()["depth_resolution"] == 48
    assert checkpoint_config("ffhqrebalanced512-128")["rendering_kwargs"]["gpc_reg_prob"] == 0.8


def test_gradients_reach_ws_and_planes(tiny):
    """Encoders and inversion backpropagate through the backbone and the renderer."""
    ws = torch.randn(1, tiny.backbone.num_ws, 512, requires_grad=True)
    planes = tiny.synthesize_planes(ws)
    out = tiny.render_features(planes, frontal_c(1), neural_rendering_resolution=8, rng=torch.Generator().manual_seed(0))
    (out["feature_image"].square().mean() + out["image_depth"].mean()).backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
