"""Which tensors the renderer gets under an edit: unedited frames exactly, edited frames by the formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvsvideo.edits import Edit, LinearDirection, OffsetPolicy, edited_frames, parse_ramp
from nvsvideo.models.triplanenet.model import TriPlaneNet
from nvsvideo.pipelines.rerender import RerenderConfig, frame_planes

from tiny_models import tiny_triplanenet

FPS = 10.0
TIMES = np.arange(4) / FPS
# Strength 0 on frames 0 and 1 (the ramp holds 0 there), then 1 and 2 on frames 2 and 3.
RAMP = parse_ramp("0f:0,1f:0,2f:1,3f:2")


def seeded(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def backbone(model: TriPlaneNet, ws: torch.Tensor) -> torch.Tensor:
    return model.decoder.synthesize_planes(ws, noise_mode=model.render_options.noise_mode)


@pytest.fixture(scope="module")
def model() -> TriPlaneNet:
    return tiny_triplanenet("v2")


@pytest.fixture(scope="module")
def cached(model: TriPlaneNet) -> dict[str, torch.Tensor]:
    """A batch of 4 frames as the cache holds them: codes, the encoder's planes and their offsets.

    The planes are independent of the backbone's, as an encoder's are, so that planes - backbone + backbone
    differs from the planes by float rounding (an unedited frame computed through the edit would fail).
    """
    ws = model.decoder.mapping(seeded(4, 512, seed=1), torch.zeros(4, 25))
    generated = backbone(model, ws)
    planes = seeded(*generated.shape, seed=2)
    assert not torch.equal(planes - generated + generated, planes)
    return {"ws": ws, "offsets": planes - generated, "planes": planes}


def direction_edit(strength: float = 1.0) -> Edit:
    return Edit(name="d", delta=LinearDirection(seeded(14, 512, seed=3)), strength=strength, ramp=RAMP)


def test_edited_frames_are_those_with_a_non_zero_strength() -> None:
    times = torch.from_numpy(TIMES)
    assert edited_frames([], times).tolist() == [False] * 4
    assert edited_frames([direction_edit()], times, fps=FPS).tolist() == [False, False, True, True]
    assert edited_frames([direction_edit(0.0)], times, fps=FPS).tolist() == [False] * 4
    constant = Edit(name="c", delta=LinearDirection(seeded(14, 512, seed=4)), strength=-0.5)
    assert edited_frames([direction_edit(), constant], times, fps=FPS).tolist() == [True] * 4


# Both cache stores and both offset policies, in two runs (each runs the tiny backbone a few times).
@pytest.mark.parametrize(("store", "policy"), [("planes", OffsetPolicy.KEEP), ("offsets", OffsetPolicy.DROP)])
def test_frames_at_strength_zero_get_the_unedited_tensors_exactly(model: TriPlaneNet, cached: dict[str, torch.Tensor],
                                                                  store: str, policy: OffsetPolicy) -> None:
    planes = cached["planes"] if store == "planes" else None
    offsets = cached["offsets"] if store == "offsets" else None
    plain = frame_planes(model, cached["ws"], planes, offsets, TIMES, RerenderConfig(), FPS, need_unedited=True)
    config = RerenderConfig(edits=(direction_edit(),), offset_policy=policy)
    ws_out, planes_out, unedited = frame_planes(model, cached["ws"], planes, offsets, TIMES, config, FPS,
                                                need_unedited=True)
    # Bit for bit what rerender renders, not planes - backbone(ws) + backbone(ws).
    assert torch.equal(ws_out[:2], plain[0][:2]) and torch.equal(planes_out[:2], plain[1][:2])
    assert unedited is not None and torch.equal(unedited, plain[2])
    # Frames 2 and 3: w + strength * d, offsets added back (dropped where the edit is fully on).
    d = seeded(14, 512, seed=3)
    expected_ws = cached["ws"][2:] + torch.tensor([1.0, 2.0])[:, None, None] * d
    torch.testing.assert_close(ws_out[2:], expected_ws, rtol=0, atol=1e-5)
    weights = torch.ones(2) if policy is OffsetPolicy.KEEP else torch.tensor([0.5, 0.0])
    expected_planes = backbone(model, ws_out[2:]) + weights[:, None, None, None] * cached["offsets"][2:]
    torch.testing.assert_close(planes_out[2:], expected_planes, rtol=0, atol=1e-4)


def test_an_edit_at_strength_zero_everywhere_changes_nothing(model: TriPlaneNet,
                                                             cached: dict[str, torch.Tensor]) -> None:
    plain = frame_planes(model, cached["ws"], None, cached["offsets"], TIMES, RerenderConfig(), FPS,
                         need_unedited=False)
    config = RerenderConfig(edits=(direction_edit(0.0),), offset_policy=OffsetPolicy.DROP)
    off = frame_planes(model, cached["ws"], None, cached["offsets"], TIMES, config, FPS, need_unedited=False)
    assert all(torch.equal(a, b) for a, b in zip(off, plain, strict=True))
