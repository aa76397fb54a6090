"""A Postgres restart under a running store: pooled connections it closed are replaced.

A pooled connection idle for PING_AFTER_IDLE_S is pinged before use, so the first
operation after a restart succeeds; one in steady use is not pinged (that would double a
busy worker's round trips), so a restart in the middle of use fails that one operation
with a clear StorageError and the next one works.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brain.errors import StorageError
from storage import db as db_module
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, T0


@pytest.fixture
def own_pg(tmp_path: Path) -> Iterator[Any]:
    """A Postgres of this test's own (the session's server must not be restarted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    server = get_server(tmp_path / "pgdata", cleanup_mode="stop")
    try:
        yield server
    finally:
        server.cleanup()


def restart(server: Any) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server.pgdata, user=server.system_user)


async def test_an_idle_pool_survives_a_postgres_restart(
    own_pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 0.0)
    own_pg.psql("CREATE DATABASE restarted;")
    url = own_pg.get_uri("restarted")
    await asyncio.to_thread(upgrade, url)
    store = SqlMemoryStore(url)
    try:
        alice = await store.resolve_person(ALICE, seen_at=T0)
        await asyncio.to_thread(restart, own_pg)
        assert (await store.resolve_person(ALICE, seen_at=T0)).id == alice.id
        assert (await store.resolve_person(BOB, seen_at=T0)).id != alice.id
    finally:
        await store.aclose()


async def test_a_busy_pool_fails_one_operation_after_a_restart_then_recovers(
    own_pg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_AFTER_IDLE_S", 3600.0)  # never idle: no ping
    own_pg.psql("CREATE DATABASE busy;")
    url = own_pg.get_uri("busy")
    await asyncio.to_thread(upgrade, url)
    store = SqlMemoryStore(url)
    try:
        alice = await store.resolve_person(ALICE, seen_at=T0)
        await asyncio.to_thread(restart, own_pg)
        with pytest.raises(StorageError) as caught:
            await store.resolve_person(ALICE, seen_at=T0)
        assert "Traceback" not in str(caught.value)
        # The failed connection invalidated the pool: the next operation reconnects.
        assert (await store.resolve_person(ALICE, seen_at=T0)).id == alice.id
    finally:
        await store.aclose()
