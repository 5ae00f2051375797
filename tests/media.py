"""Tiny test clips made at test time with the ffmpeg binary bundled by imageio-ffmpeg.

Every helper writes one file and returns its path, so tests read as "make this kind of clip, then
check that". The clips are a few dozen frames of `testsrc2` (a moving, colourful pattern whose
orientation is unambiguous) plus a sine tone, small enough that making one takes well under a second.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av

# Audio encoders by codec name as ffmpeg spells them; "aac" is ffmpeg's native encoder.
_AUDIO_ENCODERS = {"aac": "aac", "mp3": "libmp3lame", "pcm_s16le": "pcm_s16le", "wmav2": "wmav2", "opus": "libopus"}


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary (imageio-ffmpeg is a dev dependency)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; raise with its message when it fails."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")


def make_clip(
    path: Path,
    *,
    width: int = 64,
    height: int = 48,
    rate: str = "30000/1001",
    frames: int = 24,
    audio: bool = True,
    audio_codec: str = "aac",
    video_codec: str = "libx264",
    crf: int = 12,
    vfr: bool = False,
    rotation: int | None = None,
    keyint: int | None = None,
) -> Path:
    """Write a test-pattern clip (with a 440 Hz tone unless `audio=False`) and return `path`.

    Args:
        path: output file; the container follows the suffix (.mp4, .mov, .mkv, ...).
        width, height: picture size; odd sizes need `video_codec` that takes them (libx264 with yuv444p is used).
        rate: frame rate as ffmpeg reads it, e.g. "30000/1001" or "25".
        frames: number of video frames.
        audio: add a mono 48 kHz tone as long as the video.
        audio_codec: key of `_AUDIO_ENCODERS` ("aac", "mp3", "pcm_s16le", "wmav2", "opus").
        video_codec: ffmpeg encoder name.
        crf: libx264 quality (low = close to lossless, so decoded frames are near the pattern).
        vfr: make timestamps irregular (every other frame gap is 1.5x longer), a variable frame rate.
        rotation: if set, store a display-matrix rotation of this many degrees (counter-clockwise).
        keyint: a keyframe every `keyint` frames, with B-frames (reordered decode and display times).
    """
    path = Path(path)
    target = path if rotation is None else path.with_name(f"unrotated_{path.name}")
    # Odd sizes cannot be 4:2:0-subsampled, so such clips are stored as 4:4:4 (converted before cropping).
    pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    # testsrc2 only draws even sizes: draw the next even size up and crop.
    pattern = f"testsrc2=size={width + width % 2}x{height + height % 2}:rate={rate}"
    args = ["-f", "lavfi", "-i", pattern]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    video_filter = f"format={pix_fmt},crop={width}:{height}:0:0"
    if vfr:
        # A fine time base first, so the 1.5x gaps are exact ticks rather than rounded ones.
        video_filter = f"settb=1/30000,setpts=(N+0.5*floor(N/2))/({rate})/TB,{video_filter}"
        args += ["-fps_mode", "passthrough"]
    args += ["-vf", video_filter, "-frames:v", str(frames), "-c:v", video_codec]
    if video_codec == "libx264":
        args += ["-preset", "ultrafast", "-crf", str(crf)]
        if keyint is not None:
            args += ["-g", str(keyint), "-keyint_min", str(keyint), "-bf", "2"]
    if audio:
        args += ["-c:a", _AUDIO_ENCODERS[audio_codec], "-ac", "1", "-shortest"]
    run_ffmpeg(*args, str(target))
    if rotation is not None:
        run_ffmpeg("-display_rotation", str(rotation), "-i", str(target), "-c", "copy", str(path))
        target.unlink()
    return path


def make_audio_only(path: Path, *, seconds: float = 1.0, cover_art: bool = False) -> Path:
    """Write an AAC tone with no video stream (with `cover_art`, a still picture attached as music files have)."""
    args = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds)]
    if cover_art:
        args += ["-f", "lavfi", "-i", "color=red:size=32x32", "-frames:v", "1", "-map", "0", "-map", "1"]
        args += ["-c:v", "png", "-disposition:v", "attached_pic"]
    run_ffmpeg(*args, "-c:a", "aac", str(path))
    return Path(path)


def make_truncated(source: Path, path: Path, *, keep: float = 0.5) -> Path:
    """Copy the first `keep` fraction of `source`'s bytes, as an interrupted download would leave it.

    An .mp4 source must have its index at the front (`make_faststart`), otherwise nothing is readable.
    """
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def make_damaged(source: Path, path: Path, *, at: float = 0.3, fraction: float = 0.15) -> Path:
    """Copy `source` with `fraction` of its bytes, from `at` of the way in, overwritten (a bad sector): the
    container's index still lists every frame, but decoding stops at the damage."""
    data = bytearray(Path(source).read_bytes())
    start, length = int(len(data) * at), int(len(data) * fraction)
    data[start:start + length] = b"\xff" * length
    Path(path).write_bytes(bytes(data))
    return Path(path)


def make_faststart(source: Path, path: Path) -> Path:
    """Remux an .mp4 with its index (moov) before the media data, as streaming sites serve them."""
    run_ffmpeg("-i", str(source), "-c", "copy", "-movflags", "+faststart", str(path))
    return Path(path)


def make_unsupported_codec(path: Path) -> Path:
    """Write an .avi whose video codec tag no decoder knows (an MPEG-4 stream relabelled 'QQQQ')."""
    plain = Path(path).with_name(f"known_{Path(path).name}")
    run_ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "5", "-c:v", "mpeg4", str(plain))
    data = plain.read_bytes()
    plain.unlink()
    # The tag sits in the stream header and in the bitmap header; relabel both.
    Path(path).write_bytes(data.replace(b"FMP4", b"QQQQ"))
    return Path(path)


def audio_packets(path: Path) -> list[bytes]:
    """The bytes of every audio packet of a file, in file order (equal lists: the audio was copied exactly)."""
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(*container.streams.audio) if p.size]
