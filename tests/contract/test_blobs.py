"""The BlobStore contract, run on the in-memory store and on the file store."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from brain.blobs import MemoryBlobStore, UnknownBlobError
from brain.errors import InputError, TomoError
from brain.ports import BlobStore
from storage.blobs import FileBlobStore


@pytest.fixture(params=["memory", "file"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "memory":
        return MemoryBlobStore()
    return FileBlobStore(tmp_path / "blobs")


def test_both_stores_satisfy_the_port(blobs: BlobStore) -> None:
    assert isinstance(blobs, BlobStore)


async def test_put_then_get_round_trips_bytes(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 100 + "こんにちは".encode()
    key = await blobs.put(data, mime="application/octet-stream")
    assert await blobs.get(key) == data
    assert await blobs.get(await blobs.put(b"", mime="text/plain")) == b""


async def test_keys_are_content_addresses(blobs: BlobStore) -> None:
    k1 = await blobs.put(b"same bytes", mime="text/plain")
    k2 = await blobs.put(b"same bytes", mime="application/json")
    k3 = await blobs.put(b"other bytes", mime="text/plain")
    assert k1 == k2 == hashlib.sha256(b"same bytes").hexdigest()
    assert k3 != k1


async def test_unknown_key_is_a_clear_input_error(blobs: BlobStore) -> None:
    with pytest.raises(UnknownBlobError, match="No blob is stored") as info:
        await blobs.get("0" * 64)
    assert isinstance(info.value, InputError)
    assert isinstance(info.value, TomoError)


@pytest.mark.parametrize(
    "bad",
    ["", "../../etc/passwd", "/etc/passwd", "A" * 64, "0" * 63, "0" * 65, "..", "ab/" + "0" * 61],
)
async def test_malformed_keys_are_refused_everywhere(blobs: BlobStore, bad: str) -> None:
    with pytest.raises(UnknownBlobError, match="not a blob key"):
        await blobs.get(bad)
    with pytest.raises(UnknownBlobError, match="not a blob key"):
        await blobs.delete(bad)


async def test_delete_removes_and_is_idempotent(blobs: BlobStore) -> None:
    keep = await blobs.put(b"keep me", mime="text/plain")
    gone = await blobs.put(b"forget me", mime="text/plain")
    await blobs.delete(gone)
    with pytest.raises(UnknownBlobError):
        await blobs.get(gone)
    await blobs.delete(gone)
    assert await blobs.get(keep) == b"keep me"


async def test_concurrent_puts_of_the_same_bytes(blobs: BlobStore) -> None:
    data = b"x" * 1_000_000
    keys = await asyncio.gather(*(blobs.put(data, mime="text/plain") for _ in range(8)))
    assert len(set(keys)) == 1
    assert await blobs.get(keys[0]) == data


# --- the file store only -----------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_file_store_writes_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = await store.put(b"hello", mime="text/plain")
    assert _files(tmp_path) == [tmp_path / key[:2] / key]
    # a second store on the same directory sees the blob (it lives on disk)
    assert await FileBlobStore(tmp_path).get(key) == b"hello"


async def test_file_store_replaces_a_torn_file(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    key = await store.put(b"complete content", mime="text/plain")
    (tmp_path / key[:2] / key).write_bytes(b"torn")
    await store.put(b"complete content", mime="text/plain")
    assert await store.get(key) == b"complete content"


async def test_file_store_never_reads_outside_its_root(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    store = FileBlobStore(tmp_path / "blobs")
    for bad in ("../secret.txt", str(secret), "../" * 5 + "etc/passwd"):
        with pytest.raises(UnknownBlobError):
            await store.get(bad)
    assert secret.read_text() == "do not read"
