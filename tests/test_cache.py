"""Inversion cache: round trips, bit-identical resume, corruption, invalidation, locking, streaming.

The "encoder" here is a deterministic function of the frame index with tiny tri-planes [96, 8, 8];
the cache never looks at shapes beyond their rank, so this exercises the same code paths as 256x256.
Run as a script (`python tests/test_cache.py DIR`) it is the child process the SIGKILL test kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from nvsvideo.cache import (
    CacheLockedError,
    CacheMismatchError,
    FrameRecord,
    FrameStatus,
    InversionCache,
    StoreMode,
    file_fingerprint,
)
from nvsvideo.cache import store as store_module
from nvsvideo.errors import InputError

N_FRAMES = 22
CHUNK = 4
PLANES = (96, 8, 8)
SETTINGS = {"model": "v2", "samples": [48, 48], "seed": 0}
FINGERPRINTS = {"triplanenet": "sha256:" + "ab" * 32}


def fake_result(frame: int) -> FrameRecord:
    """What a deterministic encoder would return for `frame`; every fifth frame has no face."""
    if frame % 5 == 3:
        return FrameRecord(status=FrameStatus.NO_FACE)
    gen = torch.Generator().manual_seed(frame)
    planes0 = torch.randn(PLANES, generator=gen)
    offsets = 0.1 * torch.randn(PLANES, generator=gen)
    return FrameRecord(
        ws=torch.randn(14, 512, generator=gen),
        label=torch.randn(25, generator=gen),
        offsets=offsets,
        planes=planes0 + offsets,
        extras={"crop": torch.randn(2, 3, generator=gen)},
    )


def compute(cache: InversionCache, frame: int) -> None:
    """Invert one frame into the cache."""
    result = fake_result(frame)
    if result.status is FrameStatus.DONE:
        cache.put(frame, result)
    else:
        cache.mark(frame, result.status)


def invert(cache: InversionCache, after_put: Callable[[int], None] = lambda frame: None) -> None:
    """The resume loop a pipeline runs: only missing frames are computed."""
    for frame in cache.missing_frames():
        compute(cache, frame)
        after_put(frame)


def open_cache(directory: Path, warnings: list[str] | None = None, **overrides) -> InversionCache:
    options = {
        "n_frames": N_FRAMES,
        "settings": SETTINGS,
        "fingerprints": FINGERPRINTS,
        "store": StoreMode.PLANES,
        "chunk_size": CHUNK,
        "on_warning": (warnings if warnings is not None else []).append,
    }
    return InversionCache.open(directory, **{**options, **overrides})


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of the cache except the lock files, by relative path."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in {"lock", "manifest.lock"}
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Files of an uninterrupted run, the target every resumed run must reproduce byte for byte."""
    directory = tmp_path_factory.mktemp("reference")
    with open_cache(directory) as cache:
        invert(cache)
    return snapshot(directory)


def chunk_files(directory: Path) -> list[Path]:
    return sorted((directory / "chunks").glob("*.safetensors"))


@pytest.mark.parametrize("store", list(StoreMode))
def test_round_trip_per_store_mode(tmp_path: Path, store: StoreMode) -> None:
    with open_cache(tmp_path, store=store) as cache:
        invert(cache)
    with open_cache(tmp_path, store=store) as cache:
        assert cache.missing_frames() == []
        for frame in range(N_FRAMES):
            expected, got = fake_result(frame), cache.get(frame)
            assert got is not None and got.status is expected.status
            if expected.status is not FrameStatus.DONE:
                assert got.ws is None and got.planes is None and got.offsets is None
                continue
            assert torch.equal(got.ws, expected.ws) and got.ws.dtype == torch.float32
            assert torch.equal(got.label, expected.label)
            assert torch.equal(got.extras["crop"], expected.extras["crop"])
            kept = store.stored_field
            for name in ("planes", "offsets"):
                value = getattr(got, name)
                if name == kept:
                    assert value.dtype == torch.float16
                    assert torch.equal(value, getattr(expected, name).half())
                else:
                    assert value is None
    assert StoreMode.PLANES.recompute == ()
    assert StoreMode.OFFSETS.recompute == ("planes0",)
    assert StoreMode.RECOMPUTE.recompute == ("planes0", "offsets")


