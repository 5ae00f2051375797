"""Untouched pixels keep their colour: the source's matrix, range and tags are used both ways (issue 20, 6).

Each clip is made here with PyAV, losslessly, from real frames converted with the matrix and range it is
tagged with; a frame without a face must then come out of `rerender --crf 0` within one level of the input.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.video import VideoReader, VideoWriter, probe
from nvsvideo.video.colour import BT709, FULL, LIMITED, Colour, resolve_colour, rgb_to_yuv420

from tiny_models import save_tiny_eg3d, save_tiny_triplanenet

FRAMES = 3
#: dlib's box around the face in the first frame of single_face.mp4; the other frames are given no face.
FACE_BOX = [201, 118, 386, 304]

#: (pixel format, matrix, range, primaries, transfer) of the clips under test.
VARIANTS = {
    "bt601": ("yuv420p", 6, LIMITED, 6, 6),
    "bt709": ("yuv420p", 1, LIMITED, 1, 1),
    "bt709-full": ("yuv420p", 1, FULL, 1, 1),
    "bt2020-10bit": ("yuv420p10le", 9, LIMITED, 9, 14),
}


def make_colour_clip(path: Path, source: Path, variant: str) -> Path:
    """The first FRAMES frames of `source` losslessly in `variant`'s format, tagged with its colour."""
    pix_fmt, matrix, colour_range, primaries, transfer = VARIANTS[variant]
    frames = np.concatenate([b.frames for b in VideoReader(source, batch_size=FRAMES)])[:FRAMES]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"qp": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        ctx = stream.codec_context
        ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = matrix, colour_range, primaries, transfer
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=matrix, dst_color_range=colour_range)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def decoded(path: Path) -> tuple[tuple[int, int, int, int], list[np.ndarray]]:
    """The colour tags of the first frame and each frame's luma plane in 8-bit levels (float)."""
    lumas, tags = [], None
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            tags = tags or (int(frame.colorspace), int(frame.color_range), int(frame.color_primaries),
                            int(frame.color_trc))
            deep = frame.format.name.endswith(("10le", "10be"))
            plane = frame.planes[0]
            row = np.frombuffer(plane, np.uint16 if deep else np.uint8).reshape(plane.height, -1)
            lumas.append(row[:, : plane.width].astype(np.float64) / (4 if deep else 1))
    assert tags is not None
    return tags, lumas


def rgb_frames(path: Path) -> np.ndarray:
    return np.concatenate([b.frames for b in VideoReader(path)]).astype(np.int16)


def test_untagged_colour_is_filled_in_as_players_do() -> None:
    sd = resolve_colour(2, 0, 2, 2, pix_fmt="yuv420p", width=640, height=480)
    hd = resolve_colour(2, 0, 2, 2, pix_fmt="yuv420p", width=1280, height=720)
    jpeg = resolve_colour(2, 0, 2, 2, pix_fmt="yuvj420p", width=640, height=360)
    assert (sd.matrix, sd.range) == (6, LIMITED)
    assert (hd.matrix, hd.range) == (1, LIMITED)
    assert jpeg.range == FULL
    # Tagged values are kept, primaries and transfer as they are (never guessed).
    assert resolve_colour(9, 2, 9, 16, pix_fmt="yuv420p10le", width=64, height=48) == Colour(9, FULL, 9, 16)
    assert BT709.describe() == "bt709 matrix, limited range, primaries bt709, transfer bt709"


