"""Edits end to end on cached codes: option pairing, named edits, the combination rule, offsets policy."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from nvsvideo.edits import (
    Edit,
    EditSpec,
    LatentMapper,
    LinearDirection,
    OffsetPolicy,
    apply_edits,
    available_edits,
    load_edit,
    offset_weights,
    parse_edit_specs,
    parse_ramp,
    resolve_edit,
)
from nvsvideo.edits.mapper import mapper_from_checkpoint
from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.weights.registry import (
    KIND_DIRECTION,
    KIND_MAPPER,
    KNOWN_WEIGHTS,
    expected_path,
    get_weight,
    locate,
)

CPU = torch.device("cpu")
FPS = 2.0


def seeded(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def fine_mapper_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A mapper with only the fine group, stored the official way (weights ~ randn / lr_mul)."""
    state = {}
    for k in range(1, 5):
        state[f"mapper.fine_mapping.mapping.{k}.weight"] = seeded(512, 512, seed=seed + k) * 100.0
        state[f"mapper.fine_mapping.mapping.{k}.bias"] = seeded(512, seed=seed + 10 + k) * 10.0
    return state


@pytest.fixture(scope="module")
def mapper() -> LatentMapper:
    return mapper_from_checkpoint({"state_dict": fine_mapper_state(), "opts": {"factor_step": 0.05}}, source="test")


@pytest.fixture
def ws() -> torch.Tensor:
    return seeded(8, 14, 512, seed=99)


def frame_times(count: int) -> torch.Tensor:
    return torch.arange(count, dtype=torch.float64) / FPS


# --- option pairing -------------------------------------------------------------------------------

def test_specs_pair_options_in_order() -> None:
    specs = parse_edit_specs(["eyeglasses", "smile.npy"], [0.5, -2.0], ["0s:0,1s:1"])
    assert [s.target for s in specs] == ["eyeglasses", "smile.npy"]
    assert [s.strength for s in specs] == [0.5, -2.0]
    assert specs[0].ramp == specs[1].ramp == parse_ramp("0s:0,1s:1")
    assert parse_edit_specs(["a"]) == [EditSpec(target="a", strength=1.0, ramp=None)]
    assert parse_edit_specs([]) == []


