"""Landmark backends: dlib on real faces, user files, and FAN's offline behaviour (no network needed)."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from nvsvideo.errors import InputError, UsageError, WeightsError
from nvsvideo.face.backends import fan_backend
from nvsvideo.face.backends.file_backend import FileBackend
from nvsvideo.face.landmarks import LandmarkConfig, create_backend, pixel_free
from nvsvideo.face.types import faces_by_size

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def dlib_backend():
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from nvsvideo.face.backends.dlib_backend import DlibBackend

    return DlibBackend()


def load_rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_face_layout(face) -> None:
    """The 68 points have the iBUG layout: eyes above the nose tip, nose above the mouth, all near the box."""
    lm = face.landmarks
    left_eye, right_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    nose, mouth = lm[30], lm[48:60].mean(0)
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < mouth[1]
    assert lm[0, 0] < left_eye[0] and lm[16, 0] > right_eye[0]  # jaw line from image-left to image-right
    size = face.box[2] - face.box[0]
    x1, y1, x2, y2 = face.box
    assert np.all((lm >= [x1 - 0.3 * size, y1 - 0.3 * size]) & (lm <= [x2 + 0.3 * size, y2 + 0.3 * size]))


def test_dlib_finds_one_face_with_ibug_layout(fixtures_dir, dlib_backend):
    import skimage.data

    frames = [load_rgb(fixtures_dir / "single_face.jpg"), skimage.data.astronaut()]
    for frame in frames:
        faces = dlib_backend.detect(frame[None])[0]
        assert len(faces) == 1
        assert faces[0].landmarks.dtype == np.float64 and faces[0].score > 0
        assert_face_layout(faces[0])


def test_dlib_batch_of_frames_and_multi_face_order(fixtures_dir, dlib_backend):
    image = load_rgb(fixtures_dir / "multi_face.jpg")
    batch = np.stack([image, np.zeros_like(image)])
    found, blank = dlib_backend.detect(batch)
    assert blank == []
    # Five people; HOG misses the one wearing sunglasses.
    assert len(found) == 4
    ordered = faces_by_size(found)
    areas = [f.area for f in ordered]
    assert areas == sorted(areas, reverse=True)
    assert ordered[0].box.tolist() == pytest.approx([673, 300, 798, 424], abs=4)  # the woman on the right
    for face in ordered:
        assert_face_layout(face)


def test_file_backend_landmarks_as_object_and_list(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 100, (68, 2)), rng.uniform(0, 100, (68, 2))
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    by_key = tmp_path / "lm.json"
    by_key.write_text(json.dumps({"1": a.tolist(), "2": [a.tolist(), b.tolist()]}))
    by_list = tmp_path / "lm_list.json"
    by_list.write_text(json.dumps([None, a.tolist(), [a.tolist(), b.tolist()]]))
    for path in (by_key, by_list):
        backend = create_backend(LandmarkConfig(backend="file", landmarks_file=path), CPU)
        first, second, third = backend.detect(frames)
        assert first == [] and len(second) == 1 and len(third) == 2
        np.testing.assert_array_equal(second[0].landmarks, a)
        np.testing.assert_array_equal(third[1].landmarks, b)
        assert second[0].box.tolist() == [*a.min(0), *a.max(0)]
        # `start` places the batch in the video.
        assert len(backend.detect(frames[:1], start=2)[0]) == 2


def test_file_backend_boxes_get_dlib_landmarks(fixtures_dir, tmp_path, dlib_backend):
    image = load_rgb(fixtures_dir / "single_face.jpg")
    reference = dlib_backend.detect(image[None])[0][0]
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({"0": reference.box.tolist()}))
    face = FileBackend.from_json(path).detect(image[None])[0][0]
    np.testing.assert_array_equal(face.landmarks, reference.landmarks)


@pytest.mark.parametrize("content", [
    "not json", '{"zero": []}', '{"0": [[1, 2, 3]]}', '"text"', '[[5, 5, 1, 9]]', '[[[3, 4]' + ', [3, 4]' * 67 + ']]',
    '[[0, 0, NaN, 9]]',
])
def test_file_backend_rejects_bad_files(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InputError):
        FileBackend.from_json(path)


def test_file_backend_needs_a_file_and_names_are_checked():
    with pytest.raises(UsageError, match="--landmarks-file"):
        create_backend(LandmarkConfig(backend="file"), CPU)
    with pytest.raises(UsageError, match="unknown landmark backend"):
        create_backend(LandmarkConfig(backend="mediapipe"), CPU)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NVSVIDEO_HOME", str(tmp_path / "weights"))  # no mesh files: auto does not take mesh
    return tmp_path / "hub" / "checkpoints"


def test_fan_missing_weights_are_named_with_their_folder(empty_torch_home):
    message = fan_backend.missing_weights_message("sfd")
    assert str(empty_torch_home) in message
    assert "2DFAN4-11f355bf06.pth.tar" in message and "s3fd-619a316812.pth" in message
    assert "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar" in message
    blaze = fan_backend.missing_weights_message("blazeface")
    assert "blazeface.pth" in blaze and "anchors.npy" in blaze and "s3fd" not in blaze
    empty_torch_home.mkdir(parents=True)
    (empty_torch_home / "2DFAN4-11f355bf06.pth.tar").touch()
    assert "2DFAN4" not in fan_backend.missing_weights_message("sfd")
    assert fan_backend.missing_weights_message("dlib") is None


def test_fan_checks_weights_before_building_anything(empty_torch_home, monkeypatch):
    # Pretend the package is installed: the weights check must fail before face_alignment is imported.
    monkeypatch.setattr(fan_backend, "fan_importable", lambda: True)
    with pytest.raises(WeightsError, match="2DFAN4-11f355bf06.pth.tar") as err:
        fan_backend.FanBackend(device=CPU)
    assert err.value.exit_code == 5
    with pytest.raises(UsageError, match="unknown FAN face detector"):
        fan_backend.FanBackend(device=CPU, face_detector="haar")


def test_fan_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(fan_backend, "fan_importable", lambda: False)
    with pytest.raises(UsageError, match=r"nvsvideo\[fan\]"):
        create_backend(LandmarkConfig(backend="fan"), CPU)


def test_auto_falls_back_to_dlib_without_fan_weights(empty_torch_home, dlib_backend):
    assert create_backend(LandmarkConfig(backend="auto"), CPU).name == "dlib"


class FakeFaceAlignment:
    """Stands in for face_alignment.FaceAlignment: keeps its arguments, answers like its batch API."""

    def __init__(self, landmarks_type, **kwargs):
        self.kwargs = kwargs

    def get_landmarks_from_batch(self, batch, detected_faces=None, return_bboxes=False, return_landmark_score=False):
        assert batch.dtype == torch.float32 and batch.shape[1] == 3  # B x 3 x H x W, RGB 0-255
        assert return_bboxes and return_landmark_score
        two = np.arange(2 * 68 * 2, dtype=np.float32).reshape(2 * 68, 2)  # 2 faces, points concatenated
        boxes = [np.array([[0, 0, 10, 10, 0.9], [20, 20, 40, 40, 0.8]]), np.zeros((0, 5))]
        return [two, []], [None, None], boxes


def test_fan_adapter_builds_offline_and_reads_the_batch_api(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("NVSVIDEO_HOME", str(tmp_path / "weights"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for name in ("2DFAN4-11f355bf06.pth.tar", "s3fd-619a316812.pth"):
        (folder / name).touch()
    fake = types.SimpleNamespace(FaceAlignment=FakeFaceAlignment, LandmarksType=types.SimpleNamespace(TWO_D=1))
    monkeypatch.setitem(sys.modules, "face_alignment", fake)
    monkeypatch.setattr(fan_backend, "fan_importable", lambda: True)
    backend = create_backend(LandmarkConfig(backend="auto"), CPU)
    assert backend.name == "fan"
    kwargs = backend._fa.kwargs
    assert kwargs["compile"] is False and kwargs["flip_input"] is False and kwargs["device"] == "cpu"
    assert kwargs["face_detector"] == "sfd"
    assert kwargs["face_detector_kwargs"] == {"path_to_detector": str(folder / "s3fd-619a316812.pth")}
    faces, none = backend.detect(np.zeros((2, 16, 16, 3), np.uint8))
    assert none == [] and len(faces) == 2
    assert faces[1].box.tolist() == [20, 20, 40, 40] and faces[1].score == pytest.approx(0.8)
    np.testing.assert_array_equal(faces[1].landmarks, np.arange(68 * 2, 2 * 68 * 2).reshape(68, 2))


def test_a_landmark_file_without_boxes_needs_no_pixels() -> None:
    points = np.random.default_rng(0).uniform(0, 50, (1, 68, 2))
    landmarks_only = FileBackend({3: (points, np.zeros((0, 4)))})
    assert pixel_free(landmarks_only) is landmarks_only
    faces = landmarks_only.faces_at([2, 3])
    assert faces[0] == [] and np.array_equal(faces[1][0].landmarks, points[0])
    # The same faces as `detect` gives with the pixels.
    via_pixels = landmarks_only.detect(np.zeros((2, 8, 8, 3), np.uint8), start=2)
    assert np.array_equal(via_pixels[1][0].landmarks, faces[1][0].landmarks)


def test_backends_that_read_pixels_are_not_pixel_free() -> None:
    class Detector:
        name = "detector"

        def detect(self, frames: np.ndarray, *, start: int = 0) -> list:
            return [[] for _ in frames]

    assert pixel_free(Detector()) is None
