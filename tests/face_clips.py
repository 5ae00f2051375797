"""Clips made from the real talking-face fixture, for tests that need a face with holes in it."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path

import numpy as np

from nvsvideo.video import VideoReader, VideoWriter, probe


def face_clip_with_gap(source: Path, path: Path, *, blank: Container[int], frames: int | None = None) -> Path:
    """Copy `source` (audio included), blacking out the frames in `blank`; keep the first `frames` frames."""
    info = probe(source)
    with VideoWriter(path, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
                     audio_from=source, crf=12) as writer:
        for batch in VideoReader(source, batch_size=16, info=info):
            keep = batch.indices < (frames if frames is not None else np.inf)
            if not keep.any():
                break
            images = batch.frames[keep].copy()
            for j, index in enumerate(batch.indices[keep].tolist()):
                if index in blank:
                    images[j] = 0
            writer.write(images, batch.pts[keep])
    return path
