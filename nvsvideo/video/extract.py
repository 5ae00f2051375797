"""The extraction stage on its own: a video's frames as numbered PNG files plus `frames.json`.

The frames go into a hidden temporary folder beside the destination, which is renamed into place
only when every frame is written, so an interrupted run never leaves a half-filled folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from nvsvideo.errors import UsageError
from nvsvideo.files import atomic_directory
from nvsvideo.video.probe import VideoInfo, probe
from nvsvideo.video.reader import VideoReader

#: zlib level for the PNGs: lossless at any level; on 640x360 video frames level 1 writes 3x faster
#: than the default 6 (10 vs 29 ms) for files a fifth larger, the better trade for an intermediate stage.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class ExtractResult:
    """What `extract_frames` wrote."""

    out_dir: Path
    """The folder now holding the PNGs and frames.json."""
    frames_written: int
    """Number of PNG files."""
    fps: Fraction
    """The source's frame rate."""
    warning: str | None
    """Set when the source was truncated or damaged (the frames before the damage were written)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "output_dir": str(self.out_dir),
            "frames_written": self.frames_written,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "fps_float": float(self.fps),
            "warning": self.warning,
        }


def count_selected(info: VideoInfo, *, every: int, start: float | None, end: float | None) -> int:
    """About how many frames a selection keeps (for a progress bar's total), from the nominal rate.

    Raises:
        UsageError: the range is empty or starts after the video ends.
    """
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--end ({end}) must be after --start ({start})")
    if start is not None and start >= info.start_time + info.duration:
        raise UsageError(f"--start {start} is after the end of the video ({info.start_time + info.duration:.3f} s)")
    first = info.start_time if start is None else max(start, info.start_time)
    last = info.start_time + info.duration if end is None else min(end, info.start_time + info.duration)
    in_range = min(info.frame_count, max(0, round((last - first) * float(info.fps))))
    return -(-in_range // every)


def extract_frames(
    video: str | Path,
    out_dir: str | Path,
    *,
    every: int = 1,
    start: float | None = None,
    end: float | None = None,
    info: VideoInfo | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Write the selected frames of `video` as `<frame index>.png` (`000005.png` for frame 5) and a `frames.json`
    index into `out_dir`.

    Args:
        video: source file.
        out_dir: folder to create (it may exist if empty).
        every: keep one frame in `every`.
        start, end: keep frames with start <= t < end (seconds on the file's clock).
        info: a probe of `video` to reuse.
        on_progress: called with the number of frames written after each batch.

    Returns:
        what was written. frames.json holds `source`, `fps`, `time_base` ("num/den"), `source_rotation`
        (the frames themselves are already upright) and
        `frames`: a list of {index, pts, time_seconds, file}, with `index` counted from the first
        frame of the file and `pts` in ticks of `time_base`.

    Raises:
        InputError: the video cannot be read. UsageError: `out_dir` is taken.
    """
    video, out_dir = Path(video), Path(out_dir)
    info = info if info is not None else probe(video)
    reader = VideoReader(video, every=every, start=start, end=end, info=info)
    entries: list[dict[str, Any]] = []
    with atomic_directory(out_dir) as temp:
        for batch in reader:
            for image, index, pts, seconds in zip(
                batch.frames, batch.indices.tolist(), batch.pts.tolist(), batch.pts_seconds.tolist(), strict=True
            ):
                name = f"{index:06d}.png"  # by frame index, so "frame 5" is 000005.png whatever was skipped
                Image.fromarray(image).save(temp / name, compress_level=PNG_COMPRESS_LEVEL)
                entries.append({"index": index, "pts": pts, "time_seconds": seconds, "file": name})
            if on_progress is not None:
                on_progress(len(batch))
        if not entries:
            raise UsageError(f"no frames of {video.name} fall in the chosen --start/--end range")
        index = {
            "source": str(video),
            "fps": f"{info.fps.numerator}/{info.fps.denominator}",
            "time_base": f"{info.time_base.numerator}/{info.time_base.denominator}",
            "source_rotation": info.rotation,
            "frames": entries,
        }
        (temp / "frames.json").write_text(json.dumps(index, indent=1) + "\n")
    return ExtractResult(out_dir=out_dir, frames_written=len(entries), fps=info.fps, warning=reader.warning)
