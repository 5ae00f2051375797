"""Device kernel dispatch (issue 12): every variant of every operation, forced on the CPU, computes the same maths,
and the CPU kernels make a frame's inversion and render bitwise independent of its batch."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from test_eg3d_model import frontal_c
from test_eg3d_parity import psnr

from nvsvideo.models.eg3d.checkpoint import build_generator
from nvsvideo.models.eg3d.draws import DrawKeys
from nvsvideo.models.eg3d.layers import (
    demodulation_coefficients,
    fir_filter,
    fir_filter2d,
    fp16_prescale,
    modulated_conv2d,
    upsample2d,
)
from nvsvideo.models.eg3d.renderer import (
    OSGDecoder,
    RenderSettings,
    SampleDraws,
    prepare_planes,
    render_chunked,
    sample_rays,
    sample_triplane,
)
from nvsvideo.models.kernels import (
    CPU_KERNELS,
    GPU_KERNELS,
    Kernels,
    kernels_for,
    map_items,
    use_kernels,
)

from tiny_models import tiny_eg3d_checkpoint, tiny_triplanenet

#: Every field switched alone from the CPU choice to the GPU one, then all of them together.
SINGLE_SWITCHES = [dataclasses.replace(CPU_KERNELS, **{f.name: getattr(GPU_KERNELS, f.name)})
                   for f in dataclasses.fields(Kernels)]
FORCED = [*SINGLE_SWITCHES, GPU_KERNELS]


def test_dispatch_defaults_and_scoped_override():
    assert kernels_for(torch.device("cpu")) == CPU_KERNELS
    assert kernels_for(torch.device("cuda", 0)) == GPU_KERNELS
    assert kernels_for(torch.device("mps")) == GPU_KERNELS
    with use_kernels(GPU_KERNELS):
        assert kernels_for(torch.device("cpu")) == GPU_KERNELS
        with use_kernels(SINGLE_SWITCHES[0]):
            assert kernels_for(torch.device("cuda")) == SINGLE_SWITCHES[0]
        assert kernels_for(torch.device("cpu")) == GPU_KERNELS
    with pytest.raises(RuntimeError), use_kernels(GPU_KERNELS):
        raise RuntimeError("leaves the scope")
    assert kernels_for(torch.device("cpu")) == CPU_KERNELS


def test_map_items_runs_each_item_alone():
    calls = []

    def fn(a, b):
        calls.append(a.shape[0])
        return a * 10 + b

    a, b = torch.arange(3.0).reshape(3, 1), torch.ones(3, 1)
    assert torch.equal(map_items(fn, a, b), torch.tensor([[1.0], [11.0], [21.0]]))
    assert calls == [1, 1, 1]


def test_demodulation_coefficients_hand_checked():
    weight = torch.tensor([[1.0, 2.0], [0.0, 3.0]]).reshape(2, 2, 1, 1)  # 2 outputs, 2 inputs, 1x1
    styles = torch.tensor([[1.0, 1.0], [2.0, 0.5]])
    expected = torch.tensor([[1 / math.sqrt(5), 1 / 3], [1 / math.sqrt(4 + 1), 1 / 1.5]])
    torch.testing.assert_close(demodulation_coefficients(weight, styles), expected)


def test_fp16_prescale_hand_checked():
    weight = torch.tensor([2.0, -4.0]).reshape(1, 2, 1, 1)  # fan-in 2, largest magnitude 4
    styles = torch.tensor([[1.0, -3.0]])
    scaled_weight, scaled_styles = fp16_prescale(weight, styles)
    torch.testing.assert_close(scaled_weight.flatten(), torch.tensor([2.0, -4.0]) / (4 * math.sqrt(2)))
    torch.testing.assert_close(scaled_styles, torch.tensor([[1 / 3, -1.0]]))


def modconv_inputs(seed: int = 0, channels_last: bool = False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 8, 7, 7, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 8, 3, 3, generator=gen)
    styles = torch.randn(3, 8, generator=gen) + 1
    return x, weight, styles


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_dense_modconv_equals_per_sample(up, demodulate, channels_last):
    x, weight, styles = modconv_inputs(up, channels_last)
    noise = torch.randn(1, 1, 7 * up, 7 * up, generator=torch.Generator().manual_seed(9))
    f = fir_filter([1, 3, 3, 1])
    outs = []
    for kernels in (CPU_KERNELS, GPU_KERNELS):
        with use_kernels(kernels):
            outs.append(modulated_conv2d(x, weight, styles, noise=noise, up=up, padding=1, resample_filter=f,
                                         demodulate=demodulate))
    assert outs[0].shape == (3, 6, 7 * up, 7 * up)
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-4 * outs[0].abs().max().item())


@pytest.mark.parametrize("kernels", [CPU_KERNELS, GPU_KERNELS], ids=["per_sample", "dense"])
def test_fp16_prescaling_is_cancelled_by_demodulation(kernels):
    """The fp16 path's pre-scaled weight and styles give the fp32 result (checked in float32 on the CPU)."""
    x, weight, styles = modconv_inputs(3)
    f = fir_filter([1, 3, 3, 1])
    with use_kernels(kernels):
        for up in (1, 2):
            plain = modulated_conv2d(x, weight * 300, styles * 300, up=up, padding=1, resample_filter=f)
            scaled = modulated_conv2d(x, *fp16_prescale(weight * 300, styles * 300), up=up, padding=1,
                                      resample_filter=f)
            torch.testing.assert_close(scaled, plain, rtol=0, atol=1e-4)
            half = modulated_conv2d(x.half(), weight * 300, styles * 300, up=up, padding=1, resample_filter=f)
            assert half.dtype == torch.float16
            torch.testing.assert_close(half.float(), plain, rtol=0, atol=1e-2)


