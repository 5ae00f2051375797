"""The weights registry, where files are looked for, manifests, verification, fetching and the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nvsvideo.cli import app
from nvsvideo.console import Reporter
from nvsvideo.errors import UsageError, WeightsError
from nvsvideo.weights import (
    KNOWN_WEIGHTS,
    expected_path,
    get_weight,
    require_weight,
    resolve_weights_dir,
    torch_hub_checkpoints_dir,
)
from nvsvideo.weights.fetch import fetch_weight
from nvsvideo.weights.gdrive import DownloadFailed
from nvsvideo.weights.registry import TORCH_HUB, available_edits
from nvsvideo.weights.verify import (
    TRIPLANENET_VARIANTS,
    compare_shapes,
    eg3d_manifest,
    triplanenet_manifest,
    verify_direction,
    verify_file,
    verify_mapper,
    verify_triplanenet,
    weights_status,
)

QUIET = Reporter(quiet=True)


# --- registry and folders ---------------------------------------------------------------------------


def test_registry_names_and_files_are_unique_and_described() -> None:
    names = [entry.name for entry in KNOWN_WEIGHTS]
    assert len(names) == len(set(names))
    assert len({(e.location, e.filename) for e in KNOWN_WEIGHTS}) == len(KNOWN_WEIGHTS)
    assert all(e.url.startswith("https://") and e.purpose and e.source for e in KNOWN_WEIGHTS)
    for name in ("eg3d-ffhq512-128", "eg3d-ffhqrebalanced512-128", "triplanenet-v1", "triplanenet-v2",
                 "mapper-eyeglasses", "direction-eyeglasses", "fan-2d", "fan-detector-sfd",
                 "fan-detector-blazeface", "fan-detector-blazeface-anchors", "fan-detector-retinaface"):
        assert get_weight(name).name == name


def test_unknown_name_is_a_weights_error() -> None:
    with pytest.raises(UsageError, match="unknown weight file 'nope'"):
        get_weight("nope")


def test_weights_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_weights_dir(tmp_path / "cli", {"NVSVIDEO_HOME": str(tmp_path / "env")}) == tmp_path / "cli"
    assert resolve_weights_dir(None, {"NVSVIDEO_HOME": str(tmp_path / "env")}) == tmp_path / "env"
    assert resolve_weights_dir(None, {}) == tmp_path / "home" / ".cache" / "nvsvideo"


def test_torch_hub_folder_follows_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert torch_hub_checkpoints_dir({"TORCH_HOME": "/t"}) == Path("/t/hub/checkpoints")
    assert torch_hub_checkpoints_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/torch/hub/checkpoints")
    assert torch_hub_checkpoints_dir({}) == tmp_path / ".cache" / "torch" / "hub" / "checkpoints"
    fan = get_weight("fan-2d")
    assert expected_path(fan, tmp_path / "w", {"TORCH_HOME": "/t"}) == Path("/t/hub/checkpoints/2DFAN4-11f355bf06.pth.tar")


def test_require_weight_says_what_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as err:
        require_weight("eg3d-ffhqrebalanced512-128", tmp_path, {})
    message = str(err.value)
    assert "ffhqrebalanced512-128.pkl" in message
    assert str(tmp_path / "ffhqrebalanced512-128.pkl") in message
    assert "https://api.ngc.nvidia.com/" in message
    with pytest.raises(WeightsError, match=r"weights fetch triplanenet-v2.*download https://drive\.google\.com/.*triplanenet_v2_final\.pth"):
        require_weight("triplanenet-v2", tmp_path, {})


def test_require_weight_finds_main_then_accepted_names(tmp_path: Path) -> None:
    converted = tmp_path / "ffhq512-128.safetensors"
    converted.write_bytes(b"x")
    assert require_weight("eg3d-ffhq512-128", tmp_path, {}) == converted
    original = tmp_path / "ffhq512-128.pkl"
    original.write_bytes(b"x")
    assert require_weight("eg3d-ffhq512-128", tmp_path, {}) == original
    direction = tmp_path / "directions" / "Smiling.pt"
    direction.parent.mkdir()
    direction.write_bytes(b"x")
    assert require_weight("direction-smiling", tmp_path, {}) == direction


# --- manifests --------------------------------------------------------------------------------------


def _read_interop_tsv(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split("\t")[:2]
            if shape.startswith("["):
                dims = json.loads(shape)
            else:
                dims = [] if shape == "scalar" else [int(d) for d in shape.split("x")]
            rows.append((name, tuple(dims)))
    return rows


def test_eg3d_manifest_counts() -> None:
    rows = eg3d_manifest()
    assert len(rows) == 177 and rows[0].name == "dataset_label_std"
    total = sum(torch.Size(r.shape).numel() for r in rows)
    assert total == 30_662_136 + 831_049  # parameters + buffer elements (eg3d_facts.md §1)


def test_packaged_manifests_equal_the_recorded_facts(interop_dir: Path) -> None:
    ours = [(r.name, r.shape) for r in eg3d_manifest()]
    assert ours == _read_interop_tsv(interop_dir / "eg3d_ffhq512-128_state_dict.tsv")
    files = {"v1": "triplanenet_v1", "v2": "triplanenet_v2", "v2-nopixelshuffle": "triplanenet_v2_nopixelshuffle"}
    for variant, stem in files.items():
        ours = [(r.name, r.shape) for r in triplanenet_manifest(variant)]
        assert ours == _read_interop_tsv(interop_dir / f"{stem}_state_dict.tsv"), variant
        assert len(ours) == 1182


def test_compare_shapes_reports_each_kind_of_difference() -> None:
    manifest = eg3d_manifest()[:3]
    shapes = {r.name: r.shape for r in manifest}
    assert compare_shapes(shapes, manifest) == []
    del shapes[manifest[0].name]
    shapes["extra"] = (1,)
    shapes[manifest[1].name] = (7,)
    problems = compare_shapes(shapes, manifest)
    assert len(problems) == 3
    assert "1 tensors missing (e.g. dataset_label_std)" in problems[0]
    assert compare_shapes({r.name: r.shape for r in manifest[1:]}, manifest, frozenset({"dataset_label_std"})) == []


# --- verification -----------------------------------------------------------------------------------


def _meta_state(variant: str) -> dict[str, torch.Tensor]:
    """A state dict with the manifest's names and shapes, without allocating memory."""
    return {r.name: torch.empty(r.shape, device="meta") for r in triplanenet_manifest(variant)}


