"""TriPlaneNet encoders on their own: official names and shapes, checkpoint detection and refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nvsvideo.errors import WeightsError
from nvsvideo.models.triplanenet.checkpoint import (
    PREDICTOR_PREFIX,
    PSP_PREFIX,
    build_encoders,
    detect_variant,
    read_triplanenet,
)
from nvsvideo.models.triplanenet.model import mirror_camera
from nvsvideo.models.triplanenet.offsets_v1 import TriPlaneOffsetsV1
from nvsvideo.models.triplanenet.offsets_v2 import TriPlanePredictorV2
from nvsvideo.models.triplanenet.psp import GradualStyleEncoder

from triplanenet_formula import MANIFESTS, ManifestEntry, read_manifest

VARIANTS = list(MANIFESTS)


def manifest(interop_dir: Path, variant: str) -> list[ManifestEntry]:
    return read_manifest(interop_dir / MANIFESTS[variant])


def encoder_entries(entries: list[ManifestEntry]) -> list[tuple[str, tuple[int, ...]]]:
    return [(e.name, e.shape) for e in entries if e.name.startswith((PSP_PREFIX, PREDICTOR_PREFIX))]


def meta_state_dict(entries: list[ManifestEntry]) -> dict[str, torch.Tensor]:
    """Tensors with the manifest's names and shapes, without memory (enough for shape-based detection)."""
    return {e.name: torch.empty(e.shape, device="meta") for e in entries}


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_names_and_shapes_match_the_official_manifest(interop_dir: Path, variant: str) -> None:
    with torch.device("meta"):
        psp, predictor = build_encoders(variant)  # type: ignore[arg-type]
    ours = [(PSP_PREFIX + k, tuple(v.shape)) for k, v in psp.state_dict().items()]
    ours += [(PREDICTOR_PREFIX + k, tuple(v.shape)) for k, v in predictor.state_dict().items()]
    assert ours == encoder_entries(manifest(interop_dir, variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_is_detected_from_the_tensor_shapes(interop_dir: Path, variant: str) -> None:
    assert detect_variant(meta_state_dict(manifest(interop_dir, variant)), "x.pt") == variant


def test_stylegan2_psp_with_18_styles_is_refused(tmp_path: Path) -> None:
    # pSp for StyleGAN2 FFHQ-1024: `encoder.` + 18 style heads, `decoder.` StyleGAN2, plus latent_avg.
    state = {f"encoder.styles.{k}.linear.weight": torch.zeros(2, 2) for k in range(18)}
    state["decoder.style.1.weight"] = torch.zeros(2, 2)
    path = tmp_path / "psp_ffhq_encode.pt"
    torch.save({"state_dict": state, "opts": {"n_styles": 18}, "latent_avg": torch.zeros(18, 512)}, path)
    with pytest.raises(WeightsError, match="18 styles"):
        read_triplanenet(path)


def test_18_style_psp_encoder_under_triplanenet_names_is_refused(interop_dir: Path) -> None:
    state = meta_state_dict(manifest(interop_dir, "v1"))
    for k in range(14, 18):
        state[f"psp_encoder.styles.{k}.linear.weight"] = torch.empty(512, 512, device="meta")
    with pytest.raises(WeightsError, match="18 styles"):
        detect_variant(state, "x.pt")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"weights": [1, 2, 3]}, "no model state dict"),
        ({"state_dict": {"conv.weight": torch.zeros(1)}}, "not a TriPlaneNet"),
        ({"state_dict": {f"psp_encoder.styles.{k}.linear.weight": torch.zeros(1) for k in range(14)}}, "no tri-plane predictor"),
    ],
)
def test_files_that_are_not_triplanenet_are_refused(tmp_path: Path, payload: dict, match: str) -> None:
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(WeightsError, match=match):
        read_triplanenet(path)


def test_unsafe_and_missing_files_are_weights_errors(tmp_path: Path) -> None:
    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": {}, "obj": Path("x")}, path)  # a non-allow-listed class
    with pytest.raises(WeightsError, match="safe loader refuses"):
        read_triplanenet(path)
    with pytest.raises(WeightsError, match="does not exist"):
        read_triplanenet(tmp_path / "missing.pt")


def test_mirror_camera_negates_the_reflected_pose_entries() -> None:
    c = torch.arange(1, 26, dtype=torch.float32)[None]
    c[0, 12:16] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # a cam2world's last row
    m = mirror_camera(c)
    pose, pose_m = c[0, :16].view(4, 4), m[0, :16].view(4, 4)
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    assert torch.equal(pose_m, flip @ pose @ flip)
    assert torch.equal(m[:, 16:], c[:, 16:])
    assert torch.equal(mirror_camera(m), c)


def test_tiny_encoders_have_the_documented_output_shapes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 256, 256)
    psp = GradualStyleEncoder(stage_channels=(16, 16, 32, 32), head_channels=32).eval()
    assert psp(x).shape == (2, 14, 512)
    v1 = TriPlaneOffsetsV1(stage_channels=(16, 16, 32, 32), up_channels=(16, 16, 16, 16)).eval()
    assert v1(torch.randn(2, 6, 256, 256)).shape == (2, 96, 256, 256)
    for upsample in ("pixel_shuffle", "nearest"):
        v2 = TriPlanePredictorV2(upsample, stage_channels=(16, 16, 32, 32), up_channels=(16, 16, 16, 16)).eval()
        planes0 = torch.randn(2, 96, 256, 256)
        assert v2(torch.randn(2, 9, 256, 256), planes0).shape == planes0.shape