@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_fir_equals_depthwise(channels_last):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 9, 11, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    f = fir_filter([1, 3, 3, 1])
    results = []
    for kernels in (CPU_KERNELS, GPU_KERNELS):
        with use_kernels(kernels):
            results.append((fir_filter2d(x, f, padding=2, gain=4), upsample2d(x, f)))
    for depthwise, folded in zip(*results, strict=True):
        torch.testing.assert_close(folded, depthwise, rtol=0, atol=1e-5)
    assert results[1][1].shape == (2, 5, 18, 22)


def test_folded_fir_of_an_impulse_is_the_flipped_filter():
    """A true convolution: an impulse comes back as the filter (times gain), in every channel."""
    f = torch.arange(1.0, 17.0).reshape(4, 4)
    x = torch.zeros(1, 2, 7, 7)
    x[:, :, 3, 3] = 1
    with use_kernels(GPU_KERNELS):
        out = fir_filter2d(x, f, padding=0, gain=0.5)
    # out[i, j] = sum_ab x[i + a, j + b] f[3 - a, 3 - b] = f[i, j]: the impulse at (3, 3) meets a = 3 - i.
    expected = (f * 0.5).expand(1, 2, 4, 4)
    torch.testing.assert_close(out, expected)


def triplane_points() -> tuple[torch.Tensor, float, int]:
    """Points on texel centres and edges, on and beyond the box faces, and random ones; box_warp 2, R = 8."""
    resolution, box_warp = 8, 2.0
    # Coordinate of texel centre k is (2k + 1)/8 - 1 (exact in binary); texel edges sit halfway between.
    centres = (2 * torch.arange(-1, 9, dtype=torch.float32) + 1) / resolution - 1
    edges = 2 * torch.arange(-1, 10, dtype=torch.float32) / resolution - 1
    special = torch.cat([centres, edges, torch.tensor([-3.0, -1.0, 1.0, 1.25, 3.0])])
    grid = torch.stack(torch.meshgrid(special, special[::3], special[::5], indexing="ij"), dim=-1).reshape(-1, 3)
    rand = (torch.rand(500, 3, generator=torch.Generator().manual_seed(3)) - 0.5) * 2.6
    points = torch.cat([grid, rand]).reshape(2, -1, 3)
    return points, box_warp, resolution


def test_triplane_samplers_agree_with_grid_sample_reference():
    points, box_warp, resolution = triplane_points()
    planes = torch.randn(2, 3, 4, resolution, resolution, generator=torch.Generator().manual_seed(4))
    coords = points * (2 / box_warp)
    x, y, z = coords.unbind(-1)
    reference = 0
    for p, (gx, gy) in enumerate([(x, y), (x, z), (z, x)]):
        grid = torch.stack([gx, gy], dim=-1).unsqueeze(1)
        reference = reference + F.grid_sample(planes[:, p], grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False)[:, :, 0].transpose(1, 2)
    for kernels in (CPU_KERNELS, GPU_KERNELS):
        with use_kernels(kernels):
            ours = sample_triplane(prepare_planes(planes), resolution, points, box_warp)
        torch.testing.assert_close(ours, reference / 3, rtol=0, atol=1e-5)
    # x a whole texel outside the box: every plane (all read x) gives zero.
    beyond = coords[..., 0].abs() >= 1 + 1 / resolution
    assert beyond.any() and (ours[beyond] == 0).all()


def render_setup(batch: int = 3, res: int = 12):
    settings = RenderSettings(ray_start=2.25, ray_end=3.3, depth_resolution=7, depth_resolution_importance=5,
                              box_warp=1.0)
    torch.manual_seed(5)
    decoder = OSGDecoder(32, {"decoder_lr_mul": 1, "decoder_output_dim": 32}).eval()
    with torch.no_grad():
        decoder.net[2].bias[0] = 3.0  # visible density
    planes = torch.randn(batch, 3, 32, 16, 16, generator=torch.Generator().manual_seed(6))
    c = torch.cat([frontal_c(1, yaw=0.1 * i) for i in range(batch)])
    origins, directions = sample_rays(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), res)
    gen = torch.Generator().manual_seed(7)
    draws = SampleDraws(torch.rand(batch, res * res, 7, generator=gen), torch.rand(batch, res * res, 5, generator=gen))
    return planes, decoder, origins, directions, draws, settings


