"""Resumable, checksummed inversion cache: per-frame encoder results stored in chunk files."""

from nvsvideo.cache.fingerprint import content_key, file_fingerprint, file_sha256
from nvsvideo.cache.lock import CacheLockedError
from nvsvideo.cache.records import FrameRecord, FrameStatus, StoreMode, parse_store
from nvsvideo.cache.space import CacheSpaceError
from nvsvideo.cache.store import DEFAULT_CHUNK_SIZE, CacheMismatchError, InversionCache, peek_manifest

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "CacheLockedError",
    "CacheMismatchError",
    "CacheSpaceError",
    "FrameRecord",
    "FrameStatus",
    "InversionCache",
    "StoreMode",
    "content_key",
    "file_fingerprint",
    "file_sha256",
    "parse_store",
    "peek_manifest",
]