@pytest.mark.parametrize(
    ("targets", "strengths", "ramps", "message"),
    [
        (["a", "b", "c"], [1.0, 2.0], [], "--strength once"),
        (["a", "b"], [], ["0:0", "1:1", "2:2"], "--strength-ramp once"),
        ([], [1.0], [], "need a --direction"),
        (["a"], [], ["0s:1,0s:2"], "strictly increase"),
        (["a"], [float("nan")], [], "finite"),
    ],
)
def test_specs_that_do_not_pair_are_usage_errors(
    targets: list[str], strengths: list[float], ramps: list[str], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        parse_edit_specs(targets, strengths, ramps)


# --- named edits ----------------------------------------------------------------------------------

@pytest.fixture
def weights_dir(tmp_path: Path) -> Path:
    """The layout `nvsvideo weights` lists: directions/ and mappers/ (an In-N-Out result folder among them)."""
    root = tmp_path / "weights"
    directions, mappers = root / "directions", root / "mappers"
    (mappers / "elsa" / "checkpoints").mkdir(parents=True)
    directions.mkdir()
    torch.save({"state_dict": fine_mapper_state(), "opts": {"factor_step": 0.05}}, mappers / "elsa" / "checkpoints" / "best_model.pt")
    torch.save(seeded(1, 7168, seed=1), directions / "Smiling.pt")           # PREIM3D layout
    torch.save(seeded(512, seed=2), directions / "young.pt")
    torch.save(seeded(512, seed=3), directions / "young.pth")
    torch.save(seeded(512, seed=4), directions / "Mouth_Slightly_Open.pt")
    (directions / "notes.txt").write_text("not an edit")
    torch.save(seeded(512, seed=5), root / "stray.pt")  # outside the edit folders: not a named edit
    return root


def test_available_edits_lists_files_and_in_n_out_folders_by_registry_name(weights_dir: Path) -> None:
    found = available_edits(weights_dir)
    assert sorted(found) == ["direction-mouth-slightly-open", "direction-smiling", "direction-young", "mapper-elsa"]
    assert found["mapper-elsa"] == [weights_dir / "mappers" / "elsa" / "checkpoints" / "best_model.pt"]
    assert len(found["direction-young"]) == 2
    assert available_edits(weights_dir / "absent") == {}


@pytest.mark.parametrize("typed", ["Smiling", "smiling", "SMILING", "direction-smiling", "Direction_Smiling",
                                   "Smiling.pt", "smiling.npy", "direction-smiling.pt"])
def test_a_name_is_found_however_it_is_typed(weights_dir: Path, typed: str) -> None:
    assert resolve_edit(typed, weights_dir) == weights_dir / "directions" / "Smiling.pt"


def test_names_of_mappers_and_multi_word_directions(weights_dir: Path) -> None:
    mapper = weights_dir / "mappers" / "elsa" / "checkpoints" / "best_model.pt"
    assert resolve_edit("ELSA", weights_dir) == resolve_edit("mapper-elsa", weights_dir) == mapper
    for typed in ("mouth_slightly_open", "Mouth-Slightly-Open", "direction-mouth-slightly-open"):
        assert resolve_edit(typed, weights_dir) == weights_dir / "directions" / "Mouth_Slightly_Open.pt"
    with pytest.raises(WeightsError, match="unknown edit 'direction-elsa'"):
        resolve_edit("direction-elsa", weights_dir)  # the prefix chooses the kind


def test_one_name_for_two_kinds_is_told_apart_by_its_prefix(weights_dir: Path) -> None:
    torch.save(seeded(512, seed=6), weights_dir / "mappers" / "smiling.pt")
    with pytest.raises(WeightsError, match=r"matches several files \(direction-smiling: .*, mapper-smiling: .*full name"):
        resolve_edit("smiling", weights_dir)
    assert resolve_edit("mapper-smiling", weights_dir) == weights_dir / "mappers" / "smiling.pt"
    assert resolve_edit("direction-smiling", weights_dir) == weights_dir / "directions" / "Smiling.pt"


def test_unknown_and_ambiguous_names_list_what_there_is(weights_dir: Path) -> None:
    with pytest.raises(WeightsError, match=r"unknown edit 'eyeglasses'.*directions and .*mappers.*"
                                           r"direction-mouth-slightly-open, direction-smiling, direction-young, mapper-elsa"):
        resolve_edit("eyeglasses", weights_dir)
    with pytest.raises(WeightsError, match="unknown edit 'stray'"):
        resolve_edit("stray", weights_dir)
    with pytest.raises(WeightsError, match=r"matches several files .*young\.pt.*young\.pth.*as a path$"):
        resolve_edit("young", weights_dir)


def test_paths_are_taken_as_given(weights_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "mine.npy"
    outside.write_bytes(b"")
    assert resolve_edit(str(outside), weights_dir) == outside
    in_n_out = tmp_path / "mapper_results" / "eyeglasses"
    (in_n_out / "checkpoints").mkdir(parents=True)
    (in_n_out / "checkpoints" / "best_model.pt").write_bytes(b"")
    assert resolve_edit(str(in_n_out), weights_dir) == in_n_out / "checkpoints" / "best_model.pt"
    with pytest.raises(WeightsError, match="is a folder without checkpoints/best_model.pt"):
        resolve_edit(str(in_n_out.parent), weights_dir)
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_edit(str(tmp_path / "missing.pt"), weights_dir)
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_edit("./smiling", weights_dir)  # a folder part makes it a path, not a name


def test_an_existing_file_of_another_kind_is_named_as_such(weights_dir: Path, tmp_path: Path) -> None:
    video = tmp_path / "text.mp4"
    video.write_bytes(b"not an edit")
    with pytest.raises(WeightsError, match=r"text\.mp4 is not an edit file nvsvideo can read \(expected .*\.pt/\.pth/\.npy"):
        resolve_edit(str(video), weights_dir)


def test_every_edit_the_registry_lists_is_found_where_the_registry_puts_it(tmp_path: Path) -> None:
    """One layout: a file saved where `nvsvideo weights` says is found by its registry name and its short name."""
    edits = [entry for entry in KNOWN_WEIGHTS if entry.kind in (KIND_DIRECTION, KIND_MAPPER)]
    assert len(edits) > 1
    for entry in edits:
        target = expected_path(entry, tmp_path, {})
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    stems = Counter(expected_path(entry, tmp_path, {}).stem.lower() for entry in edits)
    for entry in edits:
        target = expected_path(entry, tmp_path, {})
        assert resolve_edit(entry.name, tmp_path) == target
        if stems[target.stem.lower()] == 1:
            assert resolve_edit(target.stem, tmp_path) == target  # e.g. Smiling, as PREIM3D names the file
        else:  # Eyeglasses is both a PREIM3D direction and an In-N-Out mapper
            with pytest.raises(WeightsError, match="or by its full name"):
                resolve_edit(target.stem, tmp_path)


def test_an_unzipped_in_n_out_mapper_is_where_the_registry_accepts_it(tmp_path: Path) -> None:
    entry = get_weight("mapper-eyeglasses")
    folder = tmp_path / "mappers" / "eyeglasses" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "best_model.pt").write_bytes(b"")
    assert locate(entry, tmp_path, {}) == resolve_edit("eyeglasses", tmp_path) == folder / "best_model.pt"


def test_load_edit_tells_mappers_from_directions(weights_dir: Path) -> None:
    mapper_edit = load_edit(EditSpec(target="elsa", strength=0.5), weights_dir, CPU)
    assert isinstance(mapper_edit.delta, LatentMapper) and mapper_edit.delta.groups == ("fine",)
    direction_edit = load_edit(EditSpec(target="Smiling"), weights_dir, CPU)
    assert isinstance(direction_edit.delta, LinearDirection)
    assert mapper_edit.summary() == {"name": "elsa", "kind": "mapper", "strength": 0.5, "ramp": None}
    assert direction_edit.summary()["kind"] == "direction"
    torch.testing.assert_close(direction_edit.delta.direction, seeded(1, 7168, seed=1).reshape(14, 512))


# --- applying edits -------------------------------------------------------------------------------

def test_direction_with_ramp_follows_the_formula(ws: torch.Tensor) -> None:
    d = seeded(14, 512, seed=5)
    ramp = parse_ramp("0s:0,2s:1")
    edit = Edit(name="d", delta=LinearDirection(d), strength=3.0, ramp=ramp)
    times = frame_times(8)  # 0, 0.5, ..., 3.5 s
    out = apply_edits(ws, [edit], times)
    for t in range(8):
        alpha = 3.0 * min(float(times[t]) / 2.0, 1.0)
        torch.testing.assert_close(out[t], ws[t] + alpha * d, rtol=1e-6, atol=1e-5)
    # Strength zero (t = 0) leaves the codes bit-for-bit.
    assert torch.equal(out[0], ws[0])


def test_mapper_edit_is_w_plus_strength_times_factor_step_times_m(ws: torch.Tensor, mapper: LatentMapper) -> None:
    out = apply_edits(ws, [Edit(name="m", delta=mapper, strength=2.0)], frame_times(8))
    torch.testing.assert_close(out, ws + 2.0 * 0.05 * mapper(ws), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(out[:, :8], ws[:, :8], rtol=0, atol=0)  # no coarse/medium groups


def test_edits_combine_additively_in_any_order(ws: torch.Tensor, mapper: LatentMapper) -> None:
    d = seeded(14, 512, seed=6)
    edits = [
        Edit(name="m", delta=mapper, strength=1.5, ramp=parse_ramp("0f:1,4f:0")),
        Edit(name="d", delta=LinearDirection(d), strength=-0.8),
    ]
    times = frame_times(8)
    out = apply_edits(ws, edits, times, fps=FPS)
    torch.testing.assert_close(apply_edits(ws, edits[::-1], times, fps=FPS), out, rtol=0, atol=1e-6)
    mapper_strength = 1.5 * torch.clamp(1.0 - torch.arange(8) / 4.0, min=0.0)
    # Each delta is computed on the unedited codes.
    expected = ws + mapper_strength[:, None, None] * 0.05 * mapper(ws) - 0.8 * d
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-5)


def test_dtype_is_kept_and_input_is_not_modified(ws: torch.Tensor) -> None:
    half = ws.to(torch.bfloat16)
    before = half.clone()
    edit = Edit(name="d", delta=LinearDirection(seeded(14, 512, seed=7)), strength=1.0)
    out = apply_edits(half, [edit], frame_times(8))
    assert out.dtype == torch.bfloat16 and torch.equal(half, before)
    with pytest.raises(ValueError, match=r"\[T, 14, 512\]"):
        apply_edits(ws[:, :13], [edit], frame_times(8))


def test_edits_read_the_cached_inversion_and_never_change_it(tmp_path: Path, mapper: LatentMapper) -> None:
    """Re-editing starts from the cached codes each time: results do not accumulate, the cache is untouched."""
    cache_file = tmp_path / "inversion.safetensors"
    save_file({"ws": seeded(6, 14, 512, seed=11), "offsets": seeded(6, 96, 4, 4, seed=12)}, str(cache_file))
    digest = hashlib.sha256(cache_file.read_bytes()).hexdigest()
    times = frame_times(6)
    direction = LinearDirection(seeded(14, 512, seed=13))

    cached = load_file(str(cache_file))
    first = apply_edits(cached["ws"], [Edit(name="d", delta=direction, strength=1.0)], times)
    cached = load_file(str(cache_file))
    second = apply_edits(cached["ws"], [Edit(name="d", delta=direction, strength=1.0)], times)
    third = apply_edits(cached["ws"], [Edit(name="m", delta=mapper, strength=0.5)], times)

    assert torch.equal(first, second)  # editing again gives the same codes, not a doubled edit
    torch.testing.assert_close(third, cached["ws"] + 0.5 * 0.05 * mapper(cached["ws"]), rtol=1e-6, atol=1e-5)
    assert hashlib.sha256(cache_file.read_bytes()).hexdigest() == digest


# --- tri-plane offsets ----------------------------------------------------------------------------

def test_offsets_are_kept_by_default_and_fade_with_the_edit_when_dropped() -> None:
    d = LinearDirection(seeded(14, 512, seed=8))
    times = frame_times(8)
    ramped = Edit(name="d", delta=d, strength=-2.0, ramp=parse_ramp("1s:0,2s:1"))
    constant = Edit(name="c", delta=d, strength=0.3)
    assert torch.equal(offset_weights([ramped], times, OffsetPolicy.KEEP), torch.ones(8))
    assert torch.equal(offset_weights([], times, OffsetPolicy.DROP), torch.ones(8))
    # Ramp 0 until 1 s, then up to full by 2 s: weights 1 before, 0 once the edit is fully on.
    expected = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(offset_weights([ramped], times, OffsetPolicy.DROP), expected, rtol=0, atol=1e-6)
    assert torch.equal(offset_weights([ramped, constant], times, OffsetPolicy.DROP), torch.zeros(8))
    assert OffsetPolicy("drop") is OffsetPolicy.DROP