@pytest.mark.parametrize("variant", list(TRIPLANENET_VARIANTS))
def test_triplanenet_variants_are_told_apart(variant: str) -> None:
    result = verify_triplanenet(_meta_state(variant))
    assert result.ok and f"TriPlaneNet {variant} manifest" in result.detail


def test_triplanenet_without_generator_is_accepted_with_a_note() -> None:
    state = {k: v for k, v in _meta_state("v2").items() if not k.startswith("decoder.")}
    result = verify_triplanenet(state, "v2")
    assert result.ok and "EG3D .pkl is needed too" in result.detail


def test_triplanenet_with_a_wrong_shape_fails() -> None:
    state = _meta_state("v1")
    state["psp_encoder.input_layer.0.weight"] = torch.empty(1, device="meta")
    result = verify_triplanenet(state, "v1")
    assert not result.ok and "psp_encoder.input_layer.0.weight" in result.detail


def _mapper(groups=("course", "medium"), size=512) -> dict:
    state = {
        f"mapper.{g}_mapping.mapping.{i}.{p}": torch.empty((512, 512) if p == "weight" else (512,), device="meta")
        for g in groups
        for i in (1, 2, 3, 4)
        for p in ("weight", "bias")
    }
    state["decoder.backbone.mapping.w_avg"] = torch.empty(512, device="meta")
    return {"state_dict": state, "opts": {"stylegan_size": size, "no_fine_mapper": True}}


def test_mapper_checks() -> None:
    assert verify_mapper(_mapper()).ok
    stylegan2 = verify_mapper(_mapper(size=1024))
    assert not stylegan2.ok and "1024 px StyleGAN2" in stylegan2.detail
    partial = _mapper()
    del partial["state_dict"]["mapper.medium_mapping.mapping.4.bias"]
    assert not verify_mapper(partial).ok
    assert not verify_mapper({"state_dict": {}}).ok


