"""`nvsvideo invert`, `rerender` and `edit` end to end on a real face clip with tiny random models.

The models are the real classes at tiny widths, saved in the official file layouts and loaded through the
same loaders as the released checkpoints (see tiny_models.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.video import VideoReader, probe

from media import audio_packets
from tiny_models import tiny_clip_setup

runner = CliRunner()
FRAMES = 10
BLANK = range(4, 7)  # three faceless frames in the middle; with --max-gap 1 they pass through unchanged


@pytest.fixture(scope="module")
def setup(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_clip_setup(fixtures_dir / "single_face.mp4", tmp_path_factory.mktemp("rerender"), blank=BLANK,
                           frames=FRAMES, versions=("v2", "v1"))


def models(setup: dict[str, Path], version: str = "v2") -> list[str]:
    return ["--model", version, "--triplanenet", str(setup[version]), "--eg3d", str(setup["eg3d"]),
            "--landmarks", "dlib", "--max-gap", "1", "--device", "cpu", "--batch-size", "3"]


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)



def video_pts(path: Path) -> list[int]:
    return [int(t) for b in VideoReader(path) for t in b.pts]


@pytest.fixture(scope="module")
def inverted(setup: dict[str, Path]) -> dict:
    return invoke("invert", str(setup["clip"]), *models(setup))


def test_invert_then_rerun_hits_the_cache(setup: dict[str, Path], inverted: dict) -> None:
    assert inverted["frames"] == FRAMES
    assert inverted["faces_found"] == FRAMES - len(BLANK)
    assert inverted["inverted"] == FRAMES - len(BLANK) and inverted["cache_hits"] == 0
    assert inverted["cache"]["bytes"] > 0 and inverted["cache"]["store"] == "planes"
    again = invoke("invert", str(setup["clip"]), *models(setup))
    assert again["inverted"] == 0 and again["cache_hits"] == FRAMES - len(BLANK) and again["align_cached"]


def test_changed_settings_refuse_the_cache_until_fresh(setup: dict[str, Path], inverted: dict) -> None:
    result = runner.invoke(app, ["invert", str(setup["clip"]), *models(setup), "--seed", "5"])
    assert result.exit_code == 3 and "--fresh" in result.output
    # The v1 model writes its own cache elsewhere; --fresh is not needed there.
    other = setup["root"] / "v1.nvs"
    summary = invoke("invert", str(setup["clip"]), *models(setup, "v1"), "--out", str(other), "--store", "offsets")
    assert summary["model"] == "v1" and summary["cache"]["store"] == "offsets"


def test_rerender_paste_keeps_frames_timing_audio_and_faceless_frames(setup: dict[str, Path], inverted: dict) -> None:
    out = setup["root"] / "paste.mp4"
    summary = invoke("rerender", str(setup["clip"]), "-o", str(out), "--yaw-path", "sweep:from=-20,to=20",
                     *models(setup))
    assert summary["cache_hits"] == FRAMES - len(BLANK) and summary["inverted"] == 0
    assert summary["rendered"] == FRAMES - len(BLANK)
    src, dst = probe(setup["clip"]), probe(out)
    assert (dst.width, dst.height, dst.frame_count, dst.fps) == (src.width, src.height, FRAMES, src.fps)
    assert video_pts(out) == video_pts(setup["clip"])
    assert audio_packets(out) == audio_packets(setup["clip"])
    before = np.concatenate([b.frames for b in VideoReader(setup["clip"])]).astype(float)
    after = np.concatenate([b.frames for b in VideoReader(out)]).astype(float)
    # Faceless frames pass through (only re-encoding noise); face frames are re-rendered around the face.
    assert np.abs(after[list(BLANK)] - before[list(BLANK)]).mean() < 1.0
    assert np.abs(after[0] - before[0]).mean() > 2.0


@pytest.mark.parametrize(("mode", "shape"), [("crop", (256, 256)), ("compare", (256, 768))])
def test_rerender_crop_and_compare_layouts(setup: dict[str, Path], inverted: dict, mode: str,
                                           shape: tuple[int, int]) -> None:
    out = setup["root"] / f"{mode}.mp4"
    invoke("rerender", str(setup["clip"]), "-o", str(out), "--output", mode, "--size", "256", *models(setup))
    info = probe(out)
    assert (info.height, info.width) == shape and info.frame_count == FRAMES


def test_rerender_keep_ood_depth_and_follow(setup: dict[str, Path], inverted: dict) -> None:
    out, depth = setup["root"] / "ood.mp4", setup["root"] / "depth.mp4"
    summary = invoke("rerender", str(setup["clip"]), "-o", str(out), "--yaw-path", "follow", "--keep-ood",
                     "--depth", str(depth), *models(setup))
    assert summary["depth"] == str(depth)
    assert probe(depth).frame_count == FRAMES
    assert probe(out).frame_count == FRAMES


def test_rerender_is_reproducible(setup: dict[str, Path], inverted: dict) -> None:
    outs = []
    for name in ("r1.mp4", "r2.mp4"):
        invoke("rerender", str(setup["clip"]), "-o", str(setup["root"] / name), "--output", "crop", *models(setup))
        outs.append(np.concatenate([b.frames for b in VideoReader(setup["root"] / name)]))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_edit_with_a_direction_reuses_the_inversion(setup: dict[str, Path], inverted: dict) -> None:
    direction = setup["root"] / "smile.npy"
    np.save(direction, np.random.default_rng(0).normal(size=(1, 14, 512)).astype(np.float32))
    plain, edited = setup["root"] / "plain.mp4", setup["root"] / "edited.mp4"
    # Lossless encoding, so frames compare exactly (x264's look-ahead would otherwise couple them).
    invoke("rerender", str(setup["clip"]), "-o", str(plain), "--yaw-path", "follow", "--output", "crop",
           "--crf", "0", *models(setup))
    summary = invoke("edit", str(setup["clip"]), "-o", str(edited), "--direction", str(direction), "--strength", "3",
                     "--strength-ramp", "0f:0,1f:0,3f:1", "--output", "crop", "--crf", "0", *models(setup))
    assert summary["inverted"] == 0 and summary["cache_hits"] == FRAMES - len(BLANK)
    assert summary["camera_path"] == "follow" and summary["edits"]
    a = np.concatenate([b.frames for b in VideoReader(plain)])
    b = np.concatenate([b.frames for b in VideoReader(edited)])
    # Strength 0 on frames 0 and 1, which share a batch with the edited frame 2: they render exactly as rerender.
    np.testing.assert_array_equal(a[:2], b[:2])
    assert np.abs(a[2:4].astype(float) - b[2:4]).mean() > 1.0


def test_edit_needs_a_direction(setup: dict[str, Path]) -> None:
    result = runner.invoke(app, ["edit", str(setup["clip"]), "-o", str(setup["root"] / "x.mp4"), *models(setup)])
    assert result.exit_code == 2 and "--direction" in result.output


def test_bad_inputs_give_one_message_and_no_output(setup: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    missing = runner.invoke(app, ["rerender", str(tmp_path / "nope.mp4"), "-o", str(out), *models(setup)])
    assert missing.exit_code == 3 and "Traceback" not in missing.output
    no_weights = runner.invoke(app, ["rerender", str(setup["clip"]), "-o", str(out), "--weights", str(tmp_path),
                                     "--device", "cpu"])
    assert no_weights.exit_code == 5 and "triplanenet" in no_weights.output.lower()
    bad_path = runner.invoke(app, ["rerender", str(setup["clip"]), "-o", str(out), "--yaw-path", "spiral",
                                   *models(setup)])
    assert bad_path.exit_code == 2
    assert not out.exists()


def test_corrupt_chunk_is_recomputed_bit_identically(setup: dict[str, Path], inverted: dict) -> None:
    chunks = sorted((setup["clip"].with_name("clip.mp4.nvs") / "inversion" / "chunks").glob("*.safetensors"))
    assert chunks
    original = {p.name: p.read_bytes() for p in chunks}
    damaged = bytearray(original[chunks[0].name])
    damaged[len(damaged) // 2] ^= 0xFF
    chunks[0].write_bytes(bytes(damaged))
    result = runner.invoke(app, ["invert", str(setup["clip"]), *models(setup), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inverted"] > 0  # the damaged chunk's frames were inverted again
    again = {p.name: p.read_bytes() for p in (chunks[0].parent).glob("*.safetensors")}
    assert again == original
