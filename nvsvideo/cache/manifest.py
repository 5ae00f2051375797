"""The cache manifest: what produced the cache (its identity) and which chunk holds which frames.

`manifest.json` is the single source of truth. A chunk file on disk that the manifest does not list
is an orphan of an interrupted write and is deleted; a listed chunk is trusted only if its size and
sha256 match the entry. The JSON is written deterministically (fixed key order, no timestamps), so an
interrupted-then-resumed run leaves byte-identical files to an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from nvsvideo.cache.records import FrameStatus, StoreMode

FORMAT = "nvsvideo-inversion-cache"
FORMAT_VERSION = 1


def chunk_of(frame: int, chunk_size: int) -> int:
    """Index of the chunk holding `frame`: boundaries depend on frame indices only, never on timing."""
    return frame // chunk_size


def chunk_frames(chunk: int, chunk_size: int, n_frames: int) -> range:
    """Frame indices a chunk holds when complete (the last chunk may be shorter)."""
    return range(chunk * chunk_size, min((chunk + 1) * chunk_size, n_frames))


def normalize_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON round trip with sorted keys, so tuples equal lists and key order never matters.

    Raises:
        TypeError: the mapping holds values JSON cannot represent.
    """
    return json.loads(json.dumps(value, sort_keys=True))


class Difference(NamedTuple):
    """One field where a cache's identity differs from what a run asks for."""

    key: str
    """Dotted name, e.g. `settings.seed` or `fingerprints.model0`."""
    cached: Any
    """The cache's value (None when it has none)."""
    wanted: Any
    """The run's value (None when it has none)."""

    def __str__(self) -> str:
        return f"{self.key}: {_shown(self.cached)} in the cache, {_shown(self.wanted)} now"


def _shown(value: Any) -> str:
    return "(unset)" if value is None else str(value)


@dataclass(frozen=True)
class CacheIdentity:
    """Everything that changes the cached results or their layout: caches match only if all equal."""

    n_frames: int
    """Number of frames of the video."""
    chunk_size: int
    """Frames per chunk file."""
    store: StoreMode
    """What is stored per frame."""
    precision: str
    """Storage dtype of planes/offsets (`"float16"` or `"float32"`)."""
    settings: dict[str, Any]
    """Caller's result-affecting settings (model version, samples, seeds, ...), JSON-normalised."""
    fingerprints: dict[str, str]
    """Content fingerprints of the model files, by role (e.g. `"triplanenet"`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "n_frames": self.n_frames,
            "chunk_size": self.chunk_size,
            "store": self.store.value,
            "precision": self.precision,
            "settings": self.settings,
            "fingerprints": self.fingerprints,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CacheIdentity:
        return cls(
            n_frames=int(data["n_frames"]),
            chunk_size=int(data["chunk_size"]),
            store=StoreMode(data["store"]),
            precision=str(data["precision"]),
            settings=normalize_json(data["settings"]),
            fingerprints={str(k): str(v) for k, v in data["fingerprints"].items()},
        )

    def differences(self, other: CacheIdentity) -> list[Difference]:
        """Every field where `other` (what a run asks for) differs from self (the cache), by dotted key."""
        mine, theirs = _flatten(self.to_json()), _flatten(other.to_json())
        return [
            Difference(key, mine.get(key), theirs.get(key))
            for key in sorted(mine.keys() | theirs.keys())
            if mine.get(key) != theirs.get(key)
        ]


@dataclass
class ChunkEntry:
    """One chunk file and the frames it holds."""

    file: str
    """File name inside `chunks/`."""
    sha256: str
    """Hex sha256 of the file."""
    size: int
    """File size in bytes: a cheap truncation check that needs no hashing."""
    frames: dict[int, FrameStatus] = field(default_factory=dict)
    """Status of every frame stored in the file (a partial chunk holds fewer than chunk_size)."""


@dataclass
class Manifest:
    """Identity plus the chunk index of a cache folder."""

    identity: CacheIdentity
    chunks: dict[int, ChunkEntry] = field(default_factory=dict)
    """Chunk entries by chunk index."""

    def status(self, frame: int) -> FrameStatus | None:
        entry = self.chunks.get(chunk_of(frame, self.identity.chunk_size))
        return None if entry is None else entry.frames.get(frame)

    def to_bytes(self) -> bytes:
        chunks = [
            {
                "chunk": index,
                "file": entry.file,
                "sha256": entry.sha256,
                "bytes": entry.size,
                "frames": {str(f): entry.frames[f].value for f in sorted(entry.frames)},
            }
            for index, entry in sorted(self.chunks.items())
        ]
        doc = {"format": FORMAT, "version": FORMAT_VERSION, "identity": self.identity.to_json(), "chunks": chunks}
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest.

        Raises:
            ValueError: not JSON, not an inversion cache manifest, another format version, or malformed.
        """
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ValueError("not an nvsvideo inversion cache manifest")
            if doc.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {doc.get('version')}, this nvsvideo reads {FORMAT_VERSION}")
            identity = CacheIdentity.from_json(doc["identity"])
            chunks = {
                int(item["chunk"]): ChunkEntry(
                    file=str(item["file"]),
                    sha256=str(item["sha256"]),
                    size=int(item["bytes"]),
                    frames={int(f): FrameStatus(s) for f, s in item["frames"].items()},
                )
                for item in doc["chunks"]
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed manifest ({type(exc).__name__}: {exc})") from exc
        return cls(identity=identity, chunks=chunks)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, so a difference message names the exact setting."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out