@pytest.mark.parametrize("kernels", FORCED)
def test_render_variants_agree(kernels):
    planes, decoder, origins, directions, draws, settings = render_setup()
    with torch.no_grad():
        features, depth = render_chunked(planes, decoder, origins, directions, draws, settings, chunk_rays=50)
        with use_kernels(kernels):
            forced_features, forced_depth = render_chunked(planes, decoder, origins, directions, draws, settings,
                                                           chunk_rays=50)
    torch.testing.assert_close(forced_features, features, rtol=0, atol=1e-4)
    torch.testing.assert_close(forced_depth, depth, rtol=0, atol=1e-4)


def test_whole_batch_render_keeps_the_batch_wide_depth_clamp():
    """A ray with no density has NaN depth; it is clamped to the largest sample depth of the whole render."""
    planes, decoder, origins, directions, draws, settings = render_setup()
    with torch.no_grad():
        decoder.net[2].bias[0] = -1e4  # no density anywhere
        for kernels in (CPU_KERNELS, GPU_KERNELS):
            with use_kernels(kernels):
                _, depth = render_chunked(planes, decoder, origins, directions, draws, settings, chunk_rays=50)
            # The largest sample of all: the last stratified depth of the largest jitter in the batch.
            spacing = (settings.ray_end - settings.ray_start) / (settings.depth_resolution - 1)
            expected = settings.ray_end + draws.jitter[..., -1].max() * spacing
            torch.testing.assert_close(depth, expected.expand_as(depth))


@pytest.fixture(scope="module")
def tiny_generator():
    return build_generator(tiny_eg3d_checkpoint(seed=3), "cpu")


@pytest.mark.parametrize("kernels", FORCED)
def test_tiny_generator_render_with_forced_kernels(tiny_generator, kernels):
    ws = tiny_generator.mapping(torch.randn(2, 512, generator=torch.Generator().manual_seed(8)), frontal_c(2))
    c = torch.cat([frontal_c(1, yaw=0.2), frontal_c(1, yaw=-0.3)])
    keys = DrawKeys.of(11, [4, 9])
    with torch.no_grad():
        reference = tiny_generator.synthesis(ws, c, rng=keys)
        with use_kernels(kernels):
            forced = tiny_generator.synthesis(ws, c, rng=keys)
    assert psnr(forced["image"], reference["image"]) >= 80
    torch.testing.assert_close(forced["feature_image"], reference["feature_image"], rtol=0, atol=1e-4)
    torch.testing.assert_close(forced["image_depth"], reference["image_depth"], rtol=0, atol=1e-4)


def face_batch(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(batch, 3, 64, 64, generator=torch.Generator().manual_seed(12)) * 2 - 1
    c = torch.cat([frontal_c(1, yaw=0.15 * i - 0.1) for i in range(batch)])
    return x, c


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tiny_triplanenet_invert_with_all_gpu_kernels(version):
    model = tiny_triplanenet(version)
    x, c = face_batch(2)
    keys = DrawKeys.of(5, [0, 1])
    reference = model.invert(x, c, rng=keys)
    with use_kernels(GPU_KERNELS):
        forced = model.invert(x, c, rng=keys)
    torch.testing.assert_close(forced.ws, reference.ws, rtol=0, atol=1e-4)
    torch.testing.assert_close(forced.planes, reference.planes, rtol=0, atol=1e-4)
    assert psnr(forced.image, reference.image) >= 80


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cpu_invert_and_render_do_not_depend_on_the_batch(version):
    """Batch of 3 against each frame alone, bitwise: codes, planes, reconstruction and a novel view."""
    model = tiny_triplanenet(version)
    x, c = face_batch(3)
    novel = frontal_c(3, yaw=0.4)
    together = model.invert(x, c, rng=DrawKeys.of(5, [0, 1, 2]))
    view = model.render(together.planes, together.ws, novel, rng=DrawKeys.of(5, [0, 1, 2]))
    for i in range(3):
        alone = model.invert(x[i:i + 1], c[i:i + 1], rng=DrawKeys.of(5, [i]))
        alone_view = model.render(alone.planes, alone.ws, novel[i:i + 1], rng=DrawKeys.of(5, [i]))
        for name in ("ws", "planes", "image", "image_raw", "depth"):
            assert torch.equal(getattr(together, name)[i:i + 1], getattr(alone, name)), (i, name)
        for name in ("image", "image_depth"):
            assert torch.equal(view[name][i:i + 1], alone_view[name]), (i, name)


@pytest.mark.parametrize("out_channels", [3, 96])
def test_one_by_one_modulated_conv_does_not_depend_on_the_thread_count(out_channels: int) -> None:
    # oneDNN's 1x1 conv with few outputs split its channel sums by thread, so `batch --chunk-frames` (one torch
    # thread per worker) rendered a few pixels one level off the unsplit run (all threads); the matmul does not.
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 64, 48, 48, generator=gen)
    weight = torch.randn(out_channels, 64, 1, 1, generator=gen)
    styles = torch.randn(2, 64, generator=gen)
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(modulated_conv2d(x, weight, styles, demodulate=False))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], other) for other in results[1:])
    torch.testing.assert_close(results[0], F.conv2d(x * styles[:, :, None, None], weight), rtol=1e-5, atol=1e-5)
