"""The streaming align stage (`StreamAligner`) equals the whole-track `smooth_alignment`, frame for frame."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from nvsvideo.face.crop import five_points
from nvsvideo.face.pose import mean_face, project
from nvsvideo.pipelines.align import (
    AlignConfig,
    FrameAlignment,
    StreamAligner,
    VideoAlignment,
    smooth_alignment,
)
from nvsvideo.temporal.smoothing import kernel_radius, sigma_frames
from nvsvideo.temporal.tracking import TrackStatus

HEIGHT = 720


def head_frames(n: int, fps: float, missing: set[int], seed: int = 0) -> list[FrameAlignment]:
    """A turning, moving, noisy head (yaw up to 50 degrees), with no subject in the `missing` frames."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        t = i / fps
        if i in missing:
            frames.append(FrameAlignment(i, i, t, TrackStatus.MISSING))
            continue
        rotation = Rotation.from_euler("yxz", [50 * np.sin(t), 10 * np.cos(1.3 * t), 5 * np.sin(0.7 * t)],
                                       degrees=True).as_matrix()
        crop = project(mean_face(), rotation, np.array([0.0, 0.0, 20.0]))
        offset = np.array([400 + 120 * np.sin(0.5 * t), 200 + 40 * np.cos(0.9 * t)])
        landmarks = crop * (0.8 + 0.1 * np.sin(0.3 * t)) + offset + rng.normal(0, 1.5, crop.shape)
        frames.append(FrameAlignment(i, i, t, TrackStatus.DETECTED, landmarks))
    return frames


def whole_track(frames: list[FrameAlignment], config: AlignConfig, fps: float) -> VideoAlignment:
    alignment = VideoAlignment(source="synthetic", width=1280, height=HEIGHT, fps=fps, time_base=1 / fps,
                               frames=frames)
    smooth_alignment(alignment, config)
    return alignment


def streamed(frames: list[FrameAlignment], config: AlignConfig, fps: float
             ) -> tuple[list[FrameAlignment], StreamAligner, int]:
    """The frames as the aligner returns them, and the most frames it held back at once."""
    aligner = StreamAligner(config, fps, HEIGHT)
    out: list[FrameAlignment] = []
    held = 0
    for frame in frames:
        out += aligner.push(frame)
        held = max(held, frame.index + 1 - len(out))
    return out + aligner.finish(), aligner, held


def copies(frames: list[FrameAlignment]) -> list[FrameAlignment]:
    return [FrameAlignment(f.index, f.pts, f.time, f.status, f.landmarks, head_pose=f.head_pose,
                           crop_points=f.crop_points) for f in frames]


def with_deep3d_and_crop_points(frames: list[FrameAlignment], seed: int = 1) -> list[FrameAlignment]:
    """The frames with what the mesh backend and `--pose deep3d` add: the crop's own five points (off the
    landmarks' by a pixel or two) and a head pose (angles, translation) to move into the smoothed crop."""
    rng = np.random.default_rng(seed)
    for f in frames:
        if f.landmarks is not None:
            f.crop_points = five_points(f.landmarks) + rng.normal(0, 1.0, (5, 2))
            f.head_pose = np.concatenate([rng.normal(0, 0.2, 3), rng.normal(0, 0.1, 2), rng.normal(0.3, 0.1, 1)])
    return frames


CASES = {
    "default": (AlignConfig(), 30.0, 90, set()),
    # Gaps: at the start, in the middle (bridged by the smoothing as in the whole track), at the end.
    "gaps": (AlignConfig(), 30.0, 120, {0, 1, 2, *range(40, 47), 60, *range(112, 120)}),
    "25fps-strong": (AlignConfig(smooth=0.3), 25.0, 100, {50}),
    "shorter-than-window": (AlignConfig(), 30.0, 9, {4}),
    "causal": (AlignConfig(causal=True), 30.0, 60, {10, 11}),
    "off": (AlignConfig(smooth=0.0), 30.0, 30, {3}),
}


@pytest.mark.parametrize("deep3d", [False, True], ids=["landmarks", "deep3d"])
@pytest.mark.parametrize("case", CASES)
def test_streamed_crops_and_cameras_equal_the_whole_track(case: str, deep3d: bool) -> None:
    config, fps, n, missing = CASES[case]
    frames = head_frames(n, fps, missing)
    if deep3d:
        frames = with_deep3d_and_crop_points(frames)
    reference = whole_track(copies(frames), config, fps)
    out, aligner, _ = streamed(copies(frames), config, fps)
    assert [f.index for f in out] == list(range(n))
    for got, want in zip(out, reference.frames, strict=True):
        assert got.has_face == want.has_face
        if want.has_face:
            # Exact: the look-ahead is the kernel's whole support, so no truncation beyond the whole track's.
            assert got.transform.to_json() == want.transform.to_json()
            np.testing.assert_array_equal(got.label, want.label)
            np.testing.assert_array_equal(got.raw_label, want.raw_label)
            assert got.raw_square == want.raw_square and (got.residual is None) == deep3d
    assert aligner.metrics() == reference.metrics


def test_frames_wait_only_for_the_window() -> None:
    config, fps = AlignConfig(), 30.0
    _, aligner, held = streamed(head_frames(200, fps, set()), config, fps)
    radius = kernel_radius(sigma_frames(config.smooth, fps))
    # A crop waits for `radius` later frames, its camera for `radius` more: 0.8 s at 30 f/s, whatever the length.
    assert aligner.lookahead == radius == 12
    assert held == 2 * radius
