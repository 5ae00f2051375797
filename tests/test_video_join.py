"""Reading a span of frames (with seeking), and joining separately encoded parts into one video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nvsvideo.errors import InputError
from nvsvideo.video import FrameSpan, VideoReader, VideoWriter, join_videos, probe

from media import audio_packets, make_clip


def decode(path: Path, span: FrameSpan | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, VideoReader]:
    """(frames, indices, pts) of a file or of one span of it, and the reader."""
    reader = VideoReader(path, batch_size=4, span=span)
    batches = list(reader)
    return (np.concatenate([b.frames for b in batches]), np.concatenate([b.indices for b in batches]),
            np.concatenate([b.pts for b in batches]), reader)



@pytest.fixture(scope="module")
def gop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 frames at 30000/1001 fps with a keyframe every 15 and B-frames (decode order != display order)."""
    return make_clip(tmp_path_factory.mktemp("join") / "gop.mp4", frames=90, keyint=15, width=96, height=64)


@pytest.mark.parametrize("start, stop", [(0, 7), (45, 60), (61, 62), (80, 90)])
def test_a_span_reads_the_same_frames_as_a_full_decode(gop_clip: Path, start: int, stop: int) -> None:
    frames, indices, pts, _ = decode(gop_clip)
    got, got_indices, got_pts, reader = decode(gop_clip, FrameSpan(start, stop, int(pts[start])))
    assert got_indices.tolist() == list(range(start, stop))
    assert got_pts.tolist() == pts[start:stop].tolist()
    np.testing.assert_array_equal(got, frames[start:stop])
    assert reader.warning is None


def test_a_span_late_in_the_file_seeks_instead_of_decoding_from_the_start(gop_clip: Path) -> None:
    pts = decode(gop_clip)[2]
    reader = decode(gop_clip, FrameSpan(80, 90, int(pts[80])))[3]
    # Decoding starts at a keyframe about a second (30 frames) before frame 80, not at frame 0.
    assert reader.frames_decoded <= 10


def test_a_seek_that_cannot_be_trusted_falls_back_to_counting_from_the_start(gop_clip: Path) -> None:
    frames, _, pts, _ = decode(gop_clip)
    # A timestamp no frame has: the first frame after the seek does not match, so the reader decodes
    # from the start and still returns frames 50..54 by index.
    got, indices, _, reader = decode(gop_clip, FrameSpan(50, 55, int(pts[50]) + 1))
    assert indices.tolist() == [50, 51, 52, 53, 54]
    np.testing.assert_array_equal(got, frames[50:55])
    assert reader.frames_decoded >= 55


def test_a_span_past_the_end_of_a_short_file_warns(gop_clip: Path) -> None:
    pts = decode(gop_clip)[2]
    _, indices, _, reader = decode(gop_clip, FrameSpan(85, 120, int(pts[85])))
    assert indices.tolist() == list(range(85, 90))
    assert reader.warning is not None and "decoded 90 of ~120 frames" in reader.warning


def test_a_span_cannot_be_combined_with_time_selection(gop_clip: Path) -> None:
    with pytest.raises(ValueError, match="span"):
        VideoReader(gop_clip, span=FrameSpan(0, 2, 0), every=2)


def encode(path: Path, frames: np.ndarray, pts: np.ndarray, source: Path, *, crf: int, audio: bool) -> Path:
    info = probe(source)
    with VideoWriter(path, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
                     crf=crf, preset="ultrafast", audio_from=source if audio else None) as writer:
        writer.write(frames, pts)
    return path


@pytest.mark.parametrize("vfr", [False, True], ids=["ntsc", "vfr"])
def test_joined_parts_equal_one_encode_with_exact_timestamps_and_the_source_audio(tmp_path: Path, vfr: bool) -> None:
    source = make_clip(tmp_path / "src.mp4", frames=30, vfr=vfr)
    frames, _, pts, _ = decode(source)
    # crf 0 is lossless, so the decoded frames are the same whichever way the video was cut.
    whole = encode(tmp_path / "whole.mp4", frames, pts, source, crf=0, audio=True)
    parts = [encode(tmp_path / f"part{a:02d}.mp4", frames[a:b], pts[a:b], source, crf=0, audio=False)
             for a, b in [(0, 11), (11, 12), (12, 30)]]
    assert join_videos(parts, tmp_path / "joined.mp4", audio_from=source) == 30
    joined_frames, _, joined_pts, _ = decode(tmp_path / "joined.mp4")
    assert joined_pts.tolist() == pts.tolist()
    np.testing.assert_array_equal(joined_frames, decode(whole)[0])
    assert audio_packets(tmp_path / "joined.mp4") == audio_packets(source)
    info = probe(tmp_path / "joined.mp4")
    assert info.frame_count == 30 and info.variable_frame_rate == vfr


def test_parts_with_b_frames_join_in_order(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "src.mp4", frames=40)
    frames, _, pts, _ = decode(source)
    info = probe(source)
    parts = []
    for a, b in [(0, 17), (17, 40)]:
        # The medium preset reorders frames: each part's decode times start before its display times.
        with VideoWriter(tmp_path / f"p{a}.mp4", width=info.width, height=info.height, fps=info.fps,
                         time_base=info.time_base, crf=18, preset="medium") as writer:
            writer.write(frames[a:b], pts[a:b])
        parts.append(writer.path)
    join_videos(parts, tmp_path / "joined.mp4", audio_from=source)
    joined, indices, joined_pts, _ = decode(tmp_path / "joined.mp4")
    assert len(indices) == 40 and joined_pts.tolist() == pts.tolist()
    # Packets are copied, not re-encoded: the joined file decodes to exactly what the parts decode to.
    np.testing.assert_array_equal(joined, np.concatenate([decode(p)[0] for p in parts]))


def test_a_part_encoded_differently_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    small = make_clip(tmp_path / "small.mp4", frames=4, audio=False)
    big = make_clip(tmp_path / "big.mp4", frames=4, audio=False, width=80)
    with pytest.raises(InputError, match="encoded differently"):
        join_videos([small, big], tmp_path / "out.mp4")
    assert list(tmp_path.glob("out*")) == [] and not list(tmp_path.glob(".out*"))


def test_overlapping_parts_are_refused(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    with pytest.raises(InputError, match="overlaps"):
        join_videos([clip, clip], tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_a_video_that_does_not_start_at_zero_keeps_its_timestamps(tmp_path: Path) -> None:
    # MP4 keeps the start offset in movie time; at the default millisecond clock 12012/30000 s
    # would come back as 12000 ticks.
    source = make_clip(tmp_path / "src.mp4", frames=20, audio=False)
    frames, _, pts, _ = decode(source)
    part = encode(tmp_path / "late.mp4", frames[12:], pts[12:], source, crf=18, audio=False)
    assert decode(part)[2].tolist() == pts[12:].tolist() and pts[12] == 12012
