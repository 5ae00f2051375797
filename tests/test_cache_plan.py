"""The cache's content key, size estimates, `--store auto`, the free-space check and the mismatch messages.

Sizes are checked against hand-computed values and against the files the cache really writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nvsvideo.cache import (
    CacheMismatchError,
    CacheSpaceError,
    FrameRecord,
    InversionCache,
    StoreMode,
    content_key,
    parse_store,
)
from nvsvideo.cache import plan as plan_module
from nvsvideo.cache.fingerprint import sample_ranges
from nvsvideo.cache.manifest import Difference
from nvsvideo.cache.plan import compatible_manifest, describe, mismatch_message, plan_store
from nvsvideo.cache.space import check_space, choose_store, folder_bytes, format_bytes, frame_bytes
from nvsvideo.errors import UsageError

MIB = 1 << 20
GIB = 1 << 30
SETTINGS = {"model": "v2", "seed": 0, "align": {"source": "sample-sha256:" + "0" * 64, "smooth": 0.1}}
FINGERPRINTS = {"model0": "sha256:" + "ab" * 32}


def test_sample_ranges_cover_small_files_whole_and_sample_large_ones() -> None:
    assert sample_ranges(0) == []
    assert sample_ranges(16 * MIB) == [(0, 16 * MIB)]  # 4 + 8 x 1 + 4 MiB: hashed whole
    ranges = sample_ranges(64 * MIB)
    # By hand: the middle is 56 MiB, the eight 1 MiB blocks start (56 MiB - 1 MiB) // 7 = 8238811 bytes apart.
    assert ranges[0] == (0, 4 * MIB) and ranges[-1] == (60 * MIB, 4 * MIB)
    assert [offset for offset, _ in ranges[1:-1]] == [4 * MIB + i * 8238811 for i in range(8)]
    assert all(length == MIB for _, length in ranges[1:-1])
    ends = [offset + length for offset, length in ranges]
    assert all(end <= start for end, (start, _) in zip(ends, ranges[1:], strict=False))  # no overlap


def test_content_key_ignores_time_and_place_but_not_content(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    data = bytearray(os.urandom(20 * MIB))
    video.write_bytes(data)
    key = content_key(video)
    os.utime(video, ns=(1, 1))  # `touch`
    copy = tmp_path / "elsewhere" / "copy.mp4"
    copy.parent.mkdir()
    copy.write_bytes(data)  # a copy without -p: new mtime, new inode
    assert content_key(video) == key == content_key(copy)
    middle_block = sample_ranges(len(data))[4][0]
    for offset in (0, middle_block + 7, len(data) - 1):  # the start, a sampled middle block, the end
        changed = bytearray(data)
        changed[offset] ^= 1
        copy.write_bytes(changed)
        assert content_key(copy) != key
    copy.write_bytes(data + b"\0")
    assert content_key(copy) != key


def test_frame_bytes_by_hand_at_the_official_size() -> None:
    # ws 14 x 512 float32 + label 25 float32 + planes 96 x 256 x 256 float16, 128 header bytes per tensor.
    assert frame_bytes(StoreMode.PLANES, (14, 512), (96, 256, 256), 2) == 28672 + 100 + 12582912 + 3 * 128
    assert frame_bytes(StoreMode.OFFSETS, (14, 512), (96, 256, 256), 2) == 28672 + 100 + 12582912 + 3 * 128
    assert frame_bytes(StoreMode.RECOMPUTE, (14, 512), (96, 256, 256), 2) == 28672 + 100 + 2 * 128


@pytest.mark.parametrize("store", list(StoreMode))
def test_frame_bytes_bounds_what_the_cache_writes(tmp_path: Path, store: StoreMode) -> None:
    frames = 6
    with InversionCache.open(tmp_path, n_frames=frames, settings=SETTINGS, fingerprints=FINGERPRINTS, store=store,
                             on_warning=print, chunk_size=3) as cache:
        for frame in range(frames):
            planes = torch.randn(96, 16, 16)
            cache.put(frame, FrameRecord(ws=torch.randn(14, 512), label=torch.randn(25), planes=planes,
                                         offsets=planes))
    chunks = folder_bytes(tmp_path / "chunks")
    estimate = frame_bytes(store, (14, 512), (96, 16, 16), 2) * frames
    raw = (14 * 512 * 4 + 25 * 4 + (96 * 16 * 16 * 2 if store.stored_field else 0)) * frames
    assert raw < chunks <= estimate


def test_auto_keeps_planes_under_8_gib_and_a_quarter_of_the_free_space() -> None:
    assert choose_store(8 * GIB, 32 * GIB) is StoreMode.PLANES
    assert choose_store(8 * GIB + 1, 64 * GIB) is StoreMode.RECOMPUTE
    assert choose_store(GIB, 4 * GIB) is StoreMode.PLANES
    assert choose_store(GIB, 4 * GIB - 1) is StoreMode.RECOMPUTE


def test_parse_store() -> None:
    assert parse_store("auto") is None and parse_store("offsets") is StoreMode.OFFSETS
    with pytest.raises(UsageError, match="auto, planes, offsets or recompute"):
        parse_store("disk")


def test_check_space_names_sizes_and_remedies(tmp_path: Path) -> None:
    check_space(100, 100, tmp_path, StoreMode.PLANES, 10)
    with pytest.raises(CacheSpaceError) as error:
        check_space(230_000_000_000, 40_000_000_000, tmp_path, StoreMode.PLANES, 500_000_000)
    message = str(error.value)
    assert "230.0 GB" in message and "40.0 GB free" in message and str(tmp_path) in message
    assert "--store recompute (about 500.0 MB)" in message and "--cache DIR" in message
    assert error.value.exit_code == 3
    with pytest.raises(CacheSpaceError, match="--store recompute --fresh"):
        check_space(2, 1, tmp_path, StoreMode.PLANES, 1, existing=True)
    with pytest.raises(CacheSpaceError) as error:  # recompute itself does not fit: only another disk helps
        check_space(2, 1, tmp_path, StoreMode.RECOMPUTE, 2)
    assert "--store" not in str(error.value).split("; ")[1]


def test_format_bytes() -> None:
    assert format_bytes(999) == "999 B"
    assert format_bytes(12_612_068) == "12.6 MB"
    assert format_bytes(999_960) == "1.0 MB"
    assert format_bytes(5.6e9) == "5.6 GB" and format_bytes(2.3e14) == "230.0 TB"


def test_differences_in_words_without_hashes_or_nanoseconds() -> None:
    assert describe(Difference("settings.seed", 0, 5)) == "the seed (--seed): 0 in the cache, 5 now"
    assert describe(Difference("fingerprints.model0", "sha256:" + "a" * 64, "sha256:" + "b" * 64)) == (
        "the TriPlaneNet file (its content differs)")
    assert describe(Difference("settings.draw", None, "stratified")) == "draw (differs)"
    old = [Difference("settings.align.source.mtime_ns", 1733311111222333444, None),
           Difference("settings.align.source", None, "sample-sha256:" + "c" * 64)]
    message = mismatch_message(Path("clip.mp4.nvs/inversion"), old)
    assert "earlier nvsvideo" in message and "--fresh" in message and "1733311111222333444" not in message
    assert "another video" in mismatch_message(Path("x"), old[1:])
    store_only = mismatch_message(Path("x"), [Difference("store", "planes", "recompute")])
    assert "pass --store planes to use it" in store_only and "--fresh" in store_only


def _cache(directory: Path, store: StoreMode = StoreMode.PLANES, frames: int = 4, filled: int = 4) -> None:
    with InversionCache.open(directory, n_frames=frames, settings=SETTINGS, fingerprints=FINGERPRINTS, store=store,
                             on_warning=print, chunk_size=2) as cache:
        for frame in range(filled):
            planes = torch.zeros(96, 4, 4)
            cache.put(frame, FrameRecord(ws=torch.zeros(14, 512), label=torch.zeros(25), planes=planes, offsets=planes))


def _files(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


def test_compatible_manifest_refuses_without_touching_the_cache(tmp_path: Path) -> None:
    _cache(tmp_path)
    options = {"settings": SETTINGS, "fingerprints": FINGERPRINTS, "store": None, "chunk_size": None, "fresh": False}
    assert compatible_manifest(tmp_path, **options) is not None
    before = _files(tmp_path)
    with pytest.raises(CacheMismatchError, match=r"the seed \(--seed\): 0 in the cache, 3 now"):
        compatible_manifest(tmp_path, **{**options, "settings": {**SETTINGS, "seed": 3}})
    with pytest.raises(CacheMismatchError, match="pass --store planes"):
        compatible_manifest(tmp_path, **{**options, "store": StoreMode.RECOMPUTE})
    assert _files(tmp_path) == before
    assert compatible_manifest(tmp_path, **{**options, "store": StoreMode.RECOMPUTE, "fresh": True}) is None
    assert compatible_manifest(tmp_path / "none", **options) is None


def test_plan_store_decides_auto_and_checks_free_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shapes = {"ws_shape": (14, 512), "plane_shape": (96, 256, 256), "chunk_size": 8, "on_info": print}
    planes, recompute = (frame_bytes(m, (14, 512), (96, 256, 256), 2) for m in (StoreMode.PLANES, StoreMode.RECOMPUTE))
    monkeypatch.setattr(plan_module, "free_bytes", lambda directory: 100 * GIB)
    new = tmp_path / "new"
    assert plan_store(new, n_frames=600, existing=None, store=None, **shapes) is StoreMode.PLANES  # 7.6 GB
    infos: list[str] = []
    # Ten minutes at 30 fps: planes would take 227 GB; auto keeps codes only and says why.
    chosen = plan_store(new, n_frames=18000, existing=None, store=None, **{**shapes, "on_info": infos.append})
    assert chosen is StoreMode.RECOMPUTE and "227.0 GB" in infos[0] and "--store planes" in infos[0]
    with pytest.raises(CacheSpaceError, match="needs about 227.1 GB"):  # 18000 + one chunk being rewritten
        plan_store(new, n_frames=18000, existing=None, store=StoreMode.PLANES, **shapes)
    assert (18000 + 8) * planes > 100 * GIB > (18000 + 8) * recompute
    assert not new.exists()  # planning writes nothing
    # An existing cache keeps its store mode, and only its missing frames count.
    _cache(tmp_path / "old", StoreMode.PLANES, frames=10, filled=4)
    existing = compatible_manifest(tmp_path / "old", settings=SETTINGS, fingerprints=FINGERPRINTS, store=None,
                                   chunk_size=None, fresh=False)
    monkeypatch.setattr(plan_module, "free_bytes", lambda directory: 14 * planes)
    assert plan_store(tmp_path / "old", n_frames=10, existing=existing, store=None, **shapes) is StoreMode.PLANES
    monkeypatch.setattr(plan_module, "free_bytes", lambda directory: 13 * planes)
    with pytest.raises(CacheSpaceError, match="--store recompute --fresh"):
        plan_store(tmp_path / "old", n_frames=10, existing=existing, store=None, **shapes)


def test_opening_without_a_store_mode_keeps_the_existing_caches(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a store mode"):
        InversionCache.open(tmp_path, n_frames=4, settings=SETTINGS, fingerprints=FINGERPRINTS, store=None,
                            on_warning=print)
    _cache(tmp_path, StoreMode.OFFSETS)
    with InversionCache.open(tmp_path, n_frames=4, settings=SETTINGS, fingerprints=FINGERPRINTS, store=None,
                             on_warning=print, readonly=True) as cache:
        assert cache.store is StoreMode.OFFSETS and cache.missing_frames() == []
