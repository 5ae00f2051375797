"""Narrow TriPlaneNet files: widths read from the tensors, the official layout, the real loader."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from nvsvideo.cameras.eg3d import intrinsics, lookat_cam2world, make_label
from nvsvideo.errors import WeightsError
from nvsvideo.models.triplanenet.checkpoint import (
    PREDICTOR_PREFIX,
    PSP_PREFIX,
    build_encoders,
    detect_variant,
    infer_widths,
    load_triplanenet,
    official_widths,
)
from nvsvideo.models.triplanenet.model import TriPlaneNet

from tiny_models import (
    TINY_RENDER_OPTIONS,
    TINY_TRIPLANENET_WIDTHS,
    save_tiny_eg3d,
    save_tiny_triplanenet,
    tiny_triplanenet,
)
from triplanenet_formula import MANIFESTS, read_manifest

VERSIONS = {"v1": "v1", "v2": "v2-pixelshuffle", "v2-nearest": "v2-nearest"}


@pytest.fixture(scope="module")
def tiny_eg3d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_eg3d(tmp_path_factory.mktemp("eg3d") / "tiny_eg3d.safetensors")


def load(path: Path, tiny_eg3d: Path) -> TriPlaneNet:
    return load_triplanenet(path, "cpu", eg3d_path=tiny_eg3d, render_options=TINY_RENDER_OPTIONS)


def manifest_tensors(interop_dir: Path, variant: str) -> dict[str, torch.Tensor]:
    """The official tensors of `variant` as shapes only (meta tensors)."""
    return {e.name: torch.empty(e.shape, device="meta") for e in read_manifest(interop_dir / MANIFESTS[variant])}


@pytest.mark.parametrize("variant", list(MANIFESTS))
def test_widths_read_from_the_official_tensors_are_the_official_ones(interop_dir: Path, variant: str) -> None:
    widths = infer_widths(manifest_tensors(interop_dir, variant), "x.pt")
    up = {"v1": (512, 384, 256, 96), "v2-pixelshuffle": (512, 384, 256, 96), "v2-nearest": (512, 256, 128, 64)}
    assert widths == official_widths(variant)  # type: ignore[arg-type]
    assert (widths.psp_stages, widths.predictor_stages) == ((64, 128, 256, 512), (64, 128, 256, 512))
    assert (widths.num_styles, widths.w_dim, widths.up_channels) == (14, 512, up[variant])


@pytest.mark.parametrize("version", list(VERSIONS))
def test_tiny_files_have_the_official_layout(tmp_path: Path, version: str) -> None:
    obj = torch.load(save_tiny_triplanenet(tmp_path / "tiny.pt", version), weights_only=True)
    assert set(obj) == {"state_dict", "opts", "best_val_loss", "step"}
    state = obj["state_dict"]
    assert all(key.startswith((PSP_PREFIX, PREDICTOR_PREFIX)) for key in state), "no generator inside"
    assert obj["opts"]["n_styles"] == 14
    assert obj["opts"].get("use_pixelshuffle") == {"v1": None, "v2": True, "v2-nearest": False}[version]
    assert detect_variant(state, "tiny.pt") == VERSIONS[version]
    assert infer_widths(state, "tiny.pt") == TINY_TRIPLANENET_WIDTHS


def test_tiny_models_are_seeded_and_leave_the_global_generator_alone() -> None:
    state = torch.get_rng_state()
    first, again, other = (tiny_triplanenet("v1", seed).state_dict() for seed in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    key = PSP_PREFIX + "input_layer.0.weight"
    assert not torch.equal(first[key], other[key])


@pytest.mark.parametrize("version", list(VERSIONS))
def test_tiny_files_load_strictly_into_the_same_model(tmp_path: Path, tiny_eg3d: Path, version: str) -> None:
    expected = tiny_triplanenet(version)
    model = load(save_tiny_triplanenet(tmp_path / "tiny.pt", version), tiny_eg3d)
    assert model.version == expected.version and model.render_options == TINY_RENDER_OPTIONS
    ours, theirs = model.state_dict(), expected.state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    # The architecture beyond the tensors (e.g. the U-Net upsampling) must match too: same outputs.
    torch.manual_seed(0)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    assert torch.equal(model.psp_encoder(x), expected.psp_encoder(x))
    planes0 = torch.randn(1, 96, 256, 256)
    if version == "v1":
        inputs = (torch.randn(1, 6, 256, 256),)
    else:
        inputs = (torch.randn(1, 9, 256, 256), planes0)
    assert torch.equal(model.triplanenet_encoder(*inputs), expected.triplanenet_encoder(*inputs))


def test_a_loaded_tiny_v2_inverts_exactly_like_the_in_memory_one(tmp_path: Path, tiny_eg3d: Path) -> None:
    model = load(save_tiny_triplanenet(tmp_path / "tiny.pt", "v2"), tiny_eg3d)
    expected = tiny_triplanenet("v2")
    assert torch.equal(model.latent_avg, expected.latent_avg)
    torch.manual_seed(1)
    x = torch.rand(1, 3, 512, 512) * 2 - 1
    c = torch.from_numpy(make_label(lookat_cam2world(20.0, 5.0), intrinsics())).float()[None]
    ours = model.invert(x, c, rng=torch.Generator().manual_seed(7))
    theirs = expected.invert(x, c, rng=torch.Generator().manual_seed(7))
    for field in dataclasses.fields(ours):
        a, b = getattr(ours, field.name), getattr(theirs, field.name)
        assert torch.isfinite(a).all() and torch.equal(a, b), field.name
    assert ours.image.shape == (1, 3, 128, 128) and ours.depth.shape == (1, 1, 32, 32)
    # Tests downstream need a model whose codes depend on the input, not a constant.
    assert not torch.allclose(model.encode_ws(torch.zeros(1, 3, 256, 256)), ours.ws)


def test_a_tiny_file_needs_an_eg3d_file(tmp_path: Path) -> None:
    path = save_tiny_triplanenet(tmp_path / "tiny.pt", "v1")
    with pytest.raises(WeightsError, match="--eg3d"):
        load_triplanenet(path, "cpu")


def test_a_file_predicting_other_than_14_styles_is_refused(tmp_path: Path, tiny_eg3d: Path) -> None:
    widths = dataclasses.replace(TINY_TRIPLANENET_WIDTHS, num_styles=10)
    path = save_tiny_triplanenet(tmp_path / "tiny.pt", "v2", widths=widths)
    with pytest.raises(WeightsError, match="10 styles"):
        load(path, tiny_eg3d)


def test_codes_the_generator_cannot_take_are_refused(tmp_path: Path, tiny_eg3d: Path) -> None:
    widths = dataclasses.replace(TINY_TRIPLANENET_WIDTHS, w_dim=64)
    path = save_tiny_triplanenet(tmp_path / "tiny.pt", "v1", widths=widths)
    with pytest.raises(WeightsError, match="14 w vectors of size 64.*takes 14 of size 512"):
        load(path, tiny_eg3d)


def test_a_v2_head_that_fits_neither_upsampling_is_refused() -> None:
    with torch.device("meta"):
        psp, predictor = build_encoders("v2-nearest", TINY_TRIPLANENET_WIDTHS)
    state = {PSP_PREFIX + k: v for k, v in psp.state_dict().items()}
    state.update({PREDICTOR_PREFIX + k: v for k, v in predictor.state_dict().items()})
    # Last U-Net block 16 wide: the head takes 16 channels (nearest) or 4 (pixel shuffle), never 8.
    state[PREDICTOR_PREFIX + "final_head_two.0.weight"] = torch.empty(96, 96 + 8, 3, 3, device="meta")
    with pytest.raises(WeightsError, match="unknown kind"):
        detect_variant(state, "x.pt")


def test_a_file_missing_a_tensor_the_widths_come_from_is_refused(tmp_path: Path) -> None:
    state = torch.load(save_tiny_triplanenet(tmp_path / "tiny.pt", "v1"), weights_only=True)["state_dict"]
    del state[PREDICTOR_PREFIX + "up3.conv.double_conv.1.weight"]
    with pytest.raises(WeightsError, match="lacks the tensor 'triplanenet_encoder.up3"):
        infer_widths(state, "tiny.pt")
