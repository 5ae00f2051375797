"""Checks that need no computation run first: refused in about a second, one sentence, nothing created."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.errors import InputError
from nvsvideo.validate import check_distinct, check_input_file, check_video_output, mesh_format

from media import make_clip

runner = CliRunner()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "talk.mp4", frames=4)


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# (arguments after `rerender VIDEO` with {d} the work folder, exit code, words of the message)
REFUSED = [
    (["-o", "{video}"], 2, "is the input"),
    (["-o", "{d}/out.avi"], 2, "cannot write '.avi'"),
    (["-o", "{d}/out.webm"], 2, "cannot write '.webm'"),
    (["-o", "{d}/out.mp4", "--depth", "{d}/d.gif"], 2, "--depth"),
    (["-o", "{d}/out.mp4", "--depth", "{d}/out.mp4"], 2, "both name"),
    (["-o", "{d}/out.mp4", "--mesh", "{d}/m.stl"], 2, ".ply or .obj"),
    (["-o", "{d}/out.mp4", "--yaw-path", "keyframes:{d}/missing.json"], 3, "missing.json"),
    (["-o", "{d}/out.mp4", "--yaw-path", "fixed:yaw=inf"], 2, "not a finite number"),
    (["-o", "{d}/out.mp4", "--yaw-path", "fixed:yaw=nan"], 2, "not a finite number"),
    (["-o", "{d}/out.mp4", "--yaw-path", "spiral"], 2, "unknown camera path"),
    (["-o", "{d}/out.mp4", "--weights", "{video}"], 2, "takes a folder"),
    (["-o", "{d}/out.mp4", "--weights", "{d}/empty"], 5, "missing weight file"),
    (["-o", "{d}/out.mp4", "--triplanenet", "{d}/nothing.pth"], 3, "does not exist"),
    (["-o", "{d}/out.mp4", "--preset", "turbo"], 2, "not a libx264 preset"),
    (["-o", "{d}/out.mp4", "--preset", "Medium"], 2, "not a libx264 preset"),
]


@pytest.mark.parametrize(("args", "code", "words"), REFUSED, ids=[" ".join(r[0][2:]) or r[0][1] for r in REFUSED])
def test_rerender_refuses_before_any_work(clip: Path, tmp_path: Path, args: list[str], code: int,
                                          words: str) -> None:
    video = tmp_path / clip.name
    video.write_bytes(clip.read_bytes())
    before = _listing(tmp_path)
    filled = [a.format(d=tmp_path, video=video) for a in args]
    result = runner.invoke(app, ["rerender", str(video), *filled])
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], result.output
    assert _listing(tmp_path) == before  # no cache folder, no output, no temporary file


def test_still_image_is_refused_by_rerender_and_invert(fixtures_dir: Path, tmp_path: Path) -> None:
    image = fixtures_dir / "single_face.jpg"
    for args in (["rerender", str(image), "-o", str(tmp_path / "x.mp4")], ["invert", str(image)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 3 and "still image" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_weights_takes_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "model.pth"
    file.write_bytes(b"x")
    for args in (["weights", "--weights", str(file)], ["sample", "-o", str(tmp_path / "s.mp4"), "--weights", str(file)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "--weights takes a folder" in result.output and "--triplanenet or --eg3d" in result.output


def test_choices_are_checked_by_the_parser(clip: Path, tmp_path: Path) -> None:
    for option, value in (("--output", "mosaic"), ("--store", "all"), ("--model", "v3"), ("--edit-offsets", "x")):
        result = runner.invoke(app, ["rerender", str(clip), "-o", str(tmp_path / "o.mp4"), option, value])
        assert result.exit_code == 2 and option in result.output, result.output


def test_refusals_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from nvsvideo.cli import app\n"
        "codes = []\n"
        "for args in (['--help'], ['rerender', 'missing.mp4', '-o', 'x.mp4'], ['rerender', '--help'],\n"
        "             ['edit', 'missing.mp4', '-o', 'x.mp4', '--direction', 'smile', '--preset', 'turbo']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as stop:\n"
        "        codes.append(stop.code)\n"
        "print(codes, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "[0, 3, 0, 2] False", result.stdout + result.stderr


def test_batch_refuses_a_bad_preset_before_any_video(clip: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["batch", str(clip), "-o", str(tmp_path / "out"), "--preset", "turbo"])
    assert result.exit_code == 2 and "not a libx264 preset" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_input_checks(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        check_input_file(tmp_path / "none.mp4")
    with pytest.raises(InputError, match="is a folder"):
        check_input_file(tmp_path)
    for command in (["invert", str(tmp_path / "none.mp4")], ["align", str(tmp_path / "none.mp4"), "-o", "a"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 3 and "does not exist" in result.output, result.output


def test_output_checks() -> None:
    with pytest.raises(Exception, match="cannot write"):
        check_video_output(Path("a.MKV"), [])
    check_video_output(Path("a.MOV"), [Path("b.mp4")])
    assert mesh_format("x.PLY") == "ply" and mesh_format("y.obj") == "obj"
    check_distinct({"--out": Path("a.mp4"), "--depth": None, "--mesh": Path("a.ply")})
    with pytest.raises(Exception, match="both name"):
        check_distinct({"--out": Path("a.mp4"), "--depth": Path("./a.mp4")})


def test_model_version_must_match_the_file(tmp_path: Path) -> None:
    from nvsvideo.errors import WeightsError
    from nvsvideo.pipelines.common import load_inverter

    from tiny_models import save_tiny_eg3d, save_tiny_triplanenet

    v1 = save_tiny_triplanenet(tmp_path / "tpn_v1.pt", version="v1")
    eg3d = save_tiny_eg3d(tmp_path / "eg3d.safetensors")
    model, _ = load_inverter(None, v1, eg3d, None, "cpu")
    assert model.version == "v1"  # no --model: the file's own version
    with pytest.raises(WeightsError, match="is a TriPlaneNet v1 checkpoint, but --model v2"):
        load_inverter("v2", v1, eg3d, None, "cpu")


def test_weights_json_has_booleans(tmp_path: Path) -> None:
    result = runner.invoke(app, ["weights", "--json", "--weights", str(tmp_path)])
    assert result.exit_code == 0
    files = json.loads(result.stdout)["files"]
    assert {type(f["direct_download"]) for f in files} == {bool}


def test_face_index_beyond_the_faces_says_how_many(fixtures_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["align", str(fixtures_dir / "multi_face.jpg"), "-o", str(tmp_path / "a"),
                                 "--landmarks", "dlib", "--face-index", "9"])
    assert result.exit_code == 4, result.output
    assert "--face-index 9" in result.output and "no face was found" not in result.output
