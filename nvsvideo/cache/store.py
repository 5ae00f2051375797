"""The resumable inversion cache: per-frame encoder results in checksummed chunk files.

Layout of a cache folder (e.g. `VIDEO.nvs/inversion/`)::

    manifest.json                        identity (settings, model fingerprints, store mode) + chunk index
    lock                                 flock'ed while a process has the cache open
    manifest.lock                        flock'ed by range writers while they update the manifest
    chunks/000000-000031.<sha16>.safetensors

Frame `f` belongs to chunk `f // chunk_size`, whatever order results arrive in, so the files of a run
that was interrupted and resumed are byte-identical to those of an uninterrupted run. Results are
buffered in memory per chunk; a chunk is written (temp file, fsync, rename) as soon as all its frames
are in, then the manifest is replaced the same way. Closing the cache (including on Ctrl-C or an
exception inside `with`) also writes partial chunks; they are merged and rewritten when the missing
frames come in. A SIGKILL loses only the buffered, unwritten frames. Chunk file names carry a prefix
of their sha256, so rewriting a chunk never overwrites the file the manifest still points to: after
a crash the manifest refers either to the old file or to the new one, both intact.

Three ways to open a cache: one *writer* for the whole video (an exclusive lock); *readers* (a shared
lock, nothing written); and *range writers* (a shared lock too), each filling its own range of frames,
for a video split across workers. A range starts and ends on chunk boundaries, so two range writers
never write the same chunk file, and each one merges only its own chunks into the manifest on disk
under a short lock on `manifest.lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import safetensors
import safetensors.torch
import torch

from nvsvideo.cache.durable import fsync_dir, write_durably
from nvsvideo.cache.fingerprint import file_sha256
from nvsvideo.cache.lock import DirectoryLock, critical_section
from nvsvideo.cache.manifest import (
    CacheIdentity,
    ChunkEntry,
    Manifest,
    chunk_frames,
    chunk_of,
    normalize_json,
)
from nvsvideo.cache.records import FrameRecord, FrameStatus, StoreMode, frame_prefix, pack_frame, unpack_frame
from nvsvideo.errors import InputError

DEFAULT_CHUNK_SIZE = 32
_PRECISIONS = {"float16": torch.float16, "float32": torch.float32}
# safetensors writes a metadata dict in hash order, so a single key keeps chunk files reproducible.
_CHUNK_METADATA = {"nvsvideo": '{"format": "nvsvideo-inversion-chunk", "version": 1}'}

Warn = Callable[[str], None]
_Pending = dict[int, tuple[FrameStatus, dict[str, torch.Tensor]]]


class CacheMismatchError(InputError):
    """The cache folder holds results made with other settings or model files."""


class InversionCache:
    """Chunked, checksummed, resumable store of per-frame inversion results.

    Open it with `InversionCache.open(...)` in a `with` block; it holds the folder's lock until closed.
    Opened `readonly`, it shares the lock with other readers and never changes a file; opened with
    `frames`, it shares it with readers and other range writers and writes only those frames.
    Memory: up to one buffered chunk per chunk being filled (chunk_size frames of the stored tensors);
    reading streams one frame at a time.
    """

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        lock: DirectoryLock,
        on_warning: Warn,
        *,
        readonly: bool = False,
        frames: range | None = None,
    ) -> None:
        """Use `InversionCache.open`; this constructor trusts its arguments."""
        self.directory = directory
        self.readonly = readonly
        self.frames = frames
        """The frames a range writer may write; None for a whole-video writer or a reader."""
        self._manifest = manifest
        self._lock = lock
        self._warn = on_warning
        self._pending: dict[int, _Pending] = {}
        self._verified: set[str] = set()  # chunk files whose sha256 was checked by this process

    # ------------------------------------------------------------------ opening and closing

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        n_frames: int,
        settings: Mapping[str, Any],
        fingerprints: Mapping[str, str],
        store: StoreMode | None,
        on_warning: Warn,
        chunk_size: int | None = None,
        precision: torch.dtype = torch.float16,
        reset: bool = False,
        verify: bool = True,
        readonly: bool = False,
        frames: range | None = None,
    ) -> InversionCache:
        """Open (or create) the cache in `directory` and take its lock.

        Args:
            directory: the cache folder; created if needed. The cache only touches `manifest.json`,
                `lock` and `chunks/` inside it.
            n_frames: number of frames of the video.
            settings: JSON-serialisable settings that affect the results (model version, samples,
                seeds, ...); any change makes the existing cache unusable.
            fingerprints: content fingerprints of the model files by role (see `file_fingerprint`).
            store: what to store per frame; None keeps the existing cache's (a new cache needs one).
            on_warning: receives one sentence per problem found (corrupt chunk, replaced cache).
            chunk_size: frames per chunk file; None keeps the existing cache's, or 32 for a new one.
            precision: storage dtype of planes/offsets (float16 or float32); ws and labels are float32.
            reset: replace a cache made with other settings, or with an unreadable manifest, instead of
                raising (with a warning).
            verify: hash every chunk now, so `missing_frames` already excludes corrupt chunks;
                otherwise only sizes are checked now and hashes when a chunk is first read.
            readonly: read an existing cache alongside other readers (a shared lock); nothing is
                written, and a damaged chunk is only left out of what this process reads.
            frames: write only these frames of an existing cache, alongside readers and the writers
                of other ranges (a shared lock). The range must start on a chunk boundary and end on
                one or at the last frame; only its chunks are checked, dropped or written.

        Raises:
            CacheLockedError: another live process has the cache open.
            CacheMismatchError: the cache was made with other settings, models, store mode, precision,
                frame count or chunk size, and `reset` is False.
            InputError: the manifest is unreadable and `reset` is False, or `readonly` and there is no cache.
        """
        if n_frames < 1:
            raise ValueError(f"n_frames must be positive, got {n_frames}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        precision_name = next((name for name, dt in _PRECISIONS.items() if dt == precision), None)
        if precision_name is None:
            raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision}")
        shared = readonly or frames is not None
        if shared and reset:
            raise ValueError("only a whole-video writer can reset a cache")
        if readonly and frames is not None:
            raise ValueError("a cache opened read-only has no frames to write")
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if shared and not manifest_path.is_file():
            raise InputError(f"there is no inversion cache in {directory}; prepare the video first")
        directory.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock(directory)
        lock.acquire(shared=shared)
        try:
            old = _read_manifest(manifest_path, reset=reset, on_warning=on_warning)
            if store is None and old is None:
                raise ValueError("a new inversion cache needs a store mode")
            identity = CacheIdentity(
                n_frames=n_frames,
                chunk_size=chunk_size or (old.identity.chunk_size if old else DEFAULT_CHUNK_SIZE),
                store=StoreMode(store) if store is not None else old.identity.store,
                precision=precision_name,
                settings=normalize_json(settings),
                fingerprints={str(k): str(v) for k, v in fingerprints.items()},
            )
            manifest = _reconcile(directory, old, identity, reset=reset, on_warning=on_warning)
            if frames is not None:
                _check_range(frames, identity.chunk_size, n_frames)
            cache = cls(directory, manifest, lock, on_warning, readonly=readonly, frames=frames)
            if manifest is not old:
                cache._write_manifest()
            cache._check_chunks(verify=verify)
        except BaseException:
            lock.release()
            raise
        return cache

    def close(self) -> None:
        """Write buffered frames (partial chunks included) and release the lock; idempotent."""
        try:
            if not self.readonly:
                self.flush()
        finally:
            self._lock.release()

    def __enter__(self) -> InversionCache:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Also on Ctrl-C: the frames already inverted are valid results worth keeping.
        self.close()

    # ------------------------------------------------------------------ properties

    @property
    def n_frames(self) -> int:
        return self._manifest.identity.n_frames

    @property
    def chunk_size(self) -> int:
        return self._manifest.identity.chunk_size

    @property
    def store(self) -> StoreMode:
        return self._manifest.identity.store

    @property
    def precision(self) -> torch.dtype:
        return _PRECISIONS[self._manifest.identity.precision]

    @property
    def chunks_dir(self) -> Path:
        return self.directory / "chunks"

    # ------------------------------------------------------------------ writing

    def put(self, frame: int, record: FrameRecord) -> None:
        """Store one frame's result (copied), replacing any earlier one; writes its chunk once complete.

        Only what the store mode keeps is stored: planes in `planes` mode, offsets in `offsets` mode,
        neither in `recompute` mode.

        Raises:
            IndexError: frame outside [0, n_frames).
            ValueError: a DONE record lacks what the store mode needs.
        """
        self._check_index(frame)
        if self.readonly:
            raise PermissionError(f"the inversion cache {self.directory} was opened read-only")
        if self.frames is not None and frame not in self.frames:
            raise IndexError(f"frame {frame} is outside this writer's range {self.frames.start}-{self.frames.stop - 1}")
        tensors = pack_frame(frame, record, self.store, self.precision)
        chunk = chunk_of(frame, self.chunk_size)
        if chunk not in self._pending:
            self._pending[chunk] = self._load_chunk(chunk)
        self._pending[chunk][frame] = (record.status, tensors)
        if self._pending[chunk].keys() >= set(chunk_frames(chunk, self.chunk_size, self.n_frames)):
            self._write_chunk(chunk)

    def mark(self, frame: int, status: FrameStatus) -> None:
        """Record a frame without result (no face, or a failure) so that resuming skips it."""
        if status is FrameStatus.DONE:
            raise ValueError("a DONE frame needs its result: use put()")
        self.put(frame, FrameRecord(status=status))

    def flush(self) -> None:
        """Write every buffered chunk now, complete or not."""
        for chunk in sorted(self._pending):
            self._write_chunk(chunk)

    # ------------------------------------------------------------------ reading

    def status(self, frame: int) -> FrameStatus | None:
        """Status of a frame, or None if it has no result yet."""
        self._check_index(frame)
        pending = self._pending.get(chunk_of(frame, self.chunk_size), {})
        if frame in pending:
            return pending[frame][0]
        return self._manifest.status(frame)

    def missing_frames(self, *, retry_failed: bool = False) -> list[int]:
        """Frames still to invert (a range writer: of its range): never done, or in a chunk found corrupt;
        FAILED ones on request."""
        todo = []
        for frame in self.frames if self.frames is not None else range(self.n_frames):
            status = self.status(frame)
            if status is None or (retry_failed and status is FrameStatus.FAILED):
                todo.append(frame)
        return todo

    def get(self, frame: int) -> FrameRecord | None:
        """One frame's record, or None if it has none (a corrupt chunk is reported and dropped)."""
        with contextlib.closing(self.iter_frames([frame])) as records:
            return next(records)[1]

    def iter_frames(self, frames: Iterable[int] | None = None) -> Iterator[tuple[int, FrameRecord | None]]:
        """Yield `(frame, record or None)` for `frames` (default: all), reading lazily.

        One chunk file is open at a time and one frame's tensors are in memory at a time, so memory
        does not grow with the video. Each chunk's sha256 is checked before its first use; a chunk that
        fails is reported, dropped (its frames become missing) and yields None for its frames.
        """
        frames = range(self.n_frames) if frames is None else frames
        for chunk, run in itertools.groupby(frames, key=lambda frame: chunk_of(frame, self.chunk_size)):
            yield from self._read_run(chunk, list(run))

    # ------------------------------------------------------------------ reporting

    def size_bytes(self) -> int:
        """Bytes on disk of the manifest and the chunk files (buffered frames not included)."""
        manifest = self.directory / "manifest.json"
        chunks = sum(entry.size for entry in self._manifest.chunks.values())
        return chunks + (manifest.stat().st_size if manifest.exists() else 0)

    def summary(self) -> dict[str, Any]:
        """Counts per status, size on disk and bytes per inverted frame, for logs and `--json`."""
        counts = {status: 0 for status in FrameStatus}
        for frame in range(self.n_frames):
            status = self.status(frame)
            if status is not None:
                counts[status] += 1
        size = self.size_bytes()
        done = counts[FrameStatus.DONE]
        return {
            "directory": str(self.directory),
            "store": self.store.value,
            "recompute": list(self.store.recompute),
            "precision": self._manifest.identity.precision,
            "n_frames": self.n_frames,
            "chunk_size": self.chunk_size,
            "chunks": len(self._manifest.chunks),
            **{status.value: count for status, count in counts.items()},
            "missing": self.n_frames - sum(counts.values()),
            "bytes": size,
            "bytes_per_frame": size / done if done else 0.0,
        }

    # ------------------------------------------------------------------ internals

    def _check_index(self, frame: int) -> None:
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} outside [0, {self.n_frames})")

    def _owns(self, chunk: int) -> bool:
        """Whether this process may write `chunk` (a whole-video writer: every chunk)."""
        if self.readonly:
            return False
        return self.frames is None or chunk_of(self.frames.start, self.chunk_size) <= chunk <= chunk_of(
            self.frames.stop - 1, self.chunk_size
        )

    def _check_chunks(self, *, verify: bool) -> None:
        """Drop entries whose file is missing, truncated or (with `verify`) corrupt; delete orphans.

        A range writer checks only its own chunks, and only a whole-video writer deletes orphans: while
        range writers run, a chunk file can exist a moment before the manifest names it.
        """
        for chunk, entry in sorted(self._manifest.chunks.items()):
            if self.frames is not None and not self._owns(chunk):
                continue
            path = self.chunks_dir / entry.file
            if not path.is_file():
                self._drop(chunk, "is missing")
            elif path.stat().st_size != entry.size:
                self._drop(chunk, f"has {path.stat().st_size} bytes instead of {entry.size}")
            elif verify:
                self._verified_path(chunk)
        if self.readonly or self.frames is not None:
            return
        referenced = {entry.file for entry in self._manifest.chunks.values()}
        # Leftovers of interrupted writes (temp files, chunks replaced before the manifest caught up).
        orphans = [p for p in self.chunks_dir.glob("*") if p.name not in referenced]
        orphans += list(self.directory.glob(".manifest.*.part.json"))
        for orphan in orphans:
            orphan.unlink(missing_ok=True)

    def _verified_path(self, chunk: int) -> Path | None:
        """Path of a chunk file whose checksum matches its entry, or None after dropping it."""
        entry = self._manifest.chunks.get(chunk)
        if entry is None:
            return None
        path = self.chunks_dir / entry.file
        if entry.file not in self._verified:
            try:
                digest = file_sha256(path)
            except OSError as exc:
                self._drop(chunk, f"is unreadable ({exc.strerror or exc})")
                return None
            if digest != entry.sha256:
                self._drop(chunk, "does not match its checksum")
                return None
            self._verified.add(entry.file)
        return path

    def _read_run(self, chunk: int, frames: list[int]) -> Iterator[tuple[int, FrameRecord | None]]:
        """Records of `frames` (all in `chunk`): buffered ones from memory, others from the checked file."""
        pending = self._pending.get(chunk, {})
        on_disk = [f for f in frames if f not in pending and self._manifest.status(f) is not None]
        path = self._verified_path(chunk) if on_disk else None
        with contextlib.ExitStack() as stack:
            handle = stack.enter_context(safetensors.safe_open(path, framework="pt")) if path else None
            keys = list(handle.keys()) if handle is not None else []
            for frame in frames:
                status = self.status(frame)  # None also once the chunk was dropped as corrupt
                if status is None:
                    yield frame, None
                elif frame in pending:
                    yield frame, unpack_frame(frame, status, pending[frame][1])
                else:
                    assert handle is not None
                    prefix = frame_prefix(frame)
                    tensors = {key: handle.get_tensor(key) for key in keys if key.startswith(prefix)}
                    yield frame, unpack_frame(frame, status, tensors)

    def _load_chunk(self, chunk: int) -> _Pending:
        """All frames a chunk already holds on disk, so that adding frames rewrites it whole."""
        path = self._verified_path(chunk)
        if path is None:
            return {}
        tensors = safetensors.torch.load_file(path)
        entry = self._manifest.chunks[chunk]
        out: _Pending = {}
        for frame, status in entry.frames.items():
            prefix = frame_prefix(frame)
            out[frame] = (status, {k: v for k, v in tensors.items() if k.startswith(prefix)})
        return out

    def _write_chunk(self, chunk: int) -> None:
        frames = self._pending[chunk]
        tensors = {key: t for frame in sorted(frames) for key, t in frames[frame][1].items()}
        data = safetensors.torch.save(tensors, metadata=_CHUNK_METADATA)
        digest = hashlib.sha256(data).hexdigest()
        span = chunk_frames(chunk, self.chunk_size, self.n_frames)
        name = f"{span.start:06d}-{span.stop - 1:06d}.{digest[:16]}.safetensors"
        self.chunks_dir.mkdir(exist_ok=True)
        write_durably(self.chunks_dir / name, data)
        previous = self._manifest.chunks.get(chunk)
        self._manifest.chunks[chunk] = ChunkEntry(
            file=name,
            sha256=digest,
            size=len(data),
            frames={frame: frames[frame][0] for frame in sorted(frames)},
        )
        self._verified.add(name)
        self._write_manifest()
        del self._pending[chunk]
        if previous is not None and previous.file != name:
            (self.chunks_dir / previous.file).unlink(missing_ok=True)
            fsync_dir(self.chunks_dir)

    def _drop(self, chunk: int, reason: str) -> None:
        """Forget a damaged chunk: warn, remove its entry and file, so its frames are recomputed.

        A chunk this process may not write is only forgotten by it: the writer that owns it drops it.
        """
        entry = self._manifest.chunks.pop(chunk)
        owned = self._owns(chunk)
        # A reader cannot repair the cache: its caller recomputes the frames for itself only.
        repair = "will be recomputed" if owned else "are left out; `nvsvideo invert` repairs the cache"
        self._warn(f"inversion cache chunk {self.chunks_dir / entry.file} {reason}; its {len(entry.frames)} frames {repair}")
        if not owned:
            return
        self._write_manifest()
        (self.chunks_dir / entry.file).unlink(missing_ok=True)

    def _write_manifest(self) -> None:
        path = self.directory / "manifest.json"
        if self.frames is None:
            write_durably(path, self._manifest.to_bytes())
            return
        # A range writer: the other ranges' entries on disk are newer than ours; replace only our chunks.
        with critical_section(self.directory / "manifest.lock"):
            current = Manifest.from_bytes(path.read_bytes())
            if current.identity.differences(self._manifest.identity):
                raise CacheMismatchError(f"the inversion cache {self.directory} was replaced while in use")
            for chunk in range(self.n_chunks):
                if not self._owns(chunk):
                    continue
                if chunk in self._manifest.chunks:
                    current.chunks[chunk] = self._manifest.chunks[chunk]
                else:
                    current.chunks.pop(chunk, None)
            write_durably(path, current.to_bytes())

    @property
    def n_chunks(self) -> int:
        return chunk_of(self.n_frames - 1, self.chunk_size) + 1


