"""A database that is read-only, locked or down gives a clear error and loses nothing."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import pytest

from brain.errors import StorageError
from brain.messages import Text
from brain.ports import NewMessage
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, DM, T0


def note(text: str, pid: str) -> NewMessage:
    return NewMessage(
        chat=DM,
        author=None,
        role="user",
        platform_message_id=pid,
        text=text,
        segments=(Text(text=text),),
        sent_at=T0,
    )


async def seeded(url: str) -> None:
    await asyncio.to_thread(upgrade, url)
    store = SqlMemoryStore(url)
    await store.resolve_person(ALICE, seen_at=T0)
    await store.add_message(note("keep me", "m1"))
    await store.aclose()


async def test_read_only_database(tmp_path: Path) -> None:
    db = tmp_path / "tomo.db"
    await seeded(f"sqlite:///{db}")
    # SQLite's own read-only open: what a read-only file or mount gives (root ignores
    # file modes, so chmod alone would not stop this test's writes).
    store = SqlMemoryStore(f"sqlite:///file:{db}?mode=ro&uri=true")
    assert [m.text for m in await store.recent_messages(DM, limit=5)] == ["keep me"]
    with pytest.raises(StorageError, match="read-only") as info:
        await store.add_message(note("new", "m2"))
    assert "Traceback" not in str(info.value)
    await store.aclose()
    rw = SqlMemoryStore(f"sqlite:///{db}")
    assert [m.text for m in await rw.recent_messages(DM, limit=5)] == ["keep me"]
    await rw.aclose()


async def test_locked_database(tmp_path: Path) -> None:
    db = tmp_path / "tomo.db"
    await seeded(f"sqlite:///{db}")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    store = SqlMemoryStore(f"sqlite:///{db}", busy_timeout_ms=200)
    try:
        with pytest.raises(StorageError, match="locked by another process"):
            await store.add_message(note("blocked", "m2"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await store.add_message(note("after", "m3"))
    assert [m.text for m in await store.recent_messages(DM, limit=5)] == ["keep me", "after"]
    await store.aclose()


async def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        SqlMemoryStore(f"sqlite:///{tmp_path / 'nope' / 'tomo.db'}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_postgres_down_is_clear_and_keeps_the_password_secret() -> None:
    url = f"postgresql://tomo:hunter2secret@127.0.0.1:{_closed_port()}/tomo"
    store = SqlMemoryStore(url)
    with pytest.raises(StorageError, match="not reachable") as info:
        await store.count_messages()
    assert "hunter2secret" not in str(info.value)
    await store.aclose()


def test_migrate_on_postgres_down_is_clear() -> None:
    url = f"postgresql://tomo:hunter2secret@127.0.0.1:{_closed_port()}/tomo"
    with pytest.raises(StorageError, match="not reachable") as info:
        upgrade(url)
    assert "hunter2secret" not in str(info.value)
