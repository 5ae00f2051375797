"""Resumable, checksummed inversion cache: per-frame encoder results stored in chunk files."""

from nvsvideo.cache.fingerprint import file_fingerprint, file_sha256
from nvsvideo.cache.lock import CacheLockedError
from nvsvideo.cache.records import FrameRecord, FrameStatus, StoreMode
from nvsvideo.cache.store import DEFAULT_CHUNK_SIZE, CacheMismatchError, InversionCache

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "CacheLockedError",
    "CacheMismatchError",
    "FrameRecord",
    "FrameStatus",
    "InversionCache",
    "StoreMode",
    "file_fingerprint",
    "file_sha256",
]
