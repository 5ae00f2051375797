"""TriPlaneNet data flow with narrow encoders and a tiny EG3D: what is encoded, rendered where, returned."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nvsvideo.errors import WeightsError
from nvsvideo.models.eg3d.checkpoint import TRAINING_ONLY_BUFFERS, EG3DCheckpoint
from nvsvideo.models.eg3d.config import ffhq512_128_checkpoint_config, ffhq_init_kwargs
from nvsvideo.models.eg3d.generator import TriPlaneGenerator
from nvsvideo.models.triplanenet.checkpoint import (
    TriPlaneNetCheckpoint,
    build_encoders,
    build_triplanenet,
    read_triplanenet,
)
from nvsvideo.models.triplanenet.model import InversionResult, RenderOptions, TriPlaneNet, mirror_camera
from nvsvideo.models.triplanenet.offsets_v1 import TriPlaneOffsetsV1
from nvsvideo.models.triplanenet.offsets_v2 import TriPlanePredictorV2
from nvsvideo.models.triplanenet.psp import GradualStyleEncoder

from triplanenet_formula import MANIFESTS, read_manifest

TINY_STAGES = (16, 16, 32, 32)
TINY_UP = (16, 16, 16, 16)
#: Cheap rendering for data-flow checks (the default official options are checked separately).
TINY_RENDER = RenderOptions(neural_rendering_resolution=32, samples_multiplier=0.25)


class UpsamplingSuperresolution(torch.nn.Module):
    """Stand-in for EG3D's super-resolution in data-flow tests: its 512-px convolutions would dominate the
    runtime and play no part in what is rendered where (the parity tests run the real one)."""

    def forward(self, rgb: torch.Tensor, features: torch.Tensor, ws: torch.Tensor, **kwargs) -> torch.Tensor:
        return F.interpolate(rgb, size=512, mode="nearest")


def tiny_generator() -> TriPlaneGenerator:
    kwargs = ffhq_init_kwargs()
    kwargs.update(channel_base=4096, channel_max=32)
    generator = TriPlaneGenerator(**kwargs).eval().requires_grad_(False)
    generator.backbone.mapping.w_avg.normal_(0, 0.5)  # a non-zero average latent, so adding it is visible
    return generator


def data_flow_generator() -> TriPlaneGenerator:
    generator = tiny_generator()
    generator.superresolution = UpsamplingSuperresolution()
    return generator


def tiny_model(version: str) -> TriPlaneNet:
    torch.manual_seed(0)
    predictor: TriPlaneOffsetsV1 | TriPlanePredictorV2
    if version == "v1":
        predictor = TriPlaneOffsetsV1(stage_channels=TINY_STAGES, up_channels=TINY_UP)
    else:
        predictor = TriPlanePredictorV2("pixel_shuffle", stage_channels=TINY_STAGES, up_channels=TINY_UP)
    psp = GradualStyleEncoder(stage_channels=TINY_STAGES, head_channels=TINY_STAGES[-1])
    model = TriPlaneNet(psp, predictor, data_flow_generator(), render_options=TINY_RENDER)
    return model.eval().requires_grad_(False)


@dataclass
class Flow:
    """One `invert` call on a spied model: every backbone, render and encoder call it made."""

    model: TriPlaneNet
    x: torch.Tensor
    c: torch.Tensor
    result: InversionResult
    renders: list[dict] = field(default_factory=list)
    backbone_calls: list[torch.Tensor] = field(default_factory=list)
    psp_inputs: list[torch.Tensor] = field(default_factory=list)
    predictor_inputs: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    rng: torch.Generator | None = None


def run_spied(version: str, batch: int = 2) -> Flow:
    model = tiny_model(version)
    flow = Flow(model, torch.rand(batch, 3, 512, 512) * 2 - 1, _cameras(batch), None)  # type: ignore[arg-type]
    render, backbone = model.decoder.render_planes, model.decoder.synthesize_planes

    def spy_render(planes, ws, c, **kwargs):
        out = render(planes, ws, c, **kwargs)
        flow.renders.append({"planes": planes, "ws": ws, "c": c, "kwargs": kwargs, "out": out})
        return out

    def spy_backbone(ws, **kwargs):
        flow.backbone_calls.append(ws)
        return backbone(ws, **kwargs)

    model.decoder.render_planes = spy_render  # type: ignore[method-assign]
    model.decoder.synthesize_planes = spy_backbone  # type: ignore[method-assign]
    model.psp_encoder.register_forward_pre_hook(lambda _m, args: flow.psp_inputs.append(args[0]))
    model.triplanenet_encoder.register_forward_pre_hook(lambda _m, args: flow.predictor_inputs.append(args))
    flow.rng = torch.Generator().manual_seed(5)
    flow.result = model.invert(flow.x, flow.c, rng=flow.rng)
    return flow


def _cameras(batch: int) -> torch.Tensor:
    """EG3D labels of cameras on the radius-2.7 sphere looking at the origin, yaw 0.3 rad apart."""
    labels = []
    for k in range(batch):
        yaw = torch.tensor(0.3 * k - 0.15)
        origin = torch.stack([2.7 * torch.sin(yaw), torch.tensor(0.1), 2.7 * torch.cos(yaw)])
        forward = -origin / origin.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0]))
        right = -right / right.norm()
        down = torch.linalg.cross(forward, right)
        pose = torch.eye(4)
        pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, origin
        intrinsics = torch.tensor([4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1])
        labels.append(torch.cat([pose.flatten(), intrinsics]))
    return torch.stack(labels)


@pytest.fixture(scope="module")
def flow_v1() -> Flow:
    return run_spied("v1")


@pytest.fixture(scope="module")
def flow_v2() -> Flow:
    return run_spied("v2")


def pooled(image: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(image, 256)


@pytest.mark.parametrize("name", ["flow_v1", "flow_v2"])
def test_invert_returns_codes_planes_and_the_input_view_render(name: str, request: pytest.FixtureRequest) -> None:
    flow: Flow = request.getfixturevalue(name)
    r = flow.result
    assert r.ws.shape == (2, 14, 512)
    assert r.planes.shape == r.offsets.shape == (2, 96, 256, 256)
    assert r.image.shape == (2, 3, 512, 512)
    assert r.image_raw.shape == (2, 3, 32, 32) and r.depth.shape == (2, 1, 32, 32)
    # Encoders read the 512 crop pooled to 256, once per frame; w+ = encoder output + average latent.
    assert len(flow.psp_inputs) == 1 and len(flow.predictor_inputs) == 1
    assert torch.allclose(flow.psp_inputs[0], pooled(flow.x), atol=1e-6)
    expected_ws = flow.model.psp_encoder(flow.psp_inputs[0]) + flow.model.decoder.backbone.mapping.w_avg
    assert torch.allclose(r.ws, expected_ws, atol=1e-5)
    # One backbone pass; offsets are relative to it, and the stored form reproduces the planes.
    assert len(flow.backbone_calls) == 1 and torch.equal(flow.backbone_calls[0], r.ws)
    planes0 = flow.model.decoder.synthesize_planes(r.ws)
    assert torch.allclose(r.planes - r.offsets, planes0, atol=1e-4)
    assert torch.allclose(flow.model.planes_from_offsets(r.ws, r.offsets), r.planes, atol=1e-4)
    # The last render is the final planes at the input camera, and it is what the result reports.
    final = flow.renders[-1]
    assert final["planes"] is r.planes and torch.equal(final["c"], flow.c)
    assert final["out"]["image"] is r.image and final["out"]["image_depth"] is r.depth
    for call in flow.renders:
        assert call["ws"] is r.ws
        assert call["kwargs"]["rng"] is flow.rng, "every ray sample must come from the caller's generator"
        assert call["kwargs"]["neural_rendering_resolution"] == 32
        assert call["kwargs"]["samples_multiplier"] == 0.25


def test_v1_renders_twice_at_the_input_camera_and_adds_offsets(flow_v1: Flow) -> None:
    r, renders = flow_v1.result, flow_v1.renders
    assert [torch.equal(call["c"], flow_v1.c) for call in renders] == [True, True]
    planes0 = renders[0]["planes"]
    assert torch.equal(r.planes, planes0 + r.offsets)
    (inputs,) = flow_v1.predictor_inputs[0]
    x256, y0 = flow_v1.psp_inputs[0], pooled(renders[0]["out"]["image"])
    assert torch.equal(inputs, torch.cat([y0, x256 - y0], dim=1))
    assert torch.equal(r.offsets, flow_v1.model.triplanenet_encoder(inputs))


def test_v2_renders_initial_planes_at_the_input_and_the_mirror_camera(flow_v2: Flow) -> None:
    r, renders = flow_v2.result, flow_v2.renders
    assert len(renders) == 3
    c, c_mirror = flow_v2.c, mirror_camera(flow_v2.c)
    assert torch.equal(renders[0]["c"], c) and torch.equal(renders[1]["c"], c_mirror)
    planes0 = renders[0]["planes"]
    assert renders[1]["planes"] is planes0
    inputs, planes0_arg = flow_v2.predictor_inputs[0]
    assert planes0_arg is planes0
    x256 = flow_v2.psp_inputs[0]
    y0, y0_mirror = pooled(renders[0]["out"]["image"]), pooled(renders[1]["out"]["image"])
    assert torch.equal(inputs, torch.cat([y0, x256 - y0, x256.flip(3) - y0_mirror], dim=1))
    # v2 predicts the planes themselves; the offsets are what it changed.
    assert torch.equal(r.planes, flow_v2.model.triplanenet_encoder(inputs, planes0))
    assert torch.equal(r.offsets, r.planes - planes0)


def test_rendering_with_a_seeded_generator_is_reproducible(flow_v1: Flow) -> None:
    model, r = flow_v1.model, flow_v1.result
    state = torch.get_rng_state()
    first = model.render(r.planes, r.ws, flow_v1.c, rng=torch.Generator().manual_seed(1))
    second = model.render(r.planes, r.ws, flow_v1.c, rng=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state), "an explicit generator must leave the global one alone"
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["image_depth"], second["image_depth"])
    other = model.render(r.planes, r.ws, flow_v1.c, rng=torch.Generator().manual_seed(2))
    assert not torch.equal(first["image_depth"], other["image_depth"])


def test_official_render_options_are_the_default() -> None:
    options = RenderOptions()
    assert options.neural_rendering_resolution == 128 and options.samples_multiplier == 2.0
    assert options.noise_mode == "const"


@pytest.mark.parametrize("variant", list(MANIFESTS))
def test_full_model_state_dict_matches_the_official_manifest(interop_dir: Path, variant: str) -> None:
    config = ffhq512_128_checkpoint_config()
    with torch.device("meta"):
        psp, predictor = build_encoders(variant)  # type: ignore[arg-type]
        model = TriPlaneNet(psp, predictor, TriPlaneGenerator(**config["init_kwargs"]))
    # The official TriPlaneNet's EG3D lacks the training-only buffers EG3D pickles carry.
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()
            if k.removeprefix("decoder.") not in TRAINING_ONLY_BUFFERS]
    assert ours == [(e.name, e.shape) for e in read_manifest(interop_dir / MANIFESTS[variant])]


def _meta_encoders(variant: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        psp, predictor = build_encoders(variant)  # type: ignore[arg-type]
    tensors = {f"psp_encoder.{k}": v for k, v in psp.state_dict().items()}
    tensors.update({f"triplanenet_encoder.{k}": v for k, v in predictor.state_dict().items()})
    return tensors


def test_a_checkpoint_without_generator_needs_an_eg3d_file() -> None:
    ckpt = TriPlaneNetCheckpoint("v2-nearest", _meta_encoders("v2-nearest"), None, "v2.pt")
    with pytest.raises(WeightsError, match="--eg3d"):
        build_triplanenet(ckpt, "cpu")


def test_generator_weights_inside_the_checkpoint_load_with_the_ffhq_512_config() -> None:
    generator = TriPlaneGenerator(**ffhq512_128_checkpoint_config()["init_kwargs"])
    # As in official TriPlaneNet files: the EG3D tensors minus the training-only buffers.
    decoder = {k: v for k, v in generator.state_dict().items() if k not in TRAINING_ONLY_BUFFERS}
    ckpt = TriPlaneNetCheckpoint("v1", _meta_encoders("v1"), decoder, "v1.pt")
    model = build_triplanenet(ckpt, "meta")  # the strict load happens before the move to `meta`
    assert model.decoder.neural_rendering_resolution == 128
    assert model.decoder.rendering_kwargs["depth_resolution"] == 48


def test_generator_weights_that_do_not_fit_ffhq_512_are_refused() -> None:
    decoder = tiny_generator().state_dict()
    ckpt = TriPlaneNetCheckpoint("v1", _meta_encoders("v1"), decoder, "v1.pt")
    with pytest.raises(WeightsError, match="does not fit"):
        build_triplanenet(ckpt, "meta")


def test_mis_shaped_encoder_weights_are_refused() -> None:
    tensors = _meta_encoders("v1")
    tensors["psp_encoder.latlayer1.weight"] = torch.empty(512, 255, 1, 1, device="meta")
    ckpt = TriPlaneNetCheckpoint("v1", tensors, None, "v1.pt")
    eg3d = EG3DCheckpoint(**ffhq512_128_checkpoint_config(), state_dict={}, source="eg3d.pkl")
    with pytest.raises(WeightsError, match="psp_encoder"):
        build_triplanenet(ckpt, "meta", eg3d=eg3d)


def test_read_sorts_tensors_by_role(tmp_path: Path) -> None:
    # Only the tensors detection reads, plus one generator tensor: enough to check the split.
    state = {f"psp_encoder.styles.{k}.linear.weight": torch.zeros(1) for k in range(14)}
    state["triplanenet_encoder.input_layer.0.weight"] = torch.zeros(64, 9, 3, 3)
    state["triplanenet_encoder.final_head_two.0.weight"] = torch.zeros(96, 160, 3, 3)
    state["decoder.backbone.mapping.w_avg"] = torch.ones(512)
    path = tmp_path / "triplanenet_v2_final.pth"
    torch.save({"state_dict": state, "opts": {"use_pixelshuffle": False}, "step": 3}, path)
    ckpt = read_triplanenet(path)
    assert ckpt.variant == "v2-nearest"
    assert set(ckpt.encoders) == set(state) - {"decoder.backbone.mapping.w_avg"}
    assert ckpt.decoder is not None and torch.equal(ckpt.decoder["backbone.mapping.w_avg"], torch.ones(512))
