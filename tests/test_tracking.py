"""Following one subject: selection, matching against other faces, gaps, real clips."""

from __future__ import annotations

import dataclasses

import av
import numpy as np
import pytest

from nvsvideo.errors import NoFaceError
from nvsvideo.face.boxes import box_iou
from nvsvideo.face.types import Face
from nvsvideo.temporal.tracking import (
    FaceTracker,
    TrackerConfig,
    TrackStatus,
    select_face,
    track_stream,
)


def face_at(x: float, y: float, size: float) -> Face:
    """A square face at (x, y) (top-left) whose landmarks are a fixed pattern scaled into its box."""
    pattern = np.linspace(0.1, 0.9, 68 * 2).reshape(68, 2)
    return Face(box=np.array([x, y, x + size, y + size]), score=1.0, landmarks=pattern * size + [x, y])


def run(tracker: FaceTracker, per_frame: list[list[Face]]):
    records = [r for faces in per_frame for r in tracker.update(faces)] + tracker.finish()
    assert [r.index for r in records] == list(range(len(per_frame)))  # in order, exactly once
    return records


def test_selection_by_size_and_index():
    faces = [face_at(0, 0, 50), face_at(100, 0, 80), face_at(200, 0, 30)]
    assert select_face(faces).area == 80 * 80
    assert select_face(faces, 2).area == 30 * 30
    assert select_face(faces, 3) is None


def test_subject_is_followed_and_other_faces_ignored():
    # The subject (80 px) drifts right; a bigger bystander appears later far away.
    frames = [[face_at(100 + 4 * i, 50, 80)] for i in range(5)]
    frames += [[face_at(400, 40, 120), face_at(120 + 4 * i, 50, 80)] for i in range(5)]
    records = run(FaceTracker(), frames)
    assert all(r.status is TrackStatus.DETECTED for r in records)
    assert [r.box[0] for r in records] == [100 + 4 * i for i in range(5)] + [120 + 4 * i for i in range(5)]


def test_face_index_picks_the_first_frame_with_enough_faces():
    frames = [[face_at(0, 0, 60)], [face_at(0, 0, 60), face_at(200, 0, 40)], [face_at(202, 0, 40)]]
    tracker = FaceTracker(TrackerConfig(face_index=1))
    records = run(tracker, frames)
    assert [r.status for r in records] == [TrackStatus.MISSING, TrackStatus.DETECTED, TrackStatus.DETECTED]
    assert records[2].box[0] == 202


def test_short_gap_is_interpolated_long_gap_and_ends_are_missing():
    cfg = TrackerConfig(max_gap=3)
    frames = [[]] * 2 + [[face_at(0, 0, 50)]] + [[]] * 3 + [[face_at(40, 0, 50)]] + [[]] * 4 + [[face_at(40, 0, 50)]] + [[]] * 2
    tracker = FaceTracker(cfg)
    records = run(tracker, frames)
    status = "".join(r.status.value[0] for r in records)
    assert status == "mm" + "d" + "iii" + "d" + "mmmm" + "d" + "mm"
    # Linear in time between the two detections at frames 2 and 6.
    assert [r.box[0] for r in records[3:6]] == pytest.approx([10, 20, 30])
    np.testing.assert_allclose(records[4].landmarks, face_at(20, 0, 50).landmarks)
    assert records[9].landmarks is None and records[9].box is None
    assert (tracker.summary.detected, tracker.summary.interpolated, tracker.summary.missing) == (3, 3, 8)


def test_subject_vanishing_while_a_stranger_stays_is_a_gap():
    frames = [[face_at(0, 0, 50), face_at(300, 0, 50)]] + [[face_at(300, 0, 50)]] * 2 + [[face_at(2, 0, 50)]]
    records = run(FaceTracker(), frames)
    assert [r.status.value for r in records] == ["detected", "interpolated", "interpolated", "detected"]
    assert records[1].box[0] < 5