def _check_range(frames: range, chunk_size: int, n_frames: int) -> None:
    """A range writer's frames must cover whole chunks, so no chunk file has two writers."""
    if frames.step != 1 or not 0 <= frames.start < frames.stop <= n_frames:
        raise ValueError(f"invalid frame range {frames} for {n_frames} frames")
    if frames.start % chunk_size or (frames.stop % chunk_size and frames.stop != n_frames):
        raise ValueError(
            f"frames {frames.start}-{frames.stop - 1} do not start and end on chunks of {chunk_size} frames"
        )


def peek_manifest(directory: str | Path) -> Manifest | None:
    """The manifest of the cache in `directory` without taking its lock (it is only ever replaced whole),
    to check a run against it before any work; None when there is none or it is unreadable (opening
    the cache then reports why)."""
    try:
        return Manifest.from_bytes((Path(directory) / "manifest.json").read_bytes())
    except (OSError, ValueError):
        return None


def _read_manifest(path: Path, *, reset: bool, on_warning: Warn) -> Manifest | None:
    """The existing manifest, None for a new cache (or a replaced unreadable one)."""
    if not path.exists():
        return None
    try:
        return Manifest.from_bytes(path.read_bytes())
    except (OSError, ValueError) as exc:
        if not reset:
            raise InputError(
                f"the inversion cache manifest {path} is unreadable ({exc}); "
                "start a fresh cache (--fresh) or delete that folder"
            ) from exc
        on_warning(f"the inversion cache manifest {path} is unreadable ({exc}); starting a new cache")
        return None


def _reconcile(
    directory: Path, old: Manifest | None, identity: CacheIdentity, *, reset: bool, on_warning: Warn
) -> Manifest:
    """The old manifest if it was made the same way, else a new empty one (only with `reset`)."""
    if old is None:
        return Manifest(identity=identity)
    changes = old.identity.differences(identity)
    if not changes:
        return old
    shown = "; ".join(str(change) for change in changes[:4]) + ("; ..." if len(changes) > 4 else "")
    if not reset:
        raise CacheMismatchError(
            f"the inversion cache {directory} was made differently ({shown}); "
            "start a fresh cache (--fresh) or choose another cache folder"
        )
    on_warning(f"replacing the inversion cache {directory}, made differently ({shown})")
    return Manifest(identity=identity)
