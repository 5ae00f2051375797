"""EG3D StyleCLIP mapper: official checkpoint layout, documented equations, group detection, refusals.

The checkpoints are built here in In-N-Out's layout with weights from a closed formula, and the
expected output is computed from the raw state dict with plain float64 tensor math, independent
of the module under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nvsvideo.edits.mapper import detect_groups, load_mapper, mapper_from_checkpoint
from nvsvideo.errors import WeightsError

OFFICIAL_GROUPS = {"coarse": ("course_mapping", 0, 4), "medium": ("medium_mapping", 4, 8), "fine": ("fine_mapping", 8, 14)}
LR_MUL = 0.01


def formula(shape: tuple[int, ...], phase: float, scale: float) -> torch.Tensor:
    """Deterministic, irregular-looking values: scale * sin(0.7311 * index + phase)."""
    index = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    return (scale * torch.sin(0.7311 * index + phase)).to(torch.float32)


@pytest.fixture(scope="module")
def full_state() -> dict[str, torch.Tensor]:
    """All three groups as the official training stores them (weight = trained / lr_mul), plus a generator stub."""
    state: dict[str, torch.Tensor] = {}
    for g, (key, _, _) in enumerate(OFFICIAL_GROUPS.values()):
        for k in range(1, 5):
            # Stored weights are ~randn / lr_mul in official checkpoints, i.e. of order 100.
            state[f"mapper.{key}.mapping.{k}.weight"] = formula((512, 512), phase=1.3 * k + 2.1 * g, scale=100.0)
            state[f"mapper.{key}.mapping.{k}.bias"] = formula((512,), phase=0.4 * k + g, scale=10.0)
    # The official net wraps EG3D's G, so its tensors sit beside the mapper under `decoder.`.
    state["decoder.backbone.mapping.fc0.weight"] = torch.ones(4, 4)
    state["decoder.superresolution.block0.conv0.weight"] = torch.ones(2, 2, 3, 3)
    return state


def with_groups(full: dict[str, torch.Tensor], groups: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint that has only `groups` (and the generator)."""
    absent = [OFFICIAL_GROUPS[name][0] for name in OFFICIAL_GROUPS if name not in groups]
    return {k: v for k, v in full.items() if not any(k.startswith(f"mapper.{key}.") for key in absent)}


def official_opts(groups: tuple[str, ...], **overrides: object) -> dict[str, object]:
    opts: dict[str, object] = {
        "description": "face with eyeglasses",
        "mapper_type": "LevelsMapper",
        "no_coarse_mapper": "coarse" not in groups,
        "no_medium_mapper": "medium" not in groups,
        "no_fine_mapper": "fine" not in groups,
        "factor_step": 0.1,
        "stylegan_weights": "../pretrained_models/ffhqrebalanced512-128.pkl",
        "stylegan_size": 512,
        "device": "cuda:0",
        "checkpoint_path": None,
    }
    opts.update(overrides)
    return opts


def reference_mapper(state: dict[str, torch.Tensor], ws: torch.Tensor) -> torch.Tensor:
    """M(w) from the documented equations, in float64, straight from the raw tensors."""
    out = torch.zeros(ws.shape, dtype=torch.float64)
    for key, start, stop in OFFICIAL_GROUPS.values():
        if f"mapper.{key}.mapping.1.weight" not in state:
            continue
        x = ws[:, start:stop].double()
        x = x / torch.sqrt((x**2).mean(dim=1, keepdim=True) + 1e-8)  # over the layer axis
        for k in range(1, 5):
            weight = state[f"mapper.{key}.mapping.{k}.weight"].double() * (LR_MUL / math.sqrt(512))
            bias = state[f"mapper.{key}.mapping.{k}.bias"].double() * LR_MUL
            x = torch.einsum("blc,oc->blo", x, weight) + bias
            x = torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2)
        out[:, start:stop] = x
    return out


def sample_ws(batch: int = 3) -> torch.Tensor:
    return formula((batch, 14, 512), phase=0.25, scale=1.5)


def test_official_checkpoint_matches_documented_equations(tmp_path: Path, full_state: dict) -> None:
    path = tmp_path / "best_model.pt"
    groups = ("coarse", "medium", "fine")
    torch.save({"state_dict": full_state, "opts": official_opts(groups, factor_step=0.04)}, path)
    mapper = load_mapper(path)
    ws = sample_ws()
    expected = reference_mapper(full_state, ws)
    got = mapper(ws)
    assert got.shape == (3, 14, 512) and got.dtype == torch.float32
    assert expected.abs().max() > 0.1  # the formula weights give a non-trivial mapping
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    # The checkpoint's own factor_step is what strength 1 means.
    assert mapper.factor_step == 0.04
    torch.testing.assert_close(mapper.unit_delta(ws).double(), 0.04 * expected, rtol=1e-4, atol=1e-5)
    assert mapper.description == "face with eyeglasses"
    assert not any(p.requires_grad for p in mapper.parameters())