def test_stream_pairs_payloads_with_their_records_and_holds_at_most_max_gap_plus_one():
    cfg = TrackerConfig(max_gap=2)
    per_frame = [[face_at(0, 0, 50)], [], [], [face_at(0, 0, 50)], [], [], [], []]
    held = []

    def items():
        for i, faces in enumerate(per_frame):
            held.append(i)
            yield i, faces

    out = []
    for payload, record in track_stream(items(), FaceTracker(cfg)):
        assert payload == record.index
        assert len(held) - len(out) <= cfg.max_gap + 1
        out.append(payload)
    assert out == list(range(len(per_frame)))


def read_frames(path) -> np.ndarray:
    """All frames of a (small) clip, uint8 [N, H, W, 3]."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


@pytest.fixture(scope="module")
def dlib_backend():
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from nvsvideo.face.backends.dlib_backend import DlibBackend

    return DlibBackend()


def test_real_clip_every_frame_detected(fixtures_dir, dlib_backend):
    frames = read_frames(fixtures_dir / "single_face.mp4")
    assert frames.shape == (72, 360, 640, 3)
    tracker = FaceTracker()
    records = run(tracker, [faces for start in range(0, 72, 16) for faces in dlib_backend.detect(frames[start:start + 16])])
    assert tracker.summary.detected == 72
    # The subject moves smoothly: consecutive boxes overlap strongly.
    assert min(box_iou(a.box, b.box) for a, b in zip(records, records[1:], strict=False)) > 0.5


def test_real_clip_with_blank_frames_inserted(fixtures_dir, dlib_backend):
    frames = read_frames(fixtures_dir / "single_face.mp4")[:20]
    blank = np.zeros_like(frames[:1])
    # 3 blank frames (filled) after frame 9, 8 blank frames (left missing) after frame 14.
    video = np.concatenate([frames[:10], *[blank] * 3, frames[10:15], *[blank] * 8, frames[15:]])
    tracker = FaceTracker(TrackerConfig(max_gap=5))
    records = run(tracker, dlib_backend.detect(video))
    status = [r.status for r in records]
    assert status[10:13] == [TrackStatus.INTERPOLATED] * 3
    assert status[18:26] == [TrackStatus.MISSING] * 8
    assert status.count(TrackStatus.DETECTED) == 20
    # Interpolated landmarks lie between their neighbours' detections.
    lo, hi = np.minimum(records[9].landmarks, records[13].landmarks), np.maximum(records[9].landmarks, records[13].landmarks)
    assert np.all((records[11].landmarks >= lo - 1e-9) & (records[11].landmarks <= hi + 1e-9))


def test_no_face_clip_is_a_no_face_error(fixtures_dir, dlib_backend):
    # Every 12th frame keeps this quick: faceless 960x540 frames also pay for the 2x upsampled retry.
    frames = read_frames(fixtures_dir / "no_face.mp4")[::12]
    tracker = FaceTracker()
    records = run(tracker, dlib_backend.detect(frames))
    assert all(r.status is TrackStatus.MISSING for r in records)
    with pytest.raises(NoFaceError, match="no face was found") as err:
        tracker.check_found("no_face.mp4")
    assert err.value.exit_code == 4
    with pytest.raises(NoFaceError, match="--face-index 2"):
        FaceTracker(TrackerConfig(face_index=2)).check_found("clip.mp4")


def test_meshes_are_carried_and_interpolated_with_the_landmarks():
    def with_mesh(face, value):
        return dataclasses.replace(face, mesh=np.full((468, 3), value, np.float64))

    frames = [[with_mesh(face_at(0, 0, 50), 0.0)], [], [with_mesh(face_at(10, 0, 50), 4.0)]]
    records = run(FaceTracker(TrackerConfig(max_gap=2)), frames)
    assert [r.status for r in records] == [TrackStatus.DETECTED, TrackStatus.INTERPOLATED, TrackStatus.DETECTED]
    np.testing.assert_allclose(records[1].mesh, 2.0)
    assert records[2].mesh[0, 0] == 4.0
    assert run(FaceTracker(), [[face_at(0, 0, 50)]])[0].mesh is None  # 2D backends carry none