def test_rgb_to_yuv420_matches_hand_computed_levels() -> None:
    # Pure blue 20 over black in BT.709: Y = 0.0722 * 20 = 1.444, Cb = (20 - 1.444) / 1.8556 = 10.0, Cr = -0.917
    # (in 0..255 units); limited range scales them by 219/255 and 224/255 around 16 and 128.
    image = np.zeros((2, 2, 3), np.uint8)
    image[..., 2] = 20
    full = [int(p[0, 0]) for p in rgb_to_yuv420(image, Colour(1, FULL, 1, 1))]
    limited = [int(p[0, 0]) for p in rgb_to_yuv420(image, Colour(1, LIMITED, 1, 1))]
    assert full == [1, 138, 127] and limited == [17, 137, 127]
    grey = np.full((2, 2, 3), 200, np.uint8)
    assert [int(p[0, 0]) for p in rgb_to_yuv420(grey, Colour(6, FULL, 6, 6))] == [200, 128, 128]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_reader_and_writer_round_trip_each_colour(fixtures_dir: Path, tmp_path: Path, variant: str) -> None:
    src = make_colour_clip(tmp_path / "src.mp4", fixtures_dir / "single_face.mp4", variant)
    info = probe(src)
    _, matrix, colour_range, primaries, transfer = VARIANTS[variant]
    assert info.colour == Colour(matrix, colour_range, primaries, transfer)
    with VideoWriter(tmp_path / "out.mp4", width=info.width, height=info.height, fps=info.fps,
                     time_base=info.time_base, crf=0, colour=info.colour) as writer:
        for batch in VideoReader(src, info=info):
            writer.write(batch.frames, batch.pts)
    assert_same_pixels(src, tmp_path / "out.mp4", frames=range(FRAMES))


def assert_same_pixels(src: Path, out: Path, *, frames: range) -> None:
    """Same colour tags, and the same pixels within one level but where 4:2:0 chroma meets a sharp colour edge.

    Re-subsampling chroma at such an edge (and clipping the out-of-gamut RGB it implies) moves about 1 % of
    the RGB values and a handful of luma samples by more than a level; nowhere is there a shift on average.
    """
    src_tags, src_luma = decoded(src)
    out_tags, out_luma = decoded(out)
    assert out_tags == src_tags
    for i in frames:
        luma_change = out_luma[i] - src_luma[i]
        assert np.abs(luma_change).max() <= 2.0 and (np.abs(luma_change) > 1).mean() < 1e-4, i
        assert abs(luma_change.mean()) < 0.02, i
    change = rgb_frames(out)[list(frames)] - rgb_frames(src)[list(frames)]
    assert (np.abs(change) > 1).mean() < 0.02
    assert np.abs(change.reshape(-1, 3).mean(axis=0)).max() < 0.1


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("colour_models")
    return {"eg3d": save_tiny_eg3d(root / "eg3d.safetensors"), "v2": save_tiny_triplanenet(root / "v2.pt", "v2")}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_faceless_frames_of_a_rerender_keep_their_colour(fixtures_dir: Path, tmp_path: Path, variant: str,
                                                         tiny_models: dict[str, Path]) -> None:
    src = make_colour_clip(tmp_path / "src.mp4", fixtures_dir / "single_face.mp4", variant)
    faces = tmp_path / "faces.json"
    faces.write_text(json.dumps({"0": [FACE_BOX]}))
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, [
        "rerender", str(src), "-o", str(out), "--crf", "0", "--quiet", "--landmarks", "file",
        "--landmarks-file", str(faces), "--max-gap", "0", "--model", "v2", "--triplanenet", str(tiny_models["v2"]),
        "--eg3d", str(tiny_models["eg3d"]), "--device", "cpu", "--render-resolution", "16", "--samples", "1"])
    assert result.exit_code == 0, result.output
    assert_same_pixels(src, out, frames=range(1, FRAMES))
    if VARIANTS[variant][0] == "yuv420p":
        # The renders are pasted into the decoded pictures, so a face-less frame's samples are the source's own.
        with av.open(str(src)) as source, av.open(str(out)) as output:
            pairs = zip(source.decode(video=0), output.decode(video=0), strict=True)
            for frame, (a, b) in enumerate(pairs):
                if frame >= 1:
                    np.testing.assert_array_equal(b.to_ndarray(), a.to_ndarray())