def test_normalisation_runs_over_the_layer_axis(full_state: dict) -> None:
    """Scaling one channel on every layer of a group leaves M(w) unchanged; scaling one layer does not."""
    mapper = mapper_from_checkpoint({"state_dict": with_groups(full_state, ("coarse",))}, source="test")
    ws = sample_ws(1)
    channel_scaled = ws.clone()
    channel_scaled[:, 0:4, 7] *= 5.0
    layer_scaled = ws.clone()
    layer_scaled[:, 1, :] *= 5.0
    torch.testing.assert_close(mapper(channel_scaled), mapper(ws), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mapper(layer_scaled)[:, 0], mapper(ws)[:, 0], atol=1e-3)


@pytest.mark.parametrize(
    "groups",
    [("coarse",), ("medium",), ("fine",), ("coarse", "medium"), ("medium", "fine"), ("coarse", "fine")],
)
def test_groups_are_read_from_key_names(full_state: dict, groups: tuple[str, ...]) -> None:
    state = with_groups(full_state, groups)
    assert detect_groups(state.keys(), source="test") == groups
    # Options that contradict the keys: the keys decide.
    opts = official_opts(groups, no_coarse_mapper=False, no_medium_mapper=False, no_fine_mapper=False)
    mapper = mapper_from_checkpoint({"state_dict": state, "opts": opts}, source="test")
    assert mapper.groups == groups
    ws = sample_ws(2)
    out = mapper(ws)
    torch.testing.assert_close(out.double(), reference_mapper(state, ws), rtol=1e-4, atol=1e-4)
    for name, (_, start, stop) in OFFICIAL_GROUPS.items():
        assert bool((out[:, start:stop] == 0).all()) == (name not in groups)


def test_bare_state_dict_and_default_factor_step(full_state: dict) -> None:
    state = {k: v for k, v in with_groups(full_state, ("fine",)).items() if k.startswith("mapper.")}
    mapper = mapper_from_checkpoint(state, source="bare")
    assert mapper.groups == ("fine",)
    assert mapper.factor_step == 0.1


@pytest.mark.parametrize(
    "overrides",
    [
        {"stylegan_size": 1024},
        {"stylegan_weights": "../pretrained_models/stylegan2-ffhq-config-f.pt"},
        {"mapper_type": "SingleMapper"},
    ],
)
def test_options_not_for_eg3d_are_refused(full_state: dict, overrides: dict[str, object]) -> None:
    groups = ("coarse", "medium", "fine")
    with pytest.raises(WeightsError, match="not a mapper for EG3D"):
        mapper_from_checkpoint({"state_dict": full_state, "opts": official_opts(groups, **overrides)}, source="sg2")


def test_stylegan2_generator_beside_the_mapper_is_refused(full_state: dict) -> None:
    state = {k: v for k, v in full_state.items() if k.startswith("mapper.")}
    # rosinality StyleGAN2 generator names, as StyleCLIP's 18-layer mappers carry them
    state["decoder.style.1.weight"] = torch.ones(2, 2)
    state["decoder.convs.0.conv.weight"] = torch.ones(1, 2, 2, 3, 3)
    with pytest.raises(WeightsError, match="generator stored with it is not EG3D"):
        mapper_from_checkpoint({"state_dict": state}, source="sg2")


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"mapper.mapping.mapping.1.weight": torch.zeros(512, 512)}, "not part of a StyleCLIP levels mapper"),
        ({"decoder.backbone.x": torch.zeros(1)}, "no 'mapper.\\*' weights"),
        ({"mapper.course_mapping.mapping.1.weight": torch.zeros(512, 512)}, "incomplete or mis-shaped"),
    ],
)
def test_malformed_mapper_weights_are_refused(state: dict[str, torch.Tensor], message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        mapper_from_checkpoint({"state_dict": state}, source="bad")


def test_misshaped_group_is_refused(full_state: dict) -> None:
    state = with_groups(full_state, ("medium",))
    state["mapper.medium_mapping.mapping.3.weight"] = torch.zeros(256, 512)
    with pytest.raises(WeightsError, match="incomplete or mis-shaped"):
        mapper_from_checkpoint({"state_dict": state}, source="bad")


class _Payload:
    """A Python object: weights_only loading must refuse to rebuild it."""


def test_files_needing_code_to_load_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "opts": _Payload()}, path)
    with pytest.raises(WeightsError, match="nothing from it was run"):
        load_mapper(path)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        load_mapper(tmp_path / "absent.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="refused"):
        load_mapper(corrupt)
