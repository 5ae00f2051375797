"""Parity with the official TriPlaneNet forward pass (fixture shared/interop/parity/triplanenet_dev).

Encoders carry the fixture's formula weights (tests/triplanenet_formula.py), the generator is the
fixture's tiny EG3D. Tolerances are the fixture README's "suggested tests".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nvsvideo.models.eg3d.checkpoint import EG3DCheckpoint, load_eg3d
from nvsvideo.models.triplanenet.checkpoint import (
    PREDICTOR_PREFIX,
    PSP_PREFIX,
    TriPlaneNetCheckpoint,
    build_triplanenet,
    load_triplanenet,
)
from nvsvideo.models.triplanenet.model import TriPlaneNet, mirror_camera, to_encoder_resolution

from triplanenet_formula import MANIFESTS, FormulaConstants, formula_state_dict, read_manifest

pytestmark = pytest.mark.slow

#: Fixture output group per variant.
GROUP = {"v1": "v1", "v2-pixelshuffle": "v2_pixelshuffle", "v2-nearest": "v2_nearest"}


@pytest.fixture(scope="module")
def fixture_dir(interop_dir: Path) -> Path:
    return interop_dir / "parity" / "triplanenet_dev"


@pytest.fixture(scope="module")
def dev(fixture_dir: Path) -> tuple[dict, dict]:
    inputs = torch.load(fixture_dir / "inputs.pt", weights_only=True)
    outputs = torch.load(fixture_dir / "outputs.pt", weights_only=True)
    return inputs, outputs


@pytest.fixture(scope="module")
def tiny_eg3d_path(interop_dir: Path) -> Path:
    return interop_dir / "parity" / "eg3d_dev" / "tiny_eg3d.pkl"


@pytest.fixture(scope="module")
def formula_encoders(interop_dir: Path, dev: tuple[dict, dict]) -> Callable[[str], dict[str, torch.Tensor]]:
    """variant -> the fixture's encoder tensors (the shared pSp part is computed once)."""
    inputs, _ = dev
    f = inputs["formula"]
    constants = FormulaConstants(f["A_CONV"], f["A_LIN"], f["B"], f["P"], inputs["phase_offset"])
    cache: dict[str, dict[str, torch.Tensor]] = {}

    def make(variant: str) -> dict[str, torch.Tensor]:
        entries = read_manifest(interop_dir / MANIFESTS[variant])
        if PSP_PREFIX not in cache:
            cache[PSP_PREFIX] = formula_state_dict(entries, PSP_PREFIX, constants)
        return {**cache[PSP_PREFIX], **formula_state_dict(entries, PREDICTOR_PREFIX, constants)}

    return make


@pytest.fixture(scope="module")
def build(formula_encoders, tiny_eg3d_path: Path) -> Callable[[str], TriPlaneNet]:
    eg3d: EG3DCheckpoint = load_eg3d(tiny_eg3d_path)

    def make(variant: str) -> TriPlaneNet:
        ckpt = TriPlaneNetCheckpoint(variant, formula_encoders(variant), None, f"formula {variant}")  # type: ignore[arg-type]
        return build_triplanenet(ckpt, "cpu", eg3d=eg3d)

    return make


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR for the [-1, 1] range (peak-to-peak 2)."""
    return 10 * math.log10(4 / (a - b).double().square().mean().item())


def check_planes(planes: torch.Tensor, expected: dict, stem: str, *, atol: float, sum_rel: float, sum_abs: float) -> None:
    """Compare [1,96,256,256] planes with the fixture's sub8 / crop / per-channel sums."""
    assert (planes[:, :, ::8, ::8] - expected[f"{stem}_sub8"]).abs().max() <= atol
    assert (planes[:, :, 120:152, 100:132] - expected[f"{stem}_crop"]).abs().max() <= atol
    sums, sumsq = expected[f"{stem}_sum"], expected[f"{stem}_sumsq"]
    assert ((planes.double().sum((2, 3)) - sums).abs() <= sum_rel * (65536 * sumsq).sqrt() + sum_abs).all()
    assert ((planes.double().square().sum((2, 3)) - sumsq).abs() <= sum_rel * sumsq).all()


def check_final_render(out: dict, expected: dict, prefix: str) -> None:
    """Final renders: PSNR >= 65 dB and max |diff| <= 5e-2 for image and image_raw, mean |diff depth| <= 1e-3."""
    for key in ("image", "image_raw"):
        assert psnr(out[key], expected[prefix + key]) >= 65
        assert (out[key] - expected[prefix + key]).abs().max() <= 5e-2
    assert (out["image_depth"] - expected[prefix + "image_depth"]).abs().mean() <= 1e-3


