"""Video I/O throughput: nvsvideo's reader and writer against the ffmpeg command line, same clip, same run.

    python bench/video_io.py [--size 512] [--frames 120] [--repeat 2] [--json]

A test-pattern clip with a tone is made with the bundled ffmpeg. Decode is measured to RGB24 frames
in memory (ffmpeg: to a rawvideo pipe that is thrown away); encode is libx264 crf 18, preset fast,
yuv420p from RGB24 frames, with the audio stream copied (ffmpeg: reading the same frames from a raw
file). Each figure is the best of `--repeat` runs, because other jobs share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from nvsvideo.video import VideoReader, VideoWriter, probe

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
CRF, PRESET = 18, "fast"


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args], check=True)


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    """Shortest wall time of `repeat` runs of `run`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def make_clip(path: Path, size: int, frames: int) -> None:
    ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}x{size}:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-frames:v", str(frames), "-c:v", "libx264", "-preset", "fast", "-crf", "20", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-shortest", str(path),
    )  # fmt: skip


def measure(size: int, frames: int, repeat: int) -> dict[str, float | int]:
    """Frames per second for each side and the ratios nvsvideo / ffmpeg (above 1: nvsvideo is faster)."""
    with tempfile.TemporaryDirectory(prefix="nvsvideo-bench-") as tmp:
        work = Path(tmp)
        clip = work / "clip.mp4"
        make_clip(clip, size, frames)
        info = probe(clip)

        def decode_nvs() -> np.ndarray:
            return np.concatenate([b.frames for b in VideoReader(clip, batch_size=16, info=info)])

        decoded = decode_nvs()
        assert len(decoded) == frames, (len(decoded), frames)
        decode_ours = best_seconds(decode_nvs, repeat)
        decode_cli = best_seconds(
            lambda: ffmpeg("-threads", "0", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "rgb24", os.devnull), repeat
        )

        def encode_nvs() -> None:
            with VideoWriter(
                work / "ours.mp4", width=size, height=size, fps=info.fps, time_base=info.time_base,
                crf=CRF, preset=PRESET, audio_from=clip,
            ) as writer:  # fmt: skip
                for start in range(0, frames, 16):
                    writer.write(decoded[start : start + 16])

        raw = work / "frames.rgb"
        decoded.tofile(raw)
        encode_ours = best_seconds(encode_nvs, repeat)
        encode_cli = best_seconds(
            lambda: ffmpeg(
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-framerate", "30", "-i", str(raw),
                "-i", str(clip), "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF),
                "-pix_fmt", "yuv420p", "-c:a", "copy", str(work / "cli.mp4"),
            ),  # fmt: skip
            repeat,
        )
    return {
        "size": size,
        "frames": frames,
        "decode_fps": frames / decode_ours,
        "decode_fps_ffmpeg_cli": frames / decode_cli,
        "decode_ratio": decode_cli / decode_ours,
        "encode_fps": frames / encode_ours,
        "encode_fps_ffmpeg_cli": frames / encode_cli,
        "encode_ratio": encode_cli / encode_ours,
    }


def main(argv: list[str] | None = None) -> dict[str, float | int]:
    """Run the benchmark, print a table (or JSON with --json) and return the numbers.

    `argv` defaults to no arguments (not sys.argv), so a runner script can call `main()` directly.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="square frame size in pixels")
    parser.add_argument("--frames", type=int, default=120, help="frames in the clip (30 fps)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is kept")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv if argv is not None else [])
    result = measure(args.size, args.frames, args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return result
    print(f"video I/O, {args.frames} frames of {args.size}x{args.size}, libx264 crf {CRF} preset {PRESET}, best of {args.repeat}")
    print(f"{'':8}{'nvsvideo':>12}{'ffmpeg CLI':>12}{'ratio':>8}")
    for step in ("decode", "encode"):
        ours, cli, ratio = result[f"{step}_fps"], result[f"{step}_fps_ffmpeg_cli"], result[f"{step}_ratio"]
        print(f"{step:8}{ours:>8.0f} f/s{cli:>8.0f} f/s{ratio:>8.2f}")
    print("ratio = nvsvideo speed / ffmpeg CLI speed (above 1: nvsvideo is faster)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