def test_direction_checks() -> None:
    assert verify_direction(torch.zeros(1, 7168)).ok
    assert verify_direction(torch.zeros(1, 14, 512)).ok
    assert not verify_direction(torch.zeros(1, 18, 512)).ok
    assert not verify_direction({"w": torch.zeros(7168)}).ok


def test_verify_file_reads_pt_files_safely(tmp_path: Path) -> None:
    good = tmp_path / "Smiling.pt"
    torch.save(torch.randn(1, 7168), good)
    assert verify_file(good).ok
    page = tmp_path / "Young.pt"
    page.write_text("<!DOCTYPE html><html>quota exceeded</html>")
    result = verify_file(page)
    assert not result.ok and "web page" in result.detail
    hostile = tmp_path / "evil.pt"
    torch.save({"x": print}, hostile)
    result = verify_file(hostile)
    assert not result.ok and "safe loader refuses" in result.detail
    assert verify_file(tmp_path / "absent.pt").detail == "missing"


def test_every_file_the_fan_backend_asks_for_is_a_registry_entry(tmp_path: Path) -> None:
    from nvsvideo.face.backends import fan_backend

    registered = {(e.filename, e.url) for e in KNOWN_WEIGHTS if e.location == TORCH_HUB}
    for detector in fan_backend.FAN_DETECTORS:
        files = fan_backend.fan_weight_files(detector)
        assert {(path.name, url) for path, url in files.values()} <= registered


