"""Start-up and I/O: model files memory-mapped and hashed once, the input probed once, codec threads sized
to the CPUs this process may use."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nvsvideo.cache import fingerprint as fp
from nvsvideo.cli import app
from nvsvideo.models.triplanenet.checkpoint import read_triplanenet
from nvsvideo.pipelines.common import FINGERPRINT_MEMO, fingerprint_memo
from nvsvideo.video.reader import MAX_CODEC_THREADS, codec_threads, usable_cpus
from nvsvideo.video.writer import VideoWriter

from face_clips import face_clip_with_gap
from tiny_models import save_tiny_eg3d, save_tiny_triplanenet

probe_module = sys.modules["nvsvideo.video.probe"]
SECOND = 1_000_000_000


@pytest.mark.parametrize(("affinity", "cpu_max", "expected"), [
    (8, None, 8),  # no cgroup quota
    (8, "max 100000\n", 8),  # a cgroup without a limit
    (64, "400000 100000\n", 4),  # docker --cpus 4 on a 64-core host
    (64, "150000 100000", 2),  # 1.5 CPUs of quota keep 2 threads busy part of the time
    (64, "50000 100000", 1),
    (2, "800000 100000", 2),  # the affinity mask is the tighter limit
    (4, "garbage", 4),
    (0, None, 1),
])
def test_usable_cpus(affinity: int, cpu_max: str | None, expected: int) -> None:
    assert usable_cpus(affinity, cpu_max) == expected


def test_codec_threads_fit_the_machine() -> None:
    threads = codec_threads()
    assert 1 <= threads <= MAX_CODEC_THREADS
    assert threads <= (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())


def test_writer_encodes_on_the_usable_cpus(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "out.mp4", width=16, height=16, fps=25) as writer:
        ctx = writer._video.codec_context
        assert ctx.thread_count == codec_threads() and ctx.thread_type.name == "SLICE"
        writer.write(np.zeros((2, 16, 16, 3), dtype=np.uint8))


def test_settled_needs_the_last_change_racy_ns_before_the_hash() -> None:
    stamp = {"mtime_ns": 10 * SECOND, "ctime_ns": 11 * SECOND}
    assert fp.settled(stamp, 11 * SECOND + fp.RACY_NS)
    assert not fp.settled(stamp, 11 * SECOND + fp.RACY_NS - 1)  # ctime counts: `touch -d` cannot set it back
    assert not fp.settled({"mtime_ns": 12 * SECOND, "ctime_ns": 11 * SECOND}, 13 * SECOND)


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    real = fp.file_sha256
    monkeypatch.setattr(fp, "file_sha256", lambda p: hashed.append(p) or real(p))
    return hashed


def test_a_file_changed_just_now_is_hashed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, memo = tmp_path / "model.pt", tmp_path / FINGERPRINT_MEMO
    model.write_bytes(b"weights" * 100)
    hashed = _count_hashes(monkeypatch)
    first = fp.file_fingerprint(model, memo_file=memo)
    # Another write in the same timestamp tick would leave the stat unchanged: nothing is remembered.
    assert not memo.exists()
    assert fp.file_fingerprint(model, memo_file=memo) == first and len(hashed) == 2


def test_memo_is_keyed_by_the_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "RACY_NS", 0)
    model, memo = tmp_path / "model.pt", tmp_path / FINGERPRINT_MEMO
    model.write_bytes(b"weights" * 100)
    os.utime(model, ns=(SECOND, SECOND))
    hashed = _count_hashes(monkeypatch)
    first = fp.file_fingerprint(model, memo_file=memo)
    assert first == f"sha256:{fp.file_sha256(model)}" and len(hashed) == 2
    entry = json.loads(memo.read_text())[str(model.resolve())]
    assert set(entry) == {"device", "inode", "size", "mtime_ns", "ctime_ns", "sha256"}
    assert fp.file_fingerprint(model, memo_file=memo) == first and len(hashed) == 2  # remembered
    model.write_bytes(b"tuned!!" * 100)  # same size
    os.utime(model, ns=(2 * SECOND, 2 * SECOND))
    second = fp.file_fingerprint(model, memo_file=memo)
    assert second != first and len(hashed) == 3
    # Replaced by a copy with the same size and mtime (a new inode): hashed again, not trusted.
    other = tmp_path / "other.pt"
    other.write_bytes(b"weights" * 100)
    os.utime(other, ns=(2 * SECOND, 2 * SECOND))
    other.replace(model)
    assert fp.file_fingerprint(model, memo_file=memo) == first and len(hashed) == 4


def test_a_memo_that_cannot_be_written_only_costs_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fp, "RACY_NS", 0)
    model, not_a_folder = tmp_path / "model.pt", tmp_path / "file"
    model.write_bytes(b"weights")
    not_a_folder.write_bytes(b"")
    assert fp.file_fingerprint(model, memo_file=not_a_folder / FINGERPRINT_MEMO) == fp.file_fingerprint(model)


def test_fingerprint_memo_lives_in_an_existing_weights_folder(tmp_path: Path) -> None:
    assert fingerprint_memo(tmp_path) == tmp_path / FINGERPRINT_MEMO
    assert fingerprint_memo(None, {"NVSVIDEO_HOME": str(tmp_path)}) == tmp_path / FINGERPRINT_MEMO
    assert fingerprint_memo(tmp_path / "missing") is None  # never created just for the memo


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc to see mappings")
def test_triplanenet_file_is_memory_mapped(tmp_path: Path) -> None:
    path = save_tiny_triplanenet(tmp_path / "tpn.pt", "v2")
    ckpt = read_triplanenet(path)
    assert str(path.resolve()) in Path("/proc/self/maps").read_text()
    legacy = tmp_path / "legacy.pt"
    torch.save(torch.load(path, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    old = read_triplanenet(legacy)  # the pre-1.6 format cannot be mapped: read as before
    assert str(legacy.resolve()) not in Path("/proc/self/maps").read_text()
    assert old.encoders.keys() == ckpt.encoders.keys()
    assert all(torch.equal(old.encoders[k], v) for k, v in ckpt.encoders.items())


def test_rerender_probes_the_input_once(fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = face_clip_with_gap(fixtures_dir / "single_face.mp4", tmp_path / "clip.mp4", blank=range(0), frames=2)
    # The cheapest settings that still align, invert and render (v1 has no mirror pass).
    models = ["--triplanenet", str(save_tiny_triplanenet(tmp_path / "tpn.pt", "v1")),
              "--eg3d", str(save_tiny_eg3d(tmp_path / "eg3d.safetensors")), "--landmarks", "dlib", "--device", "cpu",
              "--batch-size", "2", "--render-resolution", "32", "--samples", "1", "--output", "crop", "--size", "64"]
    probed: list[str] = []
    real = probe_module._scan_packets

    def counting(container, stream):  # noqa: ANN001, ANN202 - PyAV objects, passed through
        probed.append(container.name)
        return real(container, stream)

    monkeypatch.setattr(probe_module, "_scan_packets", counting)
    for name in ("first.mp4", "again.mp4"):  # align + invert + render, then render only
        probed.clear()
        result = CliRunner().invoke(app, ["rerender", str(clip), "-o", str(tmp_path / name), *models, "--quiet"])
        assert result.exit_code == 0, result.output
        assert probed == [str(clip)], name