def test_float32_precision_is_lossless(tmp_path: Path) -> None:
    with open_cache(tmp_path, precision=torch.float32) as cache:
        cache.put(0, fake_result(0))
        assert torch.equal(cache.get(0).planes, fake_result(0).planes)


def test_put_requires_what_the_store_mode_keeps(tmp_path: Path) -> None:
    with open_cache(tmp_path, store=StoreMode.OFFSETS) as cache:
        record = fake_result(0)
        record.offsets = None
        with pytest.raises(ValueError, match="offsets"):
            cache.put(0, record)
        with pytest.raises(IndexError):
            cache.put(N_FRAMES, fake_result(0))
        with pytest.raises(ValueError, match="put"):
            cache.mark(1, FrameStatus.DONE)


def test_statuses_and_retrying_failed_frames(tmp_path: Path) -> None:
    with open_cache(tmp_path) as cache:
        cache.mark(0, FrameStatus.FAILED)
        cache.mark(1, FrameStatus.NO_FACE)
        cache.put(2, fake_result(2))
    with open_cache(tmp_path) as cache:
        assert [cache.status(f) for f in range(4)] == [
            FrameStatus.FAILED, FrameStatus.NO_FACE, FrameStatus.DONE, None
        ]
        assert cache.missing_frames()[:2] == [3, 4]
        assert cache.missing_frames(retry_failed=True)[:2] == [0, 3]
        # A retry rewrites the chunk with the new result and keeps its other frames.
        cache.put(0, fake_result(0))
    with open_cache(tmp_path) as cache:
        assert cache.status(0) is FrameStatus.DONE
        assert torch.equal(cache.get(2).ws, fake_result(2).ws)
        assert len(chunk_files(tmp_path)) == 1


def test_resume_after_an_exception_is_bit_identical(tmp_path: Path, reference: dict[str, bytes]) -> None:
    def crash(frame: int) -> None:
        if frame == 9:  # mid-chunk: chunk 8-11 is saved partial on the way out
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), open_cache(tmp_path) as cache:
        invert(cache, after_put=crash)
    with open_cache(tmp_path) as cache:
        assert cache.missing_frames()[0] == 10
        invert(cache)
    assert snapshot(tmp_path) == reference


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path, reference: dict[str, bytes]) -> None:
    child = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for line in child.stdout:  # the child prints each frame it finished
        if int(line) >= 13:
            child.send_signal(signal.SIGKILL)
            break
    assert child.wait(timeout=60) == -signal.SIGKILL
    warnings: list[str] = []
    with open_cache(tmp_path, warnings) as cache:  # the dead child's lock is free again
        assert 0 < len(cache.missing_frames()) < N_FRAMES
        invert(cache)
    assert warnings == []
    assert snapshot(tmp_path) == reference