def spy_renders(model: TriPlaneNet) -> list[dict]:
    """Record the output of every generator render the model makes."""
    calls: list[dict] = []
    render = model.decoder.render_planes

    def spy(planes, ws, c, **kwargs):
        out = render(planes, ws, c, **kwargs)
        calls.append({"c": c, "out": out})
        return out

    model.decoder.render_planes = spy  # type: ignore[method-assign]
    return calls


def test_the_512_crop_is_resized_like_the_official_dataset(dev) -> None:
    inputs, _ = dev
    x512 = inputs["image_u8"][None].float() / 127.5 - 1
    assert (to_encoder_resolution(x512, 256) - inputs["x"]).abs().max() < 1e-6
    assert torch.equal(mirror_camera(inputs["c"]), inputs["c_mirror"])


def test_v2_nearest_backbone_and_predictor_match_given_the_official_inputs(dev, build) -> None:
    # The end-to-end tests cover the other two variants; this one checks the nearest-upsampling predictor.
    _, outputs = dev
    model = build("v2-nearest")
    expected = outputs["v2_nearest"]
    with torch.no_grad():
        planes0 = model.decoder.synthesize_planes(outputs["common"]["ws"])
        planes = model.triplanenet_encoder(outputs["common_v2"]["predictor_input"], planes0)
    check_planes(planes0, outputs["common"], "planes0", atol=1e-3, sum_rel=1e-4, sum_abs=1e-2)
    check_planes(planes - planes0, expected, "planes_residual", atol=1e-2, sum_rel=1e-3, sum_abs=0.1)
    check_planes(planes, expected, "planes_final", atol=1e-2, sum_rel=1e-3, sum_abs=0.1)


def _end_to_end(model: TriPlaneNet, variant: str, dev) -> None:
    inputs, outputs = dev
    common, expected = outputs["common"], outputs[GROUP[variant]]
    calls = spy_renders(model)
    predictor_inputs: list[torch.Tensor] = []
    model.triplanenet_encoder.register_forward_pre_hook(lambda _m, args: predictor_inputs.append(args[0]))
    x512 = inputs["image_u8"][None].float() / 127.5 - 1
    # Same draws in the same order as the official call: seed the global generator, pass no rng.
    torch.manual_seed(inputs["seed"])
    result = model.invert(x512, inputs["c"])
    if variant != "v1":
        with torch.no_grad():
            model.render(result.planes, result.ws, inputs["c_mirror"])
    assert (result.ws - common["ws"]).abs().max() <= 1e-4
    assert (model.latent_avg.expand(14, -1) - common["latent_avg"]).abs().max() == 0
    check_planes(result.planes - result.offsets, common, "planes0", atol=1e-3, sum_rel=1e-4, sum_abs=1e-2)
    init = calls[0]["out"]
    assert psnr(F.adaptive_avg_pool2d(init["image"], 256), common["init_image_256"]) >= 80
    assert psnr(init["image_raw"], common["init_image_raw"]) >= 80
    assert (init["image_depth"] - common["init_image_depth"]).abs().mean() <= 1e-3
    official_input = expected["predictor_input"] if variant == "v1" else outputs["common_v2"]["predictor_input"]
    assert (predictor_inputs[0] - official_input).abs().max() <= 1e-2
    offsets = "offsets" if variant == "v1" else "planes_residual"
    check_planes(result.offsets, expected, offsets, atol=1e-2, sum_rel=1e-3, sum_abs=0.1)
    check_planes(result.planes, expected, "planes_final", atol=1e-2, sum_rel=1e-3, sum_abs=0.1)
    final = {"image": result.image, "image_raw": result.image_raw, "image_depth": result.depth}
    check_final_render(final, expected, "")
    if variant == "v1":
        assert len(calls) == 2
        return
    assert len(calls) == 4
    mirror_init = calls[1]["out"]
    common_v2 = outputs["common_v2"]
    assert psnr(F.adaptive_avg_pool2d(mirror_init["image"], 256), common_v2["init_mirror_image_256"]) >= 80
    assert (mirror_init["image_depth"] - common_v2["init_mirror_image_depth"]).abs().mean() <= 1e-3
    check_final_render(calls[3]["out"], expected, "mirror_")


def test_v1_end_to_end_from_a_checkpoint_file(dev, formula_encoders, tiny_eg3d_path: Path, tmp_path: Path) -> None:
    # An official-layout file without `decoder.*`; the generator comes from the EG3D file instead.
    path = tmp_path / "triplanenet_final.pth"
    torch.save({"state_dict": formula_encoders("v1"), "opts": {"n_styles": 14}, "step": 0}, path)
    model = load_triplanenet(path, "cpu", eg3d_path=tiny_eg3d_path)
    path.unlink()
    assert model.version == "v1"
    _end_to_end(model, "v1", dev)


def test_v2_pixelshuffle_end_to_end(dev, build) -> None:
    _end_to_end(build("v2-pixelshuffle"), "v2-pixelshuffle", dev)
