"""Deep3DFaceRecon cameras (`--pose deep3d`): parity with the official pipeline, safe loading, wiring.

The parity fixture (`shared/interop/parity/deep3d_dev`) holds the official code's outputs for two real
images with random network weights; tolerances are the ones its README states.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from nvsvideo.cameras.eg3d import DEEP3D_CAMERA_DISTANCE, FOCAL, mirror_label
from nvsvideo.cli import app
from nvsvideo.errors import WeightsError
from nvsvideo.face.crop import (
    ALIGN_RESCALE,
    ALIGN_WINDOW,
    CENTER_CROP,
    OUTPUT_SIZE,
    CropSquare,
    align_window,
    crop_square_from_landmarks,
    cut_window,
    fit_five_points,
    five_points,
)
from nvsvideo.face.deep3d import (
    RECON_RESCALE,
    Deep3DCameras,
    label_from_coeffs,
    load_pose_model,
    recon_crop,
    translation_in_square,
)
from nvsvideo.models.deep3d import COEFF_SLICES, INPUT_SIZE, ReconNet, layout_problems, load_recon_net

runner = CliRunner()
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def parity(interop_dir: Path) -> tuple[dict, dict, Path]:
    folder = interop_dir / "parity" / "deep3d_dev"
    if not folder.is_dir():
        pytest.skip(f"parity fixture not found at {folder}")
    inputs = torch.load(folder / "inputs.pt", weights_only=True)
    outputs = torch.load(folder / "outputs.pt", weights_only=True)
    return inputs, outputs, folder / "epoch_20.pth"


@pytest.fixture(scope="module")
def net(parity: tuple[dict, dict, Path]) -> ReconNet:
    return load_recon_net(parity[2])  # the fixture's file is float16


def images_and_points(inputs: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(image), inputs["landmarks5"][k].numpy()) for k, image in enumerate(inputs["images"])]


def test_pos_fit_and_window_geometry_match_the_official(parity: tuple[dict, dict, Path]) -> None:
    inputs, outputs, _ = parity
    for k, (image, points) in enumerate(images_and_points(inputs)):
        t, s = fit_five_points(points, image.shape[0])
        np.testing.assert_allclose(t, outputs["pos_t"][k].numpy(), rtol=0, atol=1e-6)
        assert s == pytest.approx(outputs["pos_s"][k].item(), rel=1e-9)
        for size, rescale, resized, box in (
            (INPUT_SIZE, RECON_RESCALE, outputs["resized_wh_224"][k], outputs["box224_lurb"][k]),
            (ALIGN_WINDOW, ALIGN_RESCALE, outputs["crop512_params"]["resized_wh"][k],
             outputs["crop512_params"]["box1024_lurb"][k]),
        ):
            window = align_window(t, s, image.shape[:2], size, rescale)
            assert window.resized == tuple(resized.tolist())
            assert [window.left, window.top, window.left + size, window.top + size] == box.tolist()


def test_recon_crop_and_official_512_crop_are_exact(parity: tuple[dict, dict, Path]) -> None:
    inputs, outputs, _ = parity
    inner = (ALIGN_WINDOW - CENTER_CROP) // 2
    for k, (image, points) in enumerate(images_and_points(inputs)):
        np.testing.assert_array_equal(recon_crop(image, points), outputs["crop224"][k].numpy())
        t, s = fit_five_points(points, image.shape[0])
        window = cut_window(image, align_window(t, s, image.shape[:2], ALIGN_WINDOW, ALIGN_RESCALE))
        centre = Image.fromarray(window[inner:inner + CENTER_CROP, inner:inner + CENTER_CROP])
        crop512 = np.asarray(centre.resize((OUTPUT_SIZE, OUTPUT_SIZE), Image.Resampling.LANCZOS))
        np.testing.assert_array_equal(crop512, outputs["crop512"][k].numpy())


def test_network_coefficients_from_the_stored_crops(parity: tuple[dict, dict, Path], net: ReconNet) -> None:
    _, outputs, _ = parity
    x = outputs["crop224"].permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        coeffs = net(x)
    torch.testing.assert_close(coeffs, outputs["coeffs"], rtol=0, atol=1e-4)
    for name, columns in outputs["coeff_slices"].items():
        assert COEFF_SLICES[name] == slice(*columns)


def test_labels_from_the_stored_pose(parity: tuple[dict, dict, Path]) -> None:
    _, outputs, _ = parity
    groups = outputs["coeff_groups"]
    pose = torch.cat([groups["angle"], groups["trans"]], dim=1).double().numpy()
    labels = label_from_coeffs(pose)
    np.testing.assert_allclose(labels, outputs["labels"].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(mirror_label(labels), outputs["labels_mirror"].numpy(), rtol=0, atol=1e-5)


def test_labels_end_to_end_from_image_and_five_points(parity: tuple[dict, dict, Path], net: ReconNet) -> None:
    inputs, outputs, _ = parity
    crops = np.stack([recon_crop(image, points) for image, points in images_and_points(inputs)])
    labels = label_from_coeffs(Deep3DCameras(net, CPU).predict(crops))
    np.testing.assert_allclose(labels, outputs["labels"].numpy(), rtol=0, atol=5e-4)


def test_frontal_pose_gives_the_frontal_official_camera() -> None:
    # No rotation, face at the reference depth: camera at 0.27 * (0, 0, 10) + (0, 0.006, 0.161), scaled to 2.7.
    label = label_from_coeffs(np.zeros(6))
    position = np.array([0.0, 0.006, 2.861]) * 2.7 / np.linalg.norm([0.0, 0.006, 2.861])
    np.testing.assert_allclose(label[[3, 7, 11]], position, atol=1e-12)
    np.testing.assert_allclose(label[:16].reshape(4, 4)[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    np.testing.assert_allclose(label[16:], [FOCAL, 0, 0.5, 0, FOCAL, 0.5, 0, 0, 1], atol=1e-12)


def _origin_in_frame(translation: np.ndarray, square: CropSquare) -> tuple[np.ndarray, float]:
    """Where the face origin appears (frame pixels, y down) and its apparent scale (pixels per model unit)."""
    depth = DEEP3D_CAMERA_DISTANCE - translation[2]
    focal = FOCAL * square.side  # frame pixels
    return np.array([square.cx + focal * translation[0] / depth, square.cy - focal * translation[1] / depth]), focal / depth


def test_translation_in_another_square_keeps_the_face_where_it_is() -> None:
    rng = np.random.default_rng(3)
    raw = CropSquare(cx=321.5, cy=180.25, side=233.0)
    t = np.array([0.05, -0.12, 0.3])
    np.testing.assert_allclose(translation_in_square(t, raw, raw), t, atol=1e-15)
    # Hand-checked: moving the crop right by FOCAL * side / (10 - t_z) pixels moves the face by one unit left.
    moved = CropSquare(raw.cx + FOCAL * raw.side / (DEEP3D_CAMERA_DISTANCE - t[2]), raw.cy, raw.side)
    np.testing.assert_allclose(translation_in_square(t, raw, moved), t - [1.0, 0.0, 0.0], atol=1e-12)
    for _ in range(5):
        used = CropSquare(raw.cx + rng.normal(0, 5), raw.cy + rng.normal(0, 5), raw.side * rng.uniform(0.9, 1.1))
        moved_t = translation_in_square(t, raw, used)
        (p_raw, scale_raw), (p_used, scale_used) = _origin_in_frame(t, raw), _origin_in_frame(moved_t, used)
        np.testing.assert_allclose(p_used, p_raw, atol=1e-9)
        assert scale_used == pytest.approx(scale_raw, rel=1e-12)


def test_float32_checkpoint_loads_the_same_weights(parity: tuple[dict, dict, Path], net: ReconNet,
                                                   tmp_path: Path) -> None:
    state = torch.load(parity[2], weights_only=True)["net_recon"]
    path = tmp_path / "epoch_20.pth"
    torch.save({"net_recon": {k: v.float() if v.is_floating_point() else v for k, v in state.items()}}, path)
    for (name, ours), theirs in zip(load_recon_net(path).state_dict().items(), net.state_dict().values(), strict=True):
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), name


def _meta_state() -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return ReconNet().state_dict()


def test_layout_check_names_what_differs() -> None:
    assert layout_problems({"net_recon": _meta_state()}) == []
    assert layout_problems({"net_recon": {k: v.half() for k, v in _meta_state().items()}}) == []
    assert "no 'net_recon'" in layout_problems(_meta_state())[0]
    missing = _meta_state()
    del missing["final_layers.6.bias"]
    assert layout_problems({"net_recon": missing}) == ["1 tensors missing (e.g. final_layers.6.bias)"]
    wrong = {**_meta_state(), "final_layers.3.weight": torch.empty(6, 2048, 1, 1, device="meta")}
    assert "wrong shape (e.g. final_layers.3.weight" in layout_problems({"net_recon": wrong})[0]
    extra = {**_meta_state(), "backbone.fc.weight": torch.empty(1000, 2048, device="meta")}
    assert layout_problems({"net_recon": extra}) == ["1 unexpected tensors (e.g. backbone.fc.weight)"]
    doubles = {k: v.double() if v.is_floating_point() else v for k, v in _meta_state().items()}
    assert "float16 or float32 expected" in layout_problems({"net_recon": doubles})[0]


def test_pose_choice_and_missing_or_corrupt_checkpoint(tmp_path: Path) -> None:
    assert load_pose_model("landmarks", tmp_path, CPU) is None
    assert load_pose_model("auto", tmp_path, CPU) is None  # no file: cameras from the landmarks
    with pytest.raises(WeightsError, match=r"epoch_20\.pth.*drive\.google\.com"):
        load_pose_model("deep3d", tmp_path, CPU)
    (tmp_path / "epoch_20.pth").write_bytes(b"\x80\x02 not really a checkpoint")
    for pose in ("auto", "deep3d"):
        with pytest.raises(WeightsError, match=r"epoch_20\.pth.*drive\.google\.com") as err:
            load_pose_model(pose, tmp_path, CPU)
        assert err.value.exit_code == 5
    torch.save({"net_recon": {"backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "epoch_20.pth")
    with pytest.raises(WeightsError, match="does not match the official network"):
        load_pose_model("auto", tmp_path, CPU)


def _landmarks_with_five(points: np.ndarray) -> list[list[float]]:
    """68 landmarks whose five alignment points are exactly `points` (the others at the nose)."""
    lm = np.tile(points[2], (68, 1))
    lm[36:42], lm[42:48], lm[48], lm[54] = points[0], points[1], points[3], points[4]
    np.testing.assert_array_equal(five_points(lm), points)
    return lm.tolist()


def test_align_stills_with_deep3d_give_the_official_labels(parity: tuple[dict, dict, Path], tmp_path: Path) -> None:
    inputs, outputs, checkpoint = parity
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "epoch_20.pth").symlink_to(checkpoint)
    for k, (image, points) in enumerate(images_and_points(inputs)):
        # One still per run: the file backend reads every still of a folder as frame 0.
        still, landmarks, out = tmp_path / f"{k}.png", tmp_path / f"{k}.json", tmp_path / f"aligned{k}"
        Image.fromarray(image).save(still)
        landmarks.write_text(json.dumps({"0": [_landmarks_with_five(points)]}))
        result = runner.invoke(app, ["align", str(still), "-o", str(out), "--landmarks", "file", "--landmarks-file",
                                     str(landmarks), "--weights", str(weights), "--quiet"])
        assert result.exit_code == 0, result.output
        [[_, label]] = json.loads((out / "dataset.json").read_text())["labels"]
        np.testing.assert_allclose(label, outputs["labels"][k].numpy(), rtol=0, atol=5e-4)
        assert json.loads((out / "tracks.json").read_text())["settings"]["pose"] == "deep3d"


def test_pose_deep3d_without_its_file_exits_5_before_any_work(fixtures_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "aligned"
    result = runner.invoke(app, ["align", str(fixtures_dir / "single_face.jpg"), "-o", str(out), "--pose", "deep3d",
                                 "--weights", str(tmp_path)])
    assert result.exit_code == 5, result.output
    assert "epoch_20.pth" in result.output and "drive.google.com" in result.output
    assert not out.exists()


def test_weights_lists_the_deep3d_checkpoint(tmp_path: Path) -> None:
    result = runner.invoke(app, ["weights", "--weights", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "deep3d-recon" in result.stdout and str(tmp_path / "epoch_20.pth") in result.stdout
    assert "drive.google.com/drive/folders/1liaIxn9smpudjjqMaWWRpP0mXRW_qRPP" in result.stdout


def test_video_cameras_come_from_deep3d_and_are_smoothed(parity: tuple[dict, dict, Path], net: ReconNet,
                                                         fixtures_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from nvsvideo.console import Reporter
    from nvsvideo.face.backends.dlib_backend import DlibBackend
    from nvsvideo.pipelines.align import AlignConfig, smooth_alignment, track_video
    from nvsvideo.video import VideoReader

    from face_clips import face_clip_with_gap

    clip = face_clip_with_gap(fixtures_dir / "single_face.mp4", tmp_path / "clip.mp4", blank=(), frames=6)
    model = Deep3DCameras(net, CPU)
    config = AlignConfig(smooth=0.0, batch_size=4, deep3d=model)
    alignment = track_video(clip, DlibBackend(), config, Reporter(quiet=True))
    assert alignment.settings["pose"] == "deep3d"
    frames = VideoReader(clip, batch_size=16).__iter__().__next__().frames
    faced = [f for f in alignment.frames if f.has_face]
    assert len(faced) == 6
    # Unsmoothed, each camera is the official one of the frame's own crop (the crop used is that crop).
    crops = np.stack([recon_crop(frames[f.index], five_points(f.landmarks)) for f in faced])
    expected = label_from_coeffs(model.predict(crops))
    np.testing.assert_allclose(np.stack([f.raw_label for f in faced]), expected, rtol=0, atol=1e-6)
    assert all(f.residual is None for f in faced)
    # Smoothing applies to Deep3D cameras too; the translation follows the smoothed square.
    smooth_alignment(alignment, AlignConfig(smooth=0.1, deep3d=model))
    for f in faced:
        raw = crop_square_from_landmarks(f.landmarks, alignment.height)
        assert f.raw_square == raw
    assert any(not np.allclose(f.label, f.raw_label) for f in faced)
    assert "jitter_pose_deg" in alignment.metrics


def test_a_one_pass_rerender_makes_the_whole_track_deep3d_cameras(net: ReconNet, fixtures_dir: Path,
                                                                 tmp_path: Path) -> None:
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from pass_through import run_pass_through

    from nvsvideo.console import Reporter
    from nvsvideo.face.backends.dlib_backend import DlibBackend
    from nvsvideo.pipelines.align import AlignConfig, VideoAlignment, track_video
    from nvsvideo.pipelines.invert import TRACKS_FILE
    from nvsvideo.pipelines.rerender import RerenderConfig
    from nvsvideo.temporal.tracking import TrackerConfig

    from face_clips import face_clip_with_gap

    # A gap the tracker bridges and one it does not: Deep3D batches of 3 tracked frames span both.
    clip = face_clip_with_gap(fixtures_dir / "single_face.mp4", tmp_path / "clip.mp4", blank=(2, 5, 6), frames=10)
    config = AlignConfig(batch_size=3, deep3d=Deep3DCameras(net, CPU), tracker=TrackerConfig(max_gap=1))
    summary = run_pass_through(clip, tmp_path / "out.mp4", tmp_path / "c.nvs", DlibBackend(),
                               RerenderConfig(batch_size=4, preset="ultrafast"), align_config=config)
    assert summary["frames"] == 10
    stored = VideoAlignment.load(tmp_path / "c.nvs" / TRACKS_FILE)
    whole = track_video(clip, DlibBackend(), config, Reporter(quiet=True))
    assert stored.settings["pose"] == whole.settings["pose"] == "deep3d"
    assert sum(f.has_face for f in whole.frames) == 8  # frame 2 bridged; 5 and 6 beyond --max-gap 1
    assert [f.to_json() for f in stored.frames] == [f.to_json() for f in whole.frames]
    assert stored.metrics == whole.metrics


def test_weights_verify_accepts_the_checkpoint(parity: tuple[dict, dict, Path]) -> None:
    from nvsvideo.weights.verify import verify_file

    result = verify_file(parity[2])
    assert result.ok and "332 tensors match the Deep3DFaceRecon network" in result.detail


def test_batch_options_check_the_pose(tmp_path: Path) -> None:
    from nvsvideo.errors import UsageError
    from nvsvideo.pipelines.batch import BatchJobOptions

    BatchJobOptions(pose="auto", weights_dir=str(tmp_path)).check()
    with pytest.raises(UsageError, match="unknown pose 'mesh'"):
        BatchJobOptions(pose="mesh").check()
    with pytest.raises(WeightsError, match=r"epoch_20\.pth"):
        BatchJobOptions(pose="deep3d", weights_dir=str(tmp_path)).check()
