"""`rerender` in one pass on the real clip and tiny models: align + invert + render decoding the video once,
tracks equal to the two-pass alignment, outputs equal to the sequential pass and to a render-only re-run,
interrupted runs resuming identically, a cut-short file handled, every stage's error surfacing without a hang."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.console import Reporter
from nvsvideo.errors import InputError, Terminated
from nvsvideo.face.backends.dlib_backend import DlibBackend
from nvsvideo.pipelines import first_pass as first_pass_module
from nvsvideo.pipelines import rerender as rerender_module
from nvsvideo.pipelines.align import AlignConfig, VideoAlignment, track_video
from nvsvideo.pipelines.invert import PARTIAL_TRACKS_FILE, TRACKS_FILE
from nvsvideo.pipelines.stream import SEQUENTIAL_ENV
from nvsvideo.temporal.tracking import TrackerConfig
from nvsvideo.video import VideoReader

from media import make_damaged, make_faststart
from tiny_models import tiny_clip_setup

runner = CliRunner()
FRAMES = 8
BLANK = range(3, 5)


@pytest.fixture(scope="module")
def setup(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return tiny_clip_setup(fixtures_dir / "single_face.mp4", tmp_path_factory.mktemp("overlap"), blank=BLANK,
                           frames=FRAMES)


def rerender_args(setup: dict[str, Path], out: Path, cache: Path) -> list[str]:
    # compare + keep-ood: the reconstruction and the mask's smoothing over time (reset at faceless frames).
    return ["rerender", str(setup["clip"]), "-o", str(out), "--cache", str(cache), "--output", "compare",
            "--size", "128", "--keep-ood", "--crf", "0", "--yaw-path", "follow:yaw=3", "--model", "v2",
            "--triplanenet", str(setup["v2"]), "--eg3d", str(setup["eg3d"]), "--landmarks", "dlib",
            "--max-gap", "1", "--device", "cpu", "--batch-size", "2", "--json", "--quiet"]


def invoke(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def frames_of(path: Path) -> np.ndarray:
    return np.concatenate([b.frames for b in VideoReader(path)])


def chunk_bytes(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (cache / "inversion" / "chunks").glob("*.safetensors")}


class Counted:
    """Counts the passes over the input (decoders opened, frames decoded) and the landmark backend's frames."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, video: Path) -> None:
        self.passes = self.decoded = self.detected = 0
        iterate, detect = VideoReader.__iter__, DlibBackend.detect

        def counted_iter(reader: VideoReader):  # type: ignore[no-untyped-def]
            mine = reader.path == video
            self.passes += mine
            for batch in iterate(reader):
                self.decoded += len(batch) if mine else 0
                yield batch

        def counted_detect(backend: DlibBackend, frames: np.ndarray, **kwargs: object) -> list:
            self.detected += len(frames)
            return detect(backend, frames, **kwargs)

        monkeypatch.setattr(VideoReader, "__iter__", counted_iter)
        monkeypatch.setattr(DlibBackend, "detect", counted_detect)


