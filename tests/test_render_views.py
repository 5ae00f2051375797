"""Per-frame counter draws: a frame's render does not depend on the batch it is rendered in, on ray chunking,
or on the other renders of the frame; each render of an inversion has its own documented id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvsvideo.cameras.eg3d import intrinsics, lookat_cam2world, make_label
from nvsvideo.models.eg3d import renderer
from nvsvideo.models.eg3d.checkpoint import build_generator
from nvsvideo.models.eg3d.renderer import RenderSettings, SampleDraws
from nvsvideo.render import DrawKeys, RenderId, RenderOptions, render_views

from tiny_models import tiny_eg3d_checkpoint, tiny_triplanenet


def labels(yaws: list[float]) -> torch.Tensor:
    return torch.from_numpy(make_label(lookat_cam2world(np.array(yaws), 0.0), intrinsics())).float()


@pytest.fixture(scope="module")
def scene() -> tuple:
    generator = build_generator(tiny_eg3d_checkpoint(), torch.device("cpu"))
    ws = generator.mapping(torch.randn(3, 512, generator=torch.Generator().manual_seed(0)), labels([0, 0, 0]))
    return generator, ws, generator.synthesize_planes(ws)


def test_counter_draws_of_a_batch_equal_each_frame_alone_bitwise(scene) -> None:
    generator, _, _ = scene
    settings = RenderSettings.from_rendering_kwargs(generator.rendering_kwargs, samples_multiplier=2)
    cpu = torch.device("cpu")
    together = SampleDraws.draw(3, 700, settings, DrawKeys.of(5, [7, 8, 9]), cpu)
    assert together.jitter.shape == (3, 700, settings.depth_resolution)
    assert together.importance.shape == (3, 700, settings.depth_resolution_importance)
    for item, frame in enumerate([7, 8, 9]):
        alone = SampleDraws.draw(1, 700, settings, DrawKeys.of(5, [frame]), cpu)
        assert torch.equal(together.jitter[item:item + 1], alone.jitter)
        assert torch.equal(together.importance[item:item + 1], alone.importance)


def test_render_views_batched_equals_one_by_one(scene) -> None:
    generator, ws, planes = scene
    cams, frames = labels([-10, 0, 15]), [7, 8, 9]
    options = RenderOptions(seed=3)
    together = render_views(generator, planes, ws, cams, frames, options)["image"]
    alone = torch.cat([render_views(generator, planes[i:i + 1], ws[i:i + 1], cams[i:i + 1], [f], options)["image"]
                       for i, f in enumerate(frames)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    other_seed = render_views(generator, planes, ws, cams, frames, RenderOptions(seed=4))["image"]
    assert not torch.allclose(together, other_seed)


def test_ray_chunking_does_not_change_a_counter_keyed_render(scene) -> None:
    generator, ws, planes = scene
    cams, frames = labels([-10, 0, 15]), [0, 1, 2]
    whole = render_views(generator, planes, ws, cams, frames, RenderOptions(seed=1, chunk_rays=10**6))
    chunked = render_views(generator, planes, ws, cams, frames, RenderOptions(seed=1, chunk_rays=100))
    for key in whole:
        torch.testing.assert_close(chunked[key], whole[key], rtol=0, atol=1e-5)  # float rounding of other shapes


def test_render_ids_give_a_frame_different_draws(scene) -> None:
    generator, ws, planes = scene
    cams = labels([0, 0, 0])
    novel = render_views(generator, planes, ws, cams, [0, 1, 2], RenderOptions())["image_depth"]
    recon = render_views(generator, planes, ws, cams, [0, 1, 2], RenderOptions(), RenderId.INPUT_VIEW)["image_depth"]
    assert not torch.equal(novel, recon)


def spy_on_draws(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record the draw source of every render."""
    seen: list = []
    original = SampleDraws.draw.__func__

    def draw(cls, batch, num_rays, settings, rng, device):
        seen.append(rng)
        return original(cls, batch, num_rays, settings, rng, device)

    monkeypatch.setattr(renderer.SampleDraws, "draw", classmethod(draw))
    return seen


@pytest.mark.parametrize(("version", "ids"), [("v1", [RenderId.INITIAL, RenderId.INPUT_VIEW]),
                                              ("v2", [RenderId.INITIAL, RenderId.MIRROR, RenderId.INPUT_VIEW])])
def test_each_render_of_an_inversion_has_its_own_id(monkeypatch: pytest.MonkeyPatch, version: str, ids) -> None:
    model = tiny_triplanenet(version)
    seen = spy_on_draws(monkeypatch)
    with torch.no_grad():
        model.invert(torch.zeros(1, 3, 256, 256), labels([5]), rng=DrawKeys.of(4, [10]))
    assert seen == [DrawKeys.of(4, [10], i) for i in ids]


def test_inversion_with_counter_draws_is_batch_independent_and_its_reconstruction_rerenders() -> None:
    model = tiny_triplanenet("v2")
    x = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    c = labels([5, -5])
    with torch.no_grad():
        both = model.invert(x, c, rng=DrawKeys.of(0, [0, 1]))
        # Alone, and without the final render at the input camera (the pipelines skip it): the same planes.
        second = model.invert(x[1:], c[1:], rng=DrawKeys.of(0, [1]), render_input_view=False)
    assert second.image is None
    torch.testing.assert_close(second.planes, both.planes[1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(second.ws, both.ws[1:], rtol=0, atol=1e-5)
    # The rerender stage's reconstruction (INPUT_VIEW, from the planes) is the inversion's own final render.
    options = RenderOptions(neural_rendering_resolution=model.render_options.neural_rendering_resolution,
                            samples_multiplier=model.render_options.samples_multiplier, seed=0)
    recon = render_views(model.decoder, both.planes, both.ws, c, [0, 1], options, RenderId.INPUT_VIEW)["image"]
    torch.testing.assert_close(recon, both.image, rtol=0, atol=1e-5)
