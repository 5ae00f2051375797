"""Streaming reader and writer: batches, rotation, selection, truncation, and decode -> encode -> decode."""

from __future__ import annotations

import subprocess
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from nvsvideo.errors import UsageError
from nvsvideo.video import TruncatedVideoWarning, VideoReader, VideoWriter, probe, read_frames

from media import audio_packets, ffmpeg_exe, make_clip, make_faststart, make_truncated


def decode_all(path: Path) -> tuple[np.ndarray, list[Fraction]]:
    """All frames [N, H, W, 3] of a file and their exact times in seconds."""
    frames, times = [], []
    for batch in VideoReader(path):
        frames.append(batch.frames)
        times += [p * batch.time_base for p in batch.pts.tolist()]
    return np.concatenate(frames), times


def ffmpeg_rgb(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Frames [N, H, W, 3] as the ffmpeg command line decodes them (display matrix and colour tags applied)."""
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(shape)



def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two same-shape 8-bit (or luma float) arrays."""
    diff = (a.astype(np.float32) - b.astype(np.float32)).ravel()
    mse = float(np.dot(diff, diff)) / diff.size
    return 10 * np.log10(255.0**2 / mse)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of [..., 3] RGB, as float64 [...]."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def rerender(src: Path, dst: Path, *, crf: int = 10) -> VideoWriter:
    """Decode `src` and encode it again unchanged, with its timing and audio: the pipeline's skeleton."""
    info = probe(src)
    with VideoWriter(
        dst, width=info.width, height=info.height, fps=info.fps, time_base=info.time_base,
        crf=crf, preset="ultrafast", audio_from=src, colour=info.colour,
    ) as writer:
        for batch in VideoReader(src, batch_size=8, info=info):
            writer.write(batch.frames, batch.pts)
    return writer


# --- reader -----------------------------------------------------------------------------------------


def test_batches_have_bounded_size_and_contiguous_indices(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=24, audio=False)
    batches = list(VideoReader(clip, batch_size=5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 4]
    assert np.concatenate([b.indices for b in batches]).tolist() == list(range(24))
    first = batches[0]
    assert first.frames.dtype == np.uint8 and first.frames.shape == (5, 48, 64, 3)
    assert first.pts.tolist() == [0, 1001, 2002, 3003, 4004]
    np.testing.assert_allclose(first.pts_seconds, np.arange(5) * 1001 / 30000)


def test_reader_streams_instead_of_decoding_everything_first(tmp_path: Path) -> None:
    reader = VideoReader(make_clip(tmp_path / "clip.mp4", frames=24, audio=False), batch_size=4)
    batches = iter(reader)
    next(batches)
    assert reader.frames_decoded == 8  # two batches in flight, not the 24 frames of the file
    batches.close()


def test_reader_memory_does_not_grow_with_length(tmp_path: Path) -> None:
    peaks = []
    for frames in (24, 240):
        clip = make_clip(tmp_path / f"clip{frames}.mp4", width=160, height=120, frames=frames, audio=False)
        tracemalloc.start()
        assert sum(len(b) for b in VideoReader(clip, batch_size=4)) == frames
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.5 * peaks[0], peaks  # ten times the frames, about the same peak


@pytest.mark.parametrize("stored", [90, 180, 270])
def test_frames_come_out_upright_like_ffmpeg_shows_them(tmp_path: Path, stored: int) -> None:
    clip = make_clip(tmp_path / "rot.mp4", width=64, height=48, frames=3, rotation=stored, audio=False)
    frames, _ = decode_all(clip)
    # The ffmpeg command line applies the display matrix itself: an independent reference. Compared on luma,
    # loosely: its default conversion repeats chroma samples where ours interpolates them (testsrc2 is all colour
    # edges) and rounds about 0.3 levels darker; a wrong orientation differs by tens of levels.
    assert np.abs(luma(frames) - luma(ffmpeg_rgb(clip, frames.shape))).mean() < 2.0


def test_start_end_every_select_by_time_and_keep_file_indices(fixtures_dir: Path) -> None:
    batches = list(VideoReader(fixtures_dir / "single_face.mp4", start=0.5, end=1.5, every=5))
    assert np.concatenate([b.indices for b in batches]).tolist() == [15, 20, 25, 30, 35, 40]
    np.testing.assert_allclose(np.concatenate([b.pts_seconds for b in batches]), [0.5, 2 / 3, 5 / 6, 1.0, 7 / 6, 4 / 3])


def test_bad_selection_is_a_usage_error(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    with pytest.raises(UsageError, match="--end"):
        VideoReader(clip, start=2.0, end=1.0)


def truncated_clip(tmp_path: Path) -> Path:
    whole = make_faststart(make_clip(tmp_path / "whole.mp4", frames=48, width=160, height=120), tmp_path / "fs.mp4")
    return make_truncated(whole, tmp_path / "cut.mp4", keep=0.5)


def test_truncated_file_yields_what_it_holds_then_warns(tmp_path: Path) -> None:
    reader = VideoReader(truncated_clip(tmp_path))
    n = sum(len(b) for b in reader)
    assert 0 < n < 48
    assert reader.warning == f"decoded {n} of ~48 frames; cut.mp4 is truncated or damaged"


def test_read_frames_reports_truncation_to_callback_or_warnings(tmp_path: Path) -> None:
    clip = truncated_clip(tmp_path)
    messages: list[str] = []
    assert sum(len(b) for b in read_frames(clip, on_warning=messages.append)) > 0
    assert len(messages) == 1 and "truncated" in messages[0]
    with pytest.warns(TruncatedVideoWarning, match="truncated"):
        list(read_frames(clip))


def test_complete_file_has_no_warning(fixtures_dir: Path) -> None:
    reader = VideoReader(fixtures_dir / "single_face.mp4", batch_size=32)
    assert sum(len(b) for b in reader) == 72
    assert reader.warning is None


# --- writer -----------------------------------------------------------------------------------------


def test_round_trip_of_real_clip_keeps_frames_timestamps_and_audio_bytes(fixtures_dir: Path, tmp_path: Path) -> None:
    src, dst = fixtures_dir / "single_face.mp4", tmp_path / "out.mp4"
    rerender(src, dst, crf=10)
    source_frames, source_times = decode_all(src)
    frames, times = decode_all(dst)
    assert len(frames) == 72
    assert times == source_times
    assert psnr(frames, source_frames) > 40.0
    copied = audio_packets(dst)
    assert len(copied) == 93 and copied == audio_packets(src)
    assert probe(dst).audio[0].codec == "mp3"
    # An independent decoder reading the output's colour tags sees the same colours.
    assert psnr(ffmpeg_rgb(dst, frames.shape), source_frames) > 40.0


@pytest.mark.parametrize("vfr", [False, True], ids=["ntsc", "vfr"])
def test_round_trip_keeps_fractional_and_variable_timestamps_exactly(tmp_path: Path, vfr: bool) -> None:
    src = make_clip(tmp_path / "src.mp4", frames=24, rate="30000/1001", vfr=vfr)
    rerender(src, tmp_path / "out.mp4")
    source_frames, source_times = decode_all(src)
    frames, times = decode_all(tmp_path / "out.mp4")
    assert times == source_times
    assert probe(tmp_path / "out.mp4").variable_frame_rate == vfr
    # testsrc2's saturated one-pixel colour edges are exactly what 4:2:0 chroma subsampling removes,
    # so on this pattern the fidelity check is on luma (the real clip above is checked in RGB).
    assert psnr(luma(frames), luma(source_frames)) > 40.0
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(src)


def test_odd_size_is_padded_by_one_repeated_pixel(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "odd.mp4", width=65, height=49, frames=6, audio=False)
    writer = rerender(src, tmp_path / "out.mp4")
    assert writer.output_size == (66, 50)
    frames, _ = decode_all(tmp_path / "out.mp4")
    source_frames, _ = decode_all(src)
    assert frames.shape == (6, 50, 66, 3)
    assert psnr(luma(frames[:, :49, :65]), luma(source_frames)) > 40.0


def test_rotated_source_is_written_upright(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "rot.mp4", width=64, height=48, frames=6, rotation=90, audio=False)
    rerender(src, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.rotation) == (48, 64, 0)
    assert psnr(luma(decode_all(tmp_path / "out.mp4")[0]), luma(decode_all(src)[0])) > 40.0


def test_audio_the_container_takes_is_copied_pcm_in_mov(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "src.mov", frames=12, audio_codec="pcm_s16le")
    rerender(src, tmp_path / "out.mov")
    assert audio_packets(tmp_path / "out.mov") == audio_packets(src)


def test_pcm_into_mp4_is_reencoded_to_aac_and_said(tmp_path: Path) -> None:
    # FFmpeg's MP4 muxer would store PCM, but browsers and phones cannot play it from an MP4.
    src = make_clip(tmp_path / "src.mov", frames=12, audio_codec="pcm_s16le")
    writer = rerender(src, tmp_path / "out.mp4")
    assert [a.codec for a in probe(tmp_path / "out.mp4").audio] == ["aac"]
    assert writer.audio_notes == ["audio stream #1 (pcm_s16le) re-encoded to AAC: most players cannot play it "
                                  "from an MP4"]


def test_audio_the_container_cannot_take_is_reencoded_to_aac(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "src.mkv", frames=24, audio_codec="wmav2")
    assert rerender(src, tmp_path / "out.mp4").audio_notes == ["audio stream #1 (wmav2) re-encoded to AAC: mp4 "
                                                                "cannot hold it"]
    out = probe(tmp_path / "out.mp4")
    assert [(a.codec, a.sample_rate, a.channels) for a in out.audio] == [("aac", 48000, 1)]
    with av.open(str(tmp_path / "out.mp4")) as container:
        audio = container.streams.audio[0]
        assert float(audio.duration * audio.time_base) == pytest.approx(out.duration, abs=0.1)


def test_writer_refuses_to_overwrite_its_source(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "src.mp4", frames=4)
    before = src.read_bytes()
    with pytest.raises(UsageError, match="refusing to overwrite"):
        VideoWriter(src, width=64, height=48, fps=Fraction(30), audio_from=src)
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.mp4"]


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    frames = np.zeros((2, 48, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="timestamps must increase"):
        with VideoWriter(dst, width=64, height=48, fps=Fraction(25)) as writer:
            writer.write(frames, np.array([0, 1]))
            writer.write(frames, np.array([1, 2]))
    assert list(tmp_path.iterdir()) == []


def test_frames_without_timestamps_follow_the_nominal_rate(tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    with VideoWriter(dst, width=64, height=48, fps=Fraction(30000, 1001), time_base=Fraction(1, 30000)) as writer:
        writer.write(np.zeros((3, 48, 64, 3), np.uint8))
        writer.write(np.zeros((2, 48, 64, 3), np.uint8))
    assert decode_all(dst)[1] == [Fraction(1001 * i, 30000) for i in range(5)]


@pytest.mark.parametrize("name", ["out.avi", "out.mkv", "out.webm"])
def test_unsupported_output_container_is_a_usage_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="output suffix"):
        VideoWriter(tmp_path / name, width=64, height=48, fps=Fraction(25))


@pytest.mark.parametrize(("option", "message"), [({"preset": "bogus"}, "unknown x264 preset"), ({"crf": 60}, "crf")])
def test_bad_encoder_options_are_usage_errors(tmp_path: Path, option: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        VideoWriter(tmp_path / "out.mp4", width=64, height=48, fps=Fraction(25), **option)
    assert list(tmp_path.iterdir()) == []


def test_raw_stream_frames_are_stamped_at_the_nominal_rate(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.h264", frames=6, rate="30000/1001", audio=False)
    times = decode_all(clip)[1]
    assert times == [Fraction(1001 * i, 30000) for i in range(6)]