def test_crash_between_chunk_and_manifest_write(
    tmp_path: Path, reference: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk renamed into place but not yet in the manifest is an orphan, not a corrupt chunk."""
    cache = open_cache(tmp_path)
    for frame in range(6):
        compute(cache, frame)
    cache.flush()  # chunk 4-7 is on disk with frames 4 and 5 only

    def dies(self: InversionCache) -> None:
        raise SystemExit("killed")  # stands in for the process dying at this instant

    monkeypatch.setattr(InversionCache, "_write_manifest", dies)
    with pytest.raises(SystemExit):
        compute(cache, 6)
        compute(cache, 7)  # the complete chunk 4-7 is renamed into place, the manifest is not updated
    assert len(list((tmp_path / "chunks").glob("000004-000007.*"))) == 2
    cache._lock.release()  # what the kernel does when the process dies
    monkeypatch.undo()
    warnings: list[str] = []
    with open_cache(tmp_path, warnings) as cache:
        invert(cache)
    assert warnings == []
    assert snapshot(tmp_path) == reference


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


@pytest.mark.parametrize("damage", [flip_byte, truncate, Path.unlink], ids=["flip", "truncate", "delete"])
def test_corrupt_chunk_is_detected_and_recomputed(
    tmp_path: Path, reference: dict[str, bytes], damage: Callable[[Path], None]
) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    damage(chunk_files(tmp_path)[2])  # frames 8-11
    warnings: list[str] = []
    with open_cache(tmp_path, warnings) as cache:
        assert cache.missing_frames() == [8, 9, 10, 11]
        assert cache.get(9) is None
        invert(cache)
    assert len(warnings) == 1 and "000008-000011" in warnings[0] and "recomputed" in warnings[0]
    assert snapshot(tmp_path) == reference


def test_corruption_found_on_read_when_not_verified_on_open(tmp_path: Path) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    flip_byte(chunk_files(tmp_path)[0])
    warnings: list[str] = []
    with open_cache(tmp_path, warnings, verify=False) as cache:
        assert cache.missing_frames() == []  # same size: not hashed yet
        assert cache.get(1) is None  # hashed before use: never read from the damaged file
        assert len(warnings) == 1 and "checksum" in warnings[0]
        assert cache.missing_frames() == [0, 1, 2, 3]
        assert cache.get(5) is not None


def test_unreadable_manifest(tmp_path: Path) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    (tmp_path / "manifest.json").write_text('{"format": "nvsvideo-inversion-cache", "vers')
    with pytest.raises(InputError, match="unreadable"):
        open_cache(tmp_path)
    warnings: list[str] = []
    with open_cache(tmp_path, warnings, reset=True) as cache:
        assert cache.missing_frames() == list(range(N_FRAMES))
    assert len(warnings) == 1 and chunk_files(tmp_path) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"settings": {**SETTINGS, "samples": [96, 96]}}, "settings.samples"),
        ({"fingerprints": {"triplanenet": "sha256:" + "cd" * 32}}, "fingerprints.triplanenet"),
        ({"store": StoreMode.OFFSETS}, "store"),
        ({"n_frames": N_FRAMES + 1}, "n_frames"),
        ({"precision": torch.float32}, "precision"),
        ({"chunk_size": CHUNK * 2}, "chunk_size"),
    ],
)
def test_a_change_of_settings_invalidates(tmp_path: Path, change: dict, named: str) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    with pytest.raises(CacheMismatchError, match=named):
        open_cache(tmp_path, **change)
    with open_cache(tmp_path) as cache:  # refusing left the cache intact
        assert cache.missing_frames() == []
    warnings: list[str] = []
    with open_cache(tmp_path, warnings, reset=True, **change) as cache:
        assert cache.missing_frames() == list(range(cache.n_frames))
    assert len(warnings) == 1 and named in warnings[0]
    assert chunk_files(tmp_path) == []


def test_chunk_size_defaults_to_the_existing_caches(tmp_path: Path) -> None:
    with open_cache(tmp_path, chunk_size=3):
        pass
    with open_cache(tmp_path, chunk_size=None) as cache:
        assert cache.chunk_size == 3


def test_lock(tmp_path: Path) -> None:
    with open_cache(tmp_path):
        with pytest.raises(CacheLockedError, match=f"pid {os.getpid()}"):
            open_cache(tmp_path)
    # A lock file left by a dead process is not flock'ed any more: it is taken over.
    (tmp_path / "lock").write_text("pid 999999 on elsewhere\n")
    with open_cache(tmp_path):
        pass
    # The lock is released when opening fails after taking it.
    (tmp_path / "manifest.json").write_text("not json")
    with pytest.raises(InputError):
        open_cache(tmp_path)
    with open_cache(tmp_path, reset=True):
        pass


def test_size_report(tmp_path: Path) -> None:
    sizes = {}
    for store in StoreMode:
        directory = tmp_path / store.value
        with open_cache(directory, store=store) as cache:
            invert(cache)
            summary = cache.summary()
            on_disk = sum(len(data) for data in snapshot(directory).values())
            assert cache.size_bytes() == summary["bytes"] == on_disk
            done = sum(fake_result(f).status is FrameStatus.DONE for f in range(N_FRAMES))
            assert summary["done"] == done and summary["no_face"] == N_FRAMES - done
            assert summary["missing"] == 0 and summary["chunks"] == 6
            assert summary["bytes_per_frame"] == pytest.approx(on_disk / done)
            assert summary["recompute"] == list(store.recompute)
            sizes[store] = on_disk
    plane_bytes = 2 * 96 * 8 * 8 * sum(fake_result(f).status is FrameStatus.DONE for f in range(N_FRAMES))
    assert sizes[StoreMode.PLANES] - sizes[StoreMode.RECOMPUTE] >= plane_bytes
    assert sizes[StoreMode.PLANES] - sizes[StoreMode.OFFSETS] < 100  # same tensor sizes, other names


def test_streaming_reads_one_chunk_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    opened: list[str] = []
    live: list[int] = [0]
    real_open = store_module.safetensors.safe_open

    class CountingHandle:
        def __init__(self, path: Path, framework: str) -> None:
            opened.append(Path(path).name)
            self._inner = real_open(path, framework=framework)

        def __enter__(self):
            live[0] += 1
            assert live[0] == 1, "two chunk files open at once"
            return self._inner.__enter__()

        def __exit__(self, *exc) -> None:
            live[0] -= 1
            self._inner.__exit__(*exc)

    monkeypatch.setattr(store_module.safetensors, "safe_open", CountingHandle)
    with open_cache(tmp_path, verify=False) as cache:
        frames = cache.iter_frames()
        first, record = next(frames)
        assert first == 0 and record is not None
        assert len(opened) == 1  # lazily: nothing beyond the first chunk was touched
        rest = [frame for frame, _ in frames]
    assert rest == list(range(1, N_FRAMES))
    assert len(opened) == 6 and live[0] == 0


def test_file_fingerprint_is_memoised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, memo = tmp_path / "model.pt", tmp_path / "memo" / "fingerprints.json"
    model.write_bytes(b"weights" * 1000)
    # Trust a file changed just now (see test_startup_io for the guard), and date each write explicitly:
    # two writes within one timestamp tick would share an mtime.
    monkeypatch.setattr("nvsvideo.cache.fingerprint.RACY_NS", 0)
    os.utime(model, ns=(10**18, 10**18))
    first = file_fingerprint(model, memo_file=memo)
    assert first.startswith("sha256:") and first == file_fingerprint(model)
    assert json.loads(memo.read_text())[str(model.resolve())]["sha256"] == first.removeprefix("sha256:")
    hashed: list[Path] = []
    real_hash = store_module.file_sha256
    monkeypatch.setattr("nvsvideo.cache.fingerprint.file_sha256", lambda p: hashed.append(p) or real_hash(p))
    assert file_fingerprint(model, memo_file=memo) == first and hashed == []
    model.write_bytes(b"tuned!!" * 1000)  # same size, new content and mtime
    os.utime(model, ns=(10**18 + 1, 10**18 + 1))
    assert file_fingerprint(model, memo_file=memo) != first and len(hashed) == 1


def _child(directory: Path) -> None:
    """Invert into `directory`, announcing each finished frame, slowly enough to be killed mid-run."""
    import time

    with open_cache(directory) as cache:

        def announce(frame: int) -> None:
            print(frame, flush=True)
            time.sleep(0.02)

        invert(cache, after_put=announce)


if __name__ == "__main__":
    _child(Path(sys.argv[1]))


def test_readers_share_the_cache_and_keep_writers_out(tmp_path: Path) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    before = snapshot(tmp_path)
    with open_cache(tmp_path, readonly=True) as first, open_cache(tmp_path, readonly=True) as second:
        assert first.missing_frames() == second.missing_frames() == []
        assert torch.equal(first.get(2).ws, fake_result(2).ws)
        with pytest.raises(CacheLockedError, match="another process reading it"):
            open_cache(tmp_path)
        with pytest.raises(PermissionError, match="read-only"):
            first.put(0, fake_result(0))
    assert snapshot(tmp_path) == before
    # ... and a writer keeps readers out, naming itself.
    with open_cache(tmp_path):
        with pytest.raises(CacheLockedError, match=f"pid {os.getpid()}"):
            open_cache(tmp_path, readonly=True)


def test_a_reader_needs_an_existing_cache_made_the_same_way(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="there is no inversion cache"):
        open_cache(tmp_path, readonly=True)
    assert not tmp_path.joinpath("manifest.json").exists()
    with open_cache(tmp_path) as cache:
        invert(cache)
    with pytest.raises(CacheMismatchError):
        open_cache(tmp_path, readonly=True, settings={**SETTINGS, "seed": 99})


def test_a_reader_leaves_a_damaged_chunk_for_the_next_writer(tmp_path: Path) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    damaged = chunk_files(tmp_path)[0]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    before = snapshot(tmp_path)
    warnings: list[str] = []
    with open_cache(tmp_path, warnings, readonly=True, verify=False) as cache:
        assert cache.get(0) is None and len(warnings) == 1
        assert 0 in cache.missing_frames()
    assert snapshot(tmp_path) == before
    with open_cache(tmp_path, warnings) as cache:
        assert 0 in cache.missing_frames()
    assert damaged not in chunk_files(tmp_path)


def test_range_writers_fill_one_cache_together_as_one_writer_would(
    tmp_path: Path, reference: dict[str, bytes]
) -> None:
    with open_cache(tmp_path):  # the video's preparation creates the cache
        pass
    # Three workers, interleaved: each writes only its chunks and merges them into the manifest on disk.
    ranges = [range(0, 8), range(8, 20), range(20, N_FRAMES)]
    writers = [open_cache(tmp_path, frames=r) for r in ranges]
    for step in range(12):
        for writer in writers:
            if step < len(writer.frames):
                compute(writer, writer.frames[step])
    with open_cache(tmp_path, readonly=True) as reader:  # readers share the lock with range writers
        assert reader.missing_frames() == []  # every chunk is written as soon as it is complete
    for writer in writers:
        assert writer.missing_frames() == []
        writer.close()
    assert snapshot(tmp_path) == reference


def test_a_range_writer_keeps_to_its_chunks(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="prepare the video first"):
        open_cache(tmp_path, frames=range(0, 4))
    with open_cache(tmp_path):
        pass
    with pytest.raises(ValueError, match="chunks of 4 frames"):
        open_cache(tmp_path, frames=range(2, 8))
    with pytest.raises(ValueError, match="chunks of 4 frames"):
        open_cache(tmp_path, frames=range(0, 6))
    with open_cache(tmp_path, frames=range(4, 8)) as writer:
        assert writer.missing_frames() == [4, 5, 6, 7]
        with pytest.raises(IndexError, match="outside this writer's range 4-7"):
            writer.put(8, fake_result(8))
        with pytest.raises(CacheLockedError):  # a whole-video writer waits for the range writers
            open_cache(tmp_path)
    with open_cache(tmp_path):
        with pytest.raises(CacheLockedError):
            open_cache(tmp_path, frames=range(0, 4))


def test_a_range_writer_drops_only_its_own_damaged_chunks(tmp_path: Path) -> None:
    with open_cache(tmp_path) as cache:
        invert(cache)
    first, second = chunk_files(tmp_path)[:2]  # frames 0-3 and 4-7
    for damaged in (first, second):
        damaged.write_bytes(damaged.read_bytes()[:-1] + b"\x00")
    first_bytes = first.read_bytes()
    warnings: list[str] = []
    with open_cache(tmp_path, warnings, frames=range(4, 8)) as writer:
        assert writer.missing_frames() == [4, 5, 6, 7] and len(warnings) == 1
        invert(writer)
    assert first.read_bytes() == first_bytes  # not this writer's chunk: left for its owner
    with open_cache(tmp_path, warnings) as cache:
        assert cache.missing_frames() == [0, 1, 2, 3]
