"""Per-frame sampling seeds: a frame's render does not depend on the batch it is rendered in."""

from __future__ import annotations

import numpy as np
import torch

from nvsvideo.cameras.eg3d import intrinsics, lookat_cam2world, make_label
from nvsvideo.models.eg3d.checkpoint import build_generator
from nvsvideo.render import RenderOptions, frame_generators, render_views

from tiny_models import tiny_eg3d_checkpoint, tiny_triplanenet


def labels(yaws: list[float]) -> torch.Tensor:
    return torch.from_numpy(make_label(lookat_cam2world(np.array(yaws), 0.0), intrinsics())).float()


def test_render_views_batched_equals_one_by_one() -> None:
    generator = build_generator(tiny_eg3d_checkpoint(), torch.device("cpu"))
    ws = generator.mapping(torch.randn(3, 512), labels([0, 0, 0]))
    planes = generator.synthesize_planes(ws)
    cams, frames = labels([-10, 0, 15]), [7, 8, 9]
    options = RenderOptions(seed=3)
    together = render_views(generator, planes, ws, cams, frames, options)["image"]
    alone = torch.cat([render_views(generator, planes[i:i + 1], ws[i:i + 1], cams[i:i + 1], [f], options)["image"]
                       for i, f in enumerate(frames)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    other_seed = render_views(generator, planes, ws, cams, frames, RenderOptions(seed=4))["image"]
    assert not torch.allclose(together, other_seed)


def test_inversion_with_per_frame_generators_is_batch_independent() -> None:
    model = tiny_triplanenet("v2")
    x = torch.rand(2, 3, 512, 512) * 2 - 1
    c = labels([5, -5])
    both = model.invert(x, c, rng=frame_generators([0, 1], seed=0))
    first = model.invert(x[:1], c[:1], rng=frame_generators([0], seed=0))
    torch.testing.assert_close(both.planes[:1], first.planes, rtol=0, atol=1e-5)
    torch.testing.assert_close(both.image[:1], first.image, rtol=0, atol=1e-5)


def test_inversion_without_the_input_view_render_gives_the_same_planes() -> None:
    model = tiny_triplanenet("v2")
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    c = labels([8])
    full = model.invert(x, c, rng=frame_generators([0], seed=0))
    lean = model.invert(x, c, rng=frame_generators([0], seed=0), render_input_view=False)
    torch.testing.assert_close(lean.planes, full.planes, rtol=0, atol=0)
    torch.testing.assert_close(lean.ws, full.ws, rtol=0, atol=0)
    assert lean.image is None and full.image is not None
