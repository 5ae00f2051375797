"""Compositing on the model's device, end to end (issue 19): with the model a pass-through, a lossless
`rerender --output paste` of the real face clip keeps every source sample outside the faces and agrees with
the one the Pillow/numpy crop and paste-back made inside them."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pil_compose
import pytest
from pass_through import pillow_functions, run_pass_through

from nvsvideo.face.crop import crop_box
from nvsvideo.pipelines.align import VideoAlignment
from nvsvideo.pipelines.invert import TRACKS_FILE
from nvsvideo.pipelines.rerender import RerenderConfig

from face_clips import face_clip_with_gap


def pictures_of(path: Path) -> np.ndarray:
    """The decoded 4:2:0 pictures of a video, packed yuv420p [N, H·3/2, W], as int."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray() for frame in container.decode(video=0)]).astype(int)


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
    source, got, want = (pictures_of(p) for p in (clip, tmp_path / "ours.mp4", tmp_path / "before.mp4"))
    assert got.shape == want.shape == source.shape == (12, 540, 640)
    # Ours pastes into the decoded pictures: every sample outside the crop's square (widened to whole 2x2
    # chroma blocks) is the source's own, where the RGB round trip of the Pillow path changed some.
    luma, chroma = slice(0, 360), slice(360, None)
    for k, frame in enumerate(VideoAlignment.load(tmp_path / "a.nvs" / TRACKS_FILE).frames):
        x0, y0, x1, y1 = crop_box(frame.transform)
        x0, y0 = max(math.floor(x0) // 2 * 2, 0), max(math.floor(y0) // 2 * 2, 0)
        x1, y1 = math.ceil(x1) + 2, math.ceil(y1) + 2
        outside = np.ones((360, 640), bool)
        outside[y0:y1, x0:x1] = False
        np.testing.assert_array_equal(got[k, luma][outside], source[k, luma][outside])
        planes = np.concatenate([outside[::2, ::2].reshape(-1, 640), outside[::2, ::2].reshape(-1, 640)])
        np.testing.assert_array_equal(got[k, chroma][planes], source[k, chroma][planes])
    assert np.mean(got[:, luma] != source[:, luma]) > 0.01  # the faces were pasted
    # Inside, the faces are cut from the pictures and the renders resampled and blended plane by plane, chroma at
    # its own sites: measured 99.991 % of the luma and 99.82 % of the chroma samples within one level of the
    # Pillow path's, at most five apart. With the model a pass-through, a face-less output would be the
    # source: ours changes 0.08 % of its chroma samples (2.6 % of luma, by a level), the Pillow path 4.3 %.
    for part, share in ((luma, 0.9998), (chroma, 0.998)):
        diff = np.abs(got[:, part] - want[:, part])
        assert diff.max() <= 5 and np.mean(diff <= 1) > share
    assert np.mean(got[:, chroma] != source[:, chroma]) < 0.005
