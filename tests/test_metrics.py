"""The measures of `nvsvideo metrics` against hand-checked values, and their weight files' loading."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.metrics import frame_change, psnr, ssim, stability_summary
from nvsvideo.metrics.identity import ArcFace, arcface_input, cosine_similarity, load_arcface
from nvsvideo.metrics.lpips import (
    ALEX_CHANNELS,
    alexnet_features,
    layer_distance,
    load_lpips,
    scale_input,
    unit_normalize,
)
from nvsvideo.pipelines.metrics import (
    MetricsConfig,
    load_perceptual,
    per_frame_format,
    stability_regions,
    summarize,
    write_per_frame,
)

#: Narrow IR-SE-50 stages and embedding for a tiny ArcFace file in the official layout.
TINY_ARCFACE = ((16, 16, 32, 32), 8)


def constant(value: int, shape: tuple[int, ...] = (24, 24, 3)) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_psnr_of_constant_images_follows_from_their_mse() -> None:
    # |100 - 110| = 10 everywhere: MSE 100, PSNR = 10 log10(255² / 100) = 28.1308 dB.
    assert psnr(constant(100), constant(110)) == pytest.approx(28.130803608679106, abs=1e-9)
    # One pixel of 24x24x3 off by 255: MSE = 255² / 1728, PSNR = 10 log10(1728) = 32.3754 dB.
    one = constant(0)
    one[3, 4, 1] = 255
    assert psnr(constant(0), one) == pytest.approx(32.37543738142874, abs=1e-9)
    assert psnr(one, one) == math.inf


def test_ssim_of_identical_and_of_constant_images() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    # Constant images have no variance: SSIM is the luminance term (2·100·110 + C1) / (100² + 110² + C1),
    # C1 = (0.01·255)².
    c1 = (0.01 * 255) ** 2
    assert ssim(constant(100), constant(110)) == pytest.approx((2 * 100 * 110 + c1) / (100**2 + 110**2 + c1), abs=1e-12)
    assert ssim(image, 255 - image) < 0


def test_pixel_measures_refuse_mismatched_images() -> None:
    with pytest.raises(ValueError, match="one shape"):
        psnr(constant(0), constant(0, (24, 25, 3)))
    with pytest.raises(ValueError, match="uint8"):
        ssim(constant(0), constant(0).astype(np.float32))


def test_frame_change_is_the_mean_absolute_difference_in_levels() -> None:
    a = constant(10, (2, 2, 3))
    b = a.copy()
    b[0, 0] = (13, 16, 10)  # 3 + 6 + 0 over 12 values
    assert frame_change(a, b) == pytest.approx(0.75)
    assert frame_change(constant(0), constant(255)) == 255.0  # no uint8 wrap-around
    with pytest.raises(ValueError, match="shapes"):
        frame_change(constant(0), constant(0, (2, 2, 3)))


def test_stability_of_a_still_and_a_flickering_clip() -> None:
    # A nearly still input (one level of noise between frames), an output that flickers by 10 levels.
    still = [constant(100 + t % 2) for t in range(6)]
    flicker = [constant(100 + 10 * (t % 2)) for t in range(6)]
    steady = [constant(120 + t % 2) for t in range(6)]

    def changes(frames: list[np.ndarray]) -> list[float | None]:
        return [None] + [frame_change(a, b) for a, b in zip(frames, frames[1:], strict=False)]

    flickers = stability_summary(changes(still), changes(flicker))
    assert flickers == {"pairs": 5, "input_change": 1.0, "output_change": 10.0, "ratio": 10.0}
    assert stability_summary(changes(still), changes(steady))["ratio"] == 1.0
    # Pairs missing on either side are left out; an input that never changes has no ratio.
    assert stability_summary([None, 2.0, None, 4.0], [None, 1.0, 5.0, None]) == {
        "pairs": 1, "input_change": 2.0, "output_change": 1.0, "ratio": 0.5}
    assert stability_summary([None, 0.0], [None, 3.0])["ratio"] is None


def test_lpips_building_blocks_by_hand() -> None:
    # LPIPS v0.1 input scaling: (x - shift) / scale per channel.
    zero = scale_input(torch.zeros(1, 3, 1, 1)).flatten().tolist()
    assert zero == pytest.approx([0.030 / 0.458, 0.088 / 0.448, 0.188 / 0.450])
    a = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    b = torch.tensor([4.0, 3.0]).view(1, 2, 1, 1)
    assert unit_normalize(a).flatten().tolist() == pytest.approx([0.6, 0.8])
    # (0.6 - 0.8)² · 1 + (0.8 - 0.6)² · 2 = 0.12, averaged over one pixel.
    assert layer_distance(a, b, torch.tensor([1.0, 2.0])).tolist() == pytest.approx([0.12])
    # Spatial mean: one of two pixels differs -> half.
    a2, b2 = torch.cat([a, a], dim=3), torch.cat([b, a], dim=3)
    assert layer_distance(a2, b2, torch.tensor([1.0, 2.0])).tolist() == pytest.approx([0.06])


def save_lpips_files(folder: Path, seed: int = 0, scale: float = 1.0) -> tuple[Path, Path]:
    """Random AlexNet and LPIPS linear-layer files under the official names (torchvision's and lpips')."""
    torch.manual_seed(seed)
    backbone = {f"features.{k}": v for k, v in alexnet_features().state_dict().items()}
    backbone["classifier.1.weight"] = torch.zeros(4, 9216)  # present in torchvision's file, not used
    lin = {f"lin{k}.model.1.weight": scale * torch.rand(1, c, 1, 1) for k, c in enumerate(ALEX_CHANNELS)}
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(backbone, folder / "alexnet-owt-7be5be79.pth")
    torch.save(lin, folder / "alex.pth")
    return folder / "alexnet-owt-7be5be79.pth", folder / "alex.pth"


def test_lpips_from_official_format_files(tmp_path: Path) -> None:
    alex, lin = save_lpips_files(tmp_path / "a")
    model = load_lpips(alex, lin, torch.device("cpu"))
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    same, differ = model(x, x), model(x, y)
    assert same.tolist() == [0.0, 0.0] and bool((differ > 0).all())
    torch.testing.assert_close(model(y, x), differ)
    # The distance is linear in the learned weights: doubling them doubles it.
    alex2, lin2 = save_lpips_files(tmp_path / "b", scale=2.0)
    torch.testing.assert_close(load_lpips(alex2, lin2, torch.device("cpu"))(x, y), 2 * differ)
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in torch.load(lin).items() if not k.startswith("lin4")}, broken)
    with pytest.raises(WeightsError, match="lin4"):
        load_lpips(alex, broken, torch.device("cpu"))


def test_arcface_input_and_cosine_by_hand() -> None:
    grey = torch.full((1, 3, 512, 512), 0.25)
    assert arcface_input(grey).shape == (1, 3, 112, 112)
    torch.testing.assert_close(arcface_input(grey), torch.full((1, 3, 112, 112), 0.25))
    # The face box of the 256 image (rows 35:223, columns 32:220) is what is kept.
    marked = torch.zeros(1, 3, 256, 256)
    marked[:, :, 35:223, 32:220] = 1.0
    assert bool((arcface_input(marked) == 1.0).all())
    cos = cosine_similarity(torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.tensor([[1.0, 1.0], [-3.0, 0.0]]))
    assert cos.tolist() == pytest.approx([1 / math.sqrt(2), -1.0])


def save_tiny_arcface(path: Path) -> Path:
    torch.manual_seed(1)
    torch.save(ArcFace(*TINY_ARCFACE).state_dict(), path)
    return path


def test_arcface_from_an_official_format_file(tmp_path: Path) -> None:
    path = save_tiny_arcface(tmp_path / "model_ir_se50.pth")
    model = load_arcface(path, torch.device("cpu"))
    assert model.stage_channels == TINY_ARCFACE[0]
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    embeddings = model(x)
    assert embeddings.shape == (2, 8)
    torch.testing.assert_close(cosine_similarity(embeddings, model(x)), torch.ones(2))
    state = torch.load(path)
    del state["output_layer.3.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match="not an IR-SE-50"):
        load_arcface(path, torch.device("cpu"))


def test_perceptual_models_load_only_when_present(tmp_path: Path) -> None:
    home, hub = tmp_path / "home", tmp_path / "torch"
    env = {"TORCH_HOME": str(hub)}
    absent = load_perceptual(home, env, torch.device("cpu"))
    assert absent.lpips is None and absent.arcface is None
    lpips_note, identity_note = absent.notes
    assert lpips_note.startswith("LPIPS skipped") and str(home / "lpips" / "alex.pth") in lpips_note
    assert str(hub / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in lpips_note
    assert identity_note.startswith("identity skipped") and str(home / "model_ir_se50.pth") in identity_note
    alex, lin = save_lpips_files(tmp_path / "files")
    (home / "lpips").mkdir(parents=True)
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    lin.rename(home / "lpips" / "alex.pth")
    alex.rename(hub / "hub" / "checkpoints" / alex.name)
    save_tiny_arcface(home / "model_ir_se50.pth")
    present = load_perceptual(home, env, torch.device("cpu"))
    assert present.lpips is not None and present.arcface is not None and present.notes == []


def test_per_frame_files(tmp_path: Path) -> None:
    rows = [{"frame": 0, "time": 0.0, "face": True, "psnr": math.inf, "ssim": 1.0, "lpips": None, "identity": None,
             "input_change": None, "output_change": None},
            {"frame": 1, "time": 0.04, "face": False, "psnr": None, "ssim": None, "lpips": None, "identity": None,
             "input_change": 1.5, "output_change": 3.0}]
    write_per_frame(tmp_path / "f.csv", rows)
    read = list(csv.DictReader((tmp_path / "f.csv").open()))
    assert read[0]["psnr"] == "inf" and read[0]["lpips"] == "" and read[1]["output_change"] == "3.0"
    write_per_frame(tmp_path / "f.json", rows)
    data = json.loads((tmp_path / "f.json").read_text())
    assert data["frames"][0]["psnr"] is None and data["frames"][1]["input_change"] == 1.5
    assert data["columns"][:3] == ["frame", "time", "face"]
    with pytest.raises(UsageError, match=r"\.csv or \.json"):
        per_frame_format(tmp_path / "f.txt")


def test_a_missing_scikit_image_is_named_with_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "skimage", None)  # import fails as when it is not installed
    with pytest.raises(UsageError, match=r"nvsvideo\[metrics\]"):
        ssim(constant(1), constant(2))


def test_summary_statistics_stay_valid_json() -> None:
    rows = [{"face": True, "psnr": p, "ssim": 0.5, "lpips": None, "identity": None} for p in (30.0, math.inf)]
    recon = summarize(rows, MetricsConfig())["reconstruction"]
    assert recon["psnr"] == {"frames": 2, "mean": None, "min": 30.0, "max": None}
    assert recon["ssim"] == {"frames": 2, "mean": 0.5, "min": 0.5, "max": 0.5}
    assert recon["lpips"] == {"frames": 0, "mean": None, "min": None, "max": None}
    json.dumps(recon, allow_nan=False)


def test_stability_regions() -> None:
    frame, out, crop = constant(1, (8, 12, 3)), constant(2, (4, 4, 3)), constant(3, (6, 6, 3))
    # No face anywhere: whole frames. A rendered video of another size: taken whole beside the input crop.
    assert stability_regions(frame, out, None, None, use_crops=False, same_size=False) == (frame, out)
    assert stability_regions(frame, out, crop, None, use_crops=True, same_size=False) == (crop, out)
    # The input's size but no face in this frame: nothing to compare; no rendered video: only the input.
    assert stability_regions(frame, constant(2, (8, 12, 3)), None, None, use_crops=True, same_size=True) == (None, None)
    assert stability_regions(frame, None, crop, None, use_crops=True, same_size=True) == (crop, None)
