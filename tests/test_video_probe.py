"""probe(): exact rates, counted frames, rotation, audio streams, truncation."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from nvsvideo.video import VideoReader, VideoWriter, probe
from nvsvideo.video.probe import normalize_rotation

from media import make_clip, make_faststart, make_truncated


def test_ntsc_rate_is_an_exact_fraction(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "ntsc.mp4", frames=24, rate="30000/1001"))
    assert info.fps == Fraction(30000, 1001)
    assert info.time_base == Fraction(1, 30000)
    assert (info.frame_count, info.header_frame_count, info.expected_frame_count) == (24, 24, 24)
    assert info.duration == pytest.approx(24 * 1001 / 30000)
    assert not info.variable_frame_rate and not info.truncated
    assert (info.width, info.height, info.rotation, info.codec, info.pix_fmt) == (64, 48, 0, "h264", "yuv420p")
    assert [(a.codec, a.sample_rate, a.channels) for a in info.audio] == [("aac", 48000, 1)]
    assert info.to_dict()["fps"] == "30000/1001"


def test_real_clip(fixtures_dir: Path) -> None:
    info = probe(fixtures_dir / "single_face.mp4")
    assert (info.width, info.height, info.fps, info.frame_count) == (640, 360, Fraction(30), 72)
    assert info.duration == pytest.approx(2.4)
    assert [(a.codec, a.sample_rate, a.channels) for a in info.audio] == [("mp3", 44100, 2)]
    assert "30 fps" in info.describe()


def test_matroska_has_no_frame_count_in_its_header_so_it_is_counted(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "clip.mkv", frames=20, rate="30000/1001"))
    assert info.header_frame_count is None
    assert info.frame_count == 20
    # Matroska's 1 ms ticks round 33.367 ms to 33 or 34: still a constant, exactly known rate.
    assert info.fps == Fraction(30000, 1001)
    assert not info.variable_frame_rate


def test_variable_frame_rate_is_flagged(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "vfr.mp4", frames=24, vfr=True))
    assert info.variable_frame_rate
    assert info.frame_count == 24
    assert 20 < float(info.fps) < 29.97  # the mean rate: every other gap is 1.5x longer
    # The mean comes from the timestamps, so a copy with the same timestamps reports the same rate (the
    # header's average rate differed between muxers).
    pts = [int(t) for b in VideoReader(info.path) for t in b.pts]
    assert info.fps == Fraction(len(pts) - 1, pts[-1] - pts[0]) / info.time_base
    copy = tmp_path / "copy.mp4"
    with VideoWriter(copy, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base) as writer:
        for batch in VideoReader(info.path, info=info):
            writer.write(batch.frames, batch.pts)
    assert probe(copy).fps == info.fps


@pytest.mark.parametrize("stored", [90, 180, -90])
def test_rotation_metadata_gives_display_size(tmp_path: Path, stored: int) -> None:
    info = probe(make_clip(tmp_path / "rot.mp4", width=64, height=48, rotation=stored, audio=False))
    assert info.rotation == stored % 360
    assert (info.coded_width, info.coded_height) == (64, 48)
    assert (info.width, info.height) == ((48, 64) if stored % 180 else (64, 48))


def test_truncated_file_is_flagged_with_its_expected_length(tmp_path: Path) -> None:
    whole = make_faststart(make_clip(tmp_path / "whole.mp4", frames=48, width=160, height=120), tmp_path / "fs.mp4")
    info = probe(make_truncated(whole, tmp_path / "cut.mp4", keep=0.5))
    assert info.truncated
    assert 0 < info.frame_count < 48
    assert info.expected_frame_count == 48
    assert "truncated" in info.describe()


def test_truncated_file_counts_the_frames_that_decode(tmp_path: Path) -> None:
    # Cutting a file mid-packet leaves a partial last packet: present in the file, but no frame.
    whole = make_faststart(make_clip(tmp_path / "whole.mp4", frames=48, width=320, height=240), tmp_path / "fs.mp4")
    for keep in (0.2, 0.5, 0.9):
        cut = make_truncated(whole, tmp_path / f"cut{keep}.mp4", keep=keep)
        info = probe(cut)
        decoded = sum(len(batch.frames) for batch in VideoReader(cut, info=info))
        assert info.frame_count == decoded and info.expected_frame_count == 48, keep


@pytest.mark.parametrize(("angle", "snapped"), [(0, 0), (90, 90), (-90, 270), (-180, 180), (180.4, 180), (29, 0)])
def test_normalize_rotation(angle: float, snapped: int) -> None:
    assert normalize_rotation(angle) == snapped


def test_raw_stream_without_timestamps_uses_the_guessed_rate(tmp_path: Path) -> None:
    info = probe(make_clip(tmp_path / "clip.h264", frames=24, rate="30000/1001", audio=False))
    assert (info.frame_count, info.header_frame_count, info.fps) == (24, None, Fraction(30000, 1001))
    assert info.duration == pytest.approx(24 * 1001 / 30000)
