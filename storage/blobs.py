"""FileBlobStore: the BlobStore port on a local directory.

Blobs are content-addressed (SHA-256 of the bytes) and fanned out as
`<root>/<first 2 hex digits>/<key>`. A write goes to a temporary file in the same
directory first and is moved into place with os.replace, so a reader never sees half a
blob and a crash leaves at most a stray `.tmp` file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from brain.blobs import UnknownBlobError, blob_key, check_key
from brain.errors import StorageError


class FileBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        key = check_key(key)
        return self.root / key[:2] / key

    async def put(self, data: bytes, *, mime: str) -> str:
        key = blob_key(data)
        await asyncio.to_thread(self._write, self._path(key), bytes(data))
        return key

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise UnknownBlobError(f"No blob is stored under {key}.") from None
        except OSError as exc:
            raise StorageError(f"Could not read blob {key} from {self.root}: {exc}") from None

    async def delete(self, key: str) -> None:
        """Remove a blob; removing one that is not there is not an error."""
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise StorageError(f"Could not delete blob {key} from {self.root}: {exc}") from None

    def _write(self, path: Path, data: bytes) -> None:
        if path.is_file() and path.stat().st_size == len(data):
            return  # same address, same length: the same bytes are already there
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise StorageError(f"Could not write a blob under {self.root}: {exc}") from None
