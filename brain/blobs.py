"""Blob keys, and the in-memory BlobStore (tests, model-free runs).

A blob's key is the SHA-256 of its bytes in hex: the same bytes always get the same key,
and a key is never a path, so nothing a person sends can name a file outside the store.
"""

from __future__ import annotations

import hashlib
import re

from brain.errors import InputError

_KEY = re.compile(r"[0-9a-f]{64}")


class UnknownBlobError(InputError):
    """No blob is stored under this key (or the key is not a blob key at all)."""


def blob_key(data: bytes) -> str:
    """The content address of `data`."""
    return hashlib.sha256(data).hexdigest()


def check_key(key: str) -> str:
    """`key` if it is a well-formed blob key; otherwise UnknownBlobError."""
    if not isinstance(key, str) or _KEY.fullmatch(key) is None:
        shown = repr(key) if len(str(key)) <= 80 else repr(str(key)[:80]) + "..."
        raise UnknownBlobError(
            f"{shown} is not a blob key (expected 64 lowercase hex digits, a SHA-256)."
        )
    return key


class MemoryBlobStore:
    """Blobs in a dict: content-addressed like the file store, gone with the process."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._mimes: dict[str, str] = {}

    async def put(self, data: bytes, *, mime: str) -> str:
        key = blob_key(data)
        self._blobs[key] = bytes(data)
        self._mimes[key] = mime
        return key

    async def get(self, key: str) -> bytes:
        try:
            return self._blobs[check_key(key)]
        except KeyError:
            raise UnknownBlobError(f"No blob is stored under {key}.") from None

    async def delete(self, key: str) -> None:
        """Remove a blob; removing one that is not there is not an error."""
        self._blobs.pop(check_key(key), None)
        self._mimes.pop(key, None)

    def __len__(self) -> int:
        return len(self._blobs)