@pytest.fixture(scope="module")
def first_run(setup: dict[str, Path]) -> dict:
    """Align, invert and render in one overlapped pass, from an empty cache, counting the passes over the video."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv(SEQUENTIAL_ENV, "0")  # overlapped even with the model on the CPU
        counted = Counted(monkeypatch, setup["clip"])
        summary = invoke(rerender_args(setup, setup["root"] / "overlapped.mp4", setup["root"] / "a.nvs"))
    return {**summary, "counted": counted}


def test_one_pass_aligns_inverts_stores_and_renders(setup: dict[str, Path], first_run: dict,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    faces = FRAMES - len(BLANK)
    assert first_run["inverted"] == faces and first_run["cache_hits"] == 0 and first_run["rendered"] == faces
    overlap = first_run["overlap"]["render"]
    assert overlap["mode"] == "overlapped" and set(overlap) >= {"decode", "render", "encode", "wall"}
    assert {"align", "invert", "render"} <= set(first_run["seconds"])
    # The video was decoded once, alignment included.
    counted = first_run["counted"]
    assert (counted.passes, counted.decoded, counted.detected) == (1, FRAMES, FRAMES)
    # The whole track was stored (the partial one is gone) and equals the two-pass alignment's.
    cache = setup["root"] / "a.nvs"
    assert not (cache / PARTIAL_TRACKS_FILE).exists()
    stored = VideoAlignment.load(cache / TRACKS_FILE)
    whole = track_video(setup["clip"], DlibBackend(), AlignConfig(tracker=TrackerConfig(max_gap=1)),
                        Reporter(quiet=True))
    assert [f.to_json() for f in stored.frames] == [f.to_json() for f in whole.frames]
    assert stored.metrics == whole.metrics
    # A second run reads the stored tracks (no landmarks), decodes once and writes exactly the same frames.
    counted = Counted(monkeypatch, setup["clip"])
    again = invoke(rerender_args(setup, setup["root"] / "again.mp4", cache))
    assert again["inverted"] == 0 and again["cache_hits"] == faces
    assert (counted.passes, counted.decoded, counted.detected) == (1, FRAMES, 0)
    np.testing.assert_array_equal(frames_of(setup["root"] / "again.mp4"), frames_of(setup["root"] / "overlapped.mp4"))


@pytest.mark.parametrize("signal", [KeyboardInterrupt, Terminated], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_first_run_keeps_its_work_and_resumes_identically(
        setup: dict[str, Path], first_run: dict, signal: type[BaseException], monkeypatch: pytest.MonkeyPatch) -> None:
    cache = setup["root"] / f"interrupted_{signal.__name__}.nvs"
    out = setup["root"] / f"interrupted_{signal.__name__}.mp4"
    render = rerender_module.render_faces
    calls = []

    def interrupted(*args: object, **kwargs: object) -> object:
        # Arrives on the calling thread as the signal would, once two batches were rendered.
        calls.append(1)
        if len(calls) == 3:
            raise signal()
        return render(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(rerender_module, "render_faces", interrupted)
        result = runner.invoke(app, rerender_args(setup, out, cache))
    assert result.exit_code == (143 if signal is Terminated else 130), result.output
    assert not out.exists() and not [p for p in setup["root"].iterdir() if out.name in p.name]
    # What was stored so far is kept: the frames aligned, the inversions made.
    assert not (cache / TRACKS_FILE).exists()
    assert len((cache / PARTIAL_TRACKS_FILE).read_text().splitlines()) >= 4
    assert chunk_bytes(cache)
    with monkeypatch.context() as patch:
        patch.setattr(first_pass_module, "HELD_IN_MEMORY", 1)  # the frames waiting for their alignment go to disk
        resumed = invoke(rerender_args(setup, out, cache))
    assert resumed["cache_hits"] >= 3 and resumed["inverted"] == FRAMES - len(BLANK) - resumed["cache_hits"]
    np.testing.assert_array_equal(frames_of(out), frames_of(setup["root"] / "overlapped.mp4"))
    assert chunk_bytes(cache) == chunk_bytes(setup["root"] / "a.nvs")
    assert (cache / TRACKS_FILE).is_file() and not (cache / PARTIAL_TRACKS_FILE).exists()


def test_a_first_cpu_run_inverting_is_sequential(setup: dict[str, Path], first_run: dict,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Overlap cannot win while the encoders keep every core busy: without a request the pass is sequential.
    monkeypatch.delenv(SEQUENTIAL_ENV, raising=False)
    summary = invoke(rerender_args(setup, setup["root"] / "auto.mp4", setup["root"] / "auto.nvs"))
    assert summary["overlap"]["render"]["mode"] == "sequential"
    np.testing.assert_array_equal(frames_of(setup["root"] / "auto.mp4"), frames_of(setup["root"] / "overlapped.mp4"))
    # The cache written by the sink thread holds the same bytes as the one written in line.
    assert chunk_bytes(setup["root"] / "auto.nvs") == chunk_bytes(setup["root"] / "a.nvs")
    again = invoke(rerender_args(setup, setup["root"] / "auto_again.mp4", setup["root"] / "auto.nvs"))
    assert again["overlap"]["render"]["mode"] == "overlapped"  # rendering only: overlap fills the model's gaps




def test_a_file_damaged_mid_way_renders_what_it_holds_in_one_pass(setup: dict[str, Path]) -> None:
    # Its index still lists all the frames: the cache is made for them before decoding meets the damage.
    damaged = make_damaged(make_faststart(setup["clip"], setup["root"] / "whole.mp4"), setup["root"] / "bad.mp4")
    args = [str(damaged) if a == str(setup["clip"]) else a
            for a in rerender_args(setup, setup["root"] / "bad_out.mp4", setup["root"] / "bad.nvs")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "is damaged" in first.stderr
    summary = json.loads(first.stdout)
    written = len(frames_of(setup["root"] / "bad_out.mp4"))
    assert 0 < summary["frames"] == written < FRAMES
    # The tracks and inversions it stored serve the next run, which only renders.
    again = invoke(args)
    assert again["inverted"] == 0 and again["frames"] == written


def test_frames_held_beyond_the_memory_limit_wait_on_disk() -> None:
    held = first_pass_module.HeldFrames(limit=2)
    images = {i: np.full((4, 6, 3), i, np.uint8) for i in range(5)}
    for i, image in images.items():
        held.put(i, 10 * i, (image, image[::2]))
    folder = Path(held._folder.name)
    assert len(list(folder.iterdir())) == 3
    for i, image in images.items():
        pts, (back, half) = held.pop(i)
        assert pts == 10 * i
        np.testing.assert_array_equal(back, image)
        np.testing.assert_array_equal(half, image[::2])
    held.close()
    assert not folder.exists()


def boom(*args: object, **kwargs: object) -> None:
    raise InputError("boom")


@pytest.mark.parametrize("stage", ["crop_face", "render_faces", "compose_frame"])
def test_an_error_in_any_stage_fails_cleanly(setup: dict[str, Path], first_run: dict, stage: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # decode stage (crops), model stage, encode stage (composition)
    monkeypatch.setattr(rerender_module, stage, boom)
    out = setup["root"] / f"failed_{stage}.mp4"
    result = runner.invoke(app, rerender_args(setup, out, setup["root"] / "a.nvs"))
    assert result.exit_code == 3 and "boom" in result.output
    assert not out.exists() and not [p for p in setup["root"].iterdir() if out.name in p.name]
    assert not [t for t in threading.enumerate() if t.name.startswith("nvsvideo-")]


def pictures_of(path: Path) -> np.ndarray:
    """The decoded 4:2:0 pictures of a video, packed yuv420p [N, H·3/2, W]."""
    import av

    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray() for frame in container.decode(video=0)])


def test_the_paste_into_the_pictures_overlaps_resumes_and_keeps_faceless_frames(
        setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """`--output paste` of a 4:2:0 clip (the renders go into the decoded pictures): overlapped equals sequential
    with `--crf 0`, face-less frames come out as decoded, and a SIGTERM'd first run resumes identically."""
    def paste_args(name: str) -> list[str]:
        args = rerender_args(setup, setup["root"] / f"{name}.mp4", setup["root"] / f"{name}.nvs")
        args[args.index("compare")] = "paste"
        return args

    monkeypatch.setenv(SEQUENTIAL_ENV, "0")
    invoke(paste_args("paste_overlapped"))
    monkeypatch.setenv(SEQUENTIAL_ENV, "1")
    invoke(paste_args("paste_sequential"))
    overlapped = pictures_of(setup["root"] / "paste_overlapped.mp4")
    np.testing.assert_array_equal(overlapped, pictures_of(setup["root"] / "paste_sequential.mp4"))
    source = pictures_of(setup["clip"])
    for frame in range(FRAMES):
        assert np.array_equal(overlapped[frame], source[frame]) == (frame in BLANK), frame
    render, calls = rerender_module.render_faces, []

    def terminated(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise Terminated()
        return render(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(rerender_module, "render_faces", terminated)
        result = runner.invoke(app, paste_args("paste_resumed"))
    assert result.exit_code == 143, result.output
    assert not (setup["root"] / "paste_resumed.mp4").exists()
    invoke(paste_args("paste_resumed"))
    np.testing.assert_array_equal(pictures_of(setup["root"] / "paste_resumed.mp4"), overlapped)
