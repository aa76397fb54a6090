"""Shared fixtures: real SQLite files and a real Postgres (pgserver, with pgvector)."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from brain.messages import ChatRef, Inbound, PersonRef, Text
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One real Postgres 16 + pgvector for the whole test session."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (root, no login session).
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    pgdata = tmp_path_factory.mktemp("pgdata")
    server = get_server(pgdata, cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """A fresh, empty database on the session's Postgres."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name};")
    uri: str = pg_server.get_uri(name)
    return uri


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tomo.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A migrated, empty database: each test using this runs on SQLite and on Postgres."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("pg_url")
    upgrade(url)
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlMemoryStore]:
    s = SqlMemoryStore(db_url)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[SqlMemoryStore]:
    await asyncio.to_thread(upgrade, sqlite_url)
    s = SqlMemoryStore(sqlite_url)
    try:
        yield s
    finally:
        await s.aclose()


DM = ChatRef(platform="telegram", chat_id="100", kind="dm")
GROUP = ChatRef(platform="telegram", chat_id="-200", kind="group")
ALICE = PersonRef(platform="telegram", user_id="1", display_name="Alice")
BOB = PersonRef(platform="telegram", user_id="2", display_name="Bob")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def inbound(
    text: str,
    *,
    msg_id: str | None = None,
    chat: ChatRef = DM,
    author: PersonRef = ALICE,
    to_bot: bool = True,
    sent_at: datetime = T0,
) -> Inbound:
    return Inbound(
        id=msg_id or uuid.uuid4().hex,
        chat=chat,
        author=author,
        segments=(Text(text=text),),
        to_bot=to_bot,
        sent_at=sent_at,
    )