def test_detector_anchors_verify_as_a_plain_array(tmp_path: Path) -> None:
    anchors = tmp_path / "anchors.npy"
    np.save(anchors, np.zeros((896, 4), np.float32))
    result = verify_file(anchors, "landmarks")
    assert result.ok and result.detail == "array float32 [896, 4]"
    np.save(anchors, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert not verify_file(anchors, "landmarks").ok  # never unpickled


def test_weights_status_reports_present_missing_invalid(tmp_path: Path) -> None:
    (tmp_path / "directions").mkdir()
    torch.save(torch.randn(1, 7168), tmp_path / "directions" / "Smiling.pt")
    (tmp_path / "directions" / "Young.pt").write_bytes(b"")
    rows = {row.entry.name: row for row in weights_status(tmp_path, {"TORCH_HOME": str(tmp_path / "torch")})}
    assert rows["direction-smiling"].status == "present"
    assert rows["direction-young"].status == "invalid" and "empty" in rows["direction-young"].detail
    assert rows["eg3d-ffhq512-128"].status == "missing"
    assert rows["fan-2d"].path == tmp_path / "torch" / "hub" / "checkpoints" / "2DFAN4-11f355bf06.pth.tar"
    deep = {row.entry.name: row for row in weights_status(tmp_path, {}, deep=True)}
    assert deep["direction-smiling"].status == "present" and "shape [1, 7168]" in deep["direction-smiling"].detail
    assert deep["direction-young"].status == "invalid"


# --- fetching ---------------------------------------------------------------------------------------


class _Reply(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def _serving(data: bytes):
    def opener(url: str, timeout: float) -> _Reply:
        return _Reply(data)

    return opener


def _offline(url: str, timeout: float):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def test_fetch_offline_says_which_file_to_put_where(tmp_path: Path) -> None:
    entry = get_weight("direction-smiling")
    with pytest.raises(WeightsError) as err:
        fetch_weight(entry, tmp_path, {}, QUIET, opener=_offline)
    assert "Name or service not known" in str(err.value)
    assert entry.url in str(err.value) and str(tmp_path / "directions" / "Smiling.pt") in str(err.value)
    assert not (tmp_path / "directions").exists() or not any((tmp_path / "directions").iterdir())


def test_fetch_refuses_manual_downloads(tmp_path: Path) -> None:
    browser_only = dataclasses.replace(get_weight("triplanenet-v1"), drive_id="")
    with pytest.raises(WeightsError, match="cannot be downloaded automatically.*drive.google.com"):
        fetch_weight(browser_only, tmp_path, {}, QUIET, opener=_offline)


# --- Google Drive (gdown replaced by a local stand-in) ----------------------------------------------


class FakeDrive:
    """Serves bytes by Drive file id the way gdown does: into a partial file beside the output, resumed
    from its size on the next call, renamed onto the output when complete. `cut_at`: bytes after which the
    next call breaks off."""

    def __init__(self, files: dict[str, bytes], cut_at: int | None = None) -> None:
        self.files, self.cut_at = files, cut_at
        self.calls: list[tuple[str, str, int]] = []

    def __call__(self, file_id: str, output: Path, quiet: bool) -> None:
        data = self.files[file_id]
        part = output.with_name(output.name + ".part")
        start = part.stat().st_size if part.exists() else 0
        self.calls.append((file_id, output.name, start))
        stop = len(data) if self.cut_at is None else min(len(data), self.cut_at)
        self.cut_at = None
        with open(part, "ab") as f:
            f.write(data[start:stop])
        if stop < len(data):
            raise DownloadFailed("Connection reset by peer")
        part.rename(output)


def test_drive_entries_use_the_release_file_ids() -> None:
    assert get_weight("triplanenet-v1").drive_id == "17pzNC00BOFCu0oCqbCybfAiaZF7iwNUU"
    assert get_weight("triplanenet-v2").drive_id == "1Q7hGZw97nTmRyJ-itVGRaFJn9KyjAuhn"
    mappers = get_weight("mapper-eyeglasses")
    assert (mappers.drive_id, mappers.archive) == ("1IVm-IcKXkAHPu8_eMOZTuKdmxSAZjVU2", "mapper_results.zip")


def test_drive_fetch_resumes_after_an_interruption_and_checks_the_sha256(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    entry = dataclasses.replace(get_weight("triplanenet-v2"), sha256=hashlib.sha256(data).hexdigest())
    drive = FakeDrive({entry.drive_id: data}, cut_at=3000)
    with pytest.raises(WeightsError, match="Connection reset.*same command again resumes it"):
        fetch_weight(entry, tmp_path, {}, QUIET, opener=_offline, drive=drive)
    target = tmp_path / "triplanenet_v2_final.pth"
    assert not target.exists()
    path = fetch_weight(entry, tmp_path, {}, QUIET, opener=_offline, drive=drive)
    assert path == target and path.read_bytes() == data
    assert drive.calls == [(entry.drive_id, target.name, 0), (entry.drive_id, target.name, 3000)]
    assert not any((tmp_path / ".downloads").iterdir())
    # Present files are not downloaded again.
    assert fetch_weight(entry, tmp_path, {}, QUIET, drive=FakeDrive({})) == target


def test_drive_fetch_refuses_and_deletes_a_wrong_file(tmp_path: Path) -> None:
    v1 = get_weight("triplanenet-v1")
    wrong_hash = dataclasses.replace(v1, sha256="0" * 64)
    with pytest.raises(WeightsError, match="not the recorded 0000"):
        fetch_weight(wrong_hash, tmp_path, {}, QUIET, drive=FakeDrive({v1.drive_id: b"\x80 some pickle"}))
    # Without a recorded hash the content is checked: Drive's "cannot scan for viruses" page is no checkpoint.
    with pytest.raises(WeightsError, match="so it was deleted"):
        fetch_weight(v1, tmp_path, {}, QUIET, drive=FakeDrive({v1.drive_id: b"<html>Google Drive</html>"}))
    assert not (tmp_path / v1.filename).exists() and not any((tmp_path / ".downloads").iterdir())


def test_drive_fetch_unpacks_the_in_n_out_mapper_archive(tmp_path: Path) -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for edit in ("eyeglasses", "smile"):
            zf.writestr(f"mapper_results/{edit}/checkpoints/best_model.pt", f"{edit} mapper")
            zf.writestr(f"mapper_results/{edit}/opt.json", "{}")
        zf.writestr("mapper_results/../../escape/checkpoints/best_model.pt", "never written")
    entry = get_weight("mapper-eyeglasses")
    path = fetch_weight(entry, tmp_path, {}, QUIET, drive=FakeDrive({entry.drive_id: archive.getvalue()}))
    assert path == tmp_path / "mappers/eyeglasses/checkpoints/best_model.pt"
    assert path.read_text() == "eyeglasses mapper"
    assert sorted(available_edits(tmp_path)) == ["mapper-eyeglasses", "mapper-smile"]
    assert not (tmp_path / "escape").exists() and not any((tmp_path / ".downloads").iterdir())


def test_fetch_writes_the_file_atomically(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(torch.randn(1, 7168), buffer)
    path = fetch_weight(get_weight("direction-smiling"), tmp_path, {}, QUIET, opener=_serving(buffer.getvalue()))
    assert path == tmp_path / "directions" / "Smiling.pt"
    assert path.read_bytes() == buffer.getvalue()
    assert [p.name for p in path.parent.iterdir()] == ["Smiling.pt"]
    # Present files are not downloaded again.
    assert fetch_weight(get_weight("direction-smiling"), tmp_path, {}, QUIET, opener=_offline) == path


def test_fetch_rejects_a_web_page(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not a model file"):
        fetch_weight(get_weight("direction-young"), tmp_path, {}, QUIET, opener=_serving(b"<html>sign in</html>"))
    assert not any((tmp_path / "directions").iterdir())


# --- CLI --------------------------------------------------------------------------------------------


def test_cli_lists_every_known_file_as_json(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["weights", "--weights", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["weights_dir"] == str(tmp_path)
    assert [f["name"] for f in payload["files"]] == [e.name for e in KNOWN_WEIGHTS]
    eg3d = payload["files"][0]
    assert eg3d["status"] == "missing" and eg3d["path"] == str(tmp_path / "ffhqrebalanced512-128.pkl")


def test_cli_list_table_uses_nvsvideo_home(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["weights", "list"], env={"NVSVIDEO_HOME": str(tmp_path), "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert str(tmp_path) in result.output and "triplanenet-v2" in result.output and "missing" in result.output


def test_cli_verify_fails_on_an_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    torch.save(torch.zeros(3), bad)
    result = CliRunner().invoke(app, ["weights", "verify", str(bad)])
    assert result.exit_code == 5 and "14x512" in result.output
    (tmp_path / "directions").mkdir()
    (tmp_path / "directions" / "Bald.pt").write_bytes(b"")
    result = CliRunner().invoke(app, ["weights", "verify", "--weights", str(tmp_path), "--json"])
    assert result.exit_code == 5 and "direction-bald" in result.output


def test_cli_fetch_unknown_name_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["weights", "fetch", "nope", "--weights", str(tmp_path)])
    assert result.exit_code == 2 and "unknown weight file" in result.output


def test_listing_and_edit_lookup_find_the_same_user_directions(tmp_path: Path) -> None:
    from nvsvideo.edits import resolve_edit

    folder = tmp_path / "directions"
    folder.mkdir()
    for stem in ("Smiling", "eye_glasses", "age-old"):
        np.save(folder / f"{stem}.npy", np.ones(512, np.float32))
    result = CliRunner().invoke(app, ["weights", "--weights", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    files = {f["name"]: f for f in json.loads(result.stdout)["files"]}
    present = {name: f["path"] for name, f in files.items() if f["status"] == "present"}
    assert present == {"direction-smiling": str(folder / "Smiling.npy"),
                       "direction-eye-glasses": str(folder / "eye_glasses.npy"),
                       "direction-age-old": str(folder / "age-old.npy")}
    for name, path in present.items():
        assert str(resolve_edit(name, tmp_path)) == path
    summary = CliRunner().invoke(app, ["weights", "--weights", str(tmp_path)], env={"COLUMNS": "80"}).stdout
    assert "3 present (smiling, age-old, eye-glasses)" in summary
    every = CliRunner().invoke(app, ["weights", "--weights", str(tmp_path), "--all"], env={"COLUMNS": "80"}).stdout
    assert every.count("present") == 3 and "direction-age-old" in every


def test_verify_tells_a_non_ffhq_generator_apart(interop_dir: Path) -> None:
    tiny = interop_dir / "parity" / "eg3d_dev" / "tiny_eg3d.pkl"
    if not tiny.is_file():
        pytest.skip("EG3D parity fixture not available")
    result = verify_file(tiny)
    assert not result.ok and "backbone.synthesis.b4.const is [32, 4, 4] not [512, 4, 4]" in result.detail
