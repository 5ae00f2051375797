"""Compositing on the model's device, end to end (issue 19): with the model a pass-through, a lossless
`rerender --output paste` of the real face clip equals the one the Pillow/numpy crop and paste-back made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pil_compose
import pytest
from pass_through import pillow_functions, run_pass_through

from nvsvideo.pipelines.rerender import RerenderConfig
from nvsvideo.video import VideoReader

from face_clips import face_clip_with_gap


def frames_of(path: Path) -> np.ndarray:
    return np.concatenate([batch.frames for batch in VideoReader(path, batch_size=16)])


def test_lossless_paste_output_matches_the_pillow_compositing(fixtures_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("dlib", reason="the dlib extra is not installed")
    from nvsvideo.face.backends.dlib_backend import DlibBackend

    clip = face_clip_with_gap(fixtures_dir / "single_face.mp4", tmp_path / "clip.mp4", blank=range(5, 7), frames=12)
    backend = DlibBackend()
    config = RerenderConfig(crf=0, preset="ultrafast")
    ours = run_pass_through(clip, tmp_path / "ours.mp4", tmp_path / "a.nvs", backend, config)
    before = run_pass_through(clip, tmp_path / "before.mp4", tmp_path / "b.nvs", backend, config,
                              pillow_functions(pil_compose))
    assert ours["rendered"] == before["rendered"] == 12  # the two blank frames get interpolated crops
    got, want = frames_of(tmp_path / "ours.mp4"), frames_of(tmp_path / "before.mp4")
    assert got.shape == want.shape == (12, 360, 640, 3)
    diff = np.abs(got.astype(int) - want)
    # Measured: 99.997 % of the values equal, 99.999 % within one level. The rare two-level difference of
    # the compositing (`test_compose_resample`) can come back from 4:2:0 YUV as up to four in one channel.
    assert diff.max() <= 4 and np.mean(diff <= 1) > 0.9999 and np.mean(diff == 0) > 0.999
