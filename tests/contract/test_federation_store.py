"""FederationStore on SQLite and Postgres: clients, rounds, uploads, aggregates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, pool

from brain.blobs import MemoryBlobStore
from storage.database import Database
from storage.db import sync_url
from storage.federation import FederationConflict, FederationStore, RoundTerms, hash_token
from storage.migrate import alembic_config, upgrade

FP = "c" * 64


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[FederationStore]:
    db = Database(db_url)
    try:
        yield FederationStore(db, MemoryBlobStore())
    finally:
        await db.aclose()


async def test_tokens_are_stored_hashed_and_names_are_unique(store: FederationStore) -> None:
    token = await store.add_client("alice", admin=True)
    assert len(token) > 40
    found = await store.authenticate(token)
    assert found is not None
    assert (found.name, found.admin) == ("alice", True)
    assert await store.authenticate(token + "x") is None
    with pytest.raises(FederationConflict, match="already exists"):
        await store.add_client("alice")
    async with store.db.session() as s:
        from sqlmodel import select

        from storage.federation_tables import FederationClientRow

        row = (await s.exec(select(FederationClientRow))).one()
    assert row.token_hash == hash_token(token)
    assert token not in row.token_hash
    assert await store.revoke_client("alice")
    assert not await store.revoke_client("alice")
    assert await store.authenticate(token) is None


async def test_rounds_take_the_newest_upload_per_client(store: FederationStore) -> None:
    await store.add_client("a")
    await store.add_client("b")
    clients = {c.name: c for c in await store.clients()}
    assert await store.current_round() == 1
    assert await store.round_terms(1) is None

    async def put(who: str, data: bytes) -> int:
        upload = await store.add_upload(
            clients[who],
            data,
            round_no=1,
            base_fingerprint=FP,
            rank=4,
            alpha=8.0,
            rslora=False,
            examples=3,
            layout="L",
        )
        return upload.id

    first, _, newest = await put("a", b"one"), await put("b", b"two"), await put("a", b"three")
    assert await store.round_terms(1) == RoundTerms(FP, 4, "L")
    chosen = await store.latest_uploads(1)
    assert [(u.client, u.id) for u in chosen] == [("b", chosen[0].id), ("a", newest)]
    assert first not in {u.id for u in chosen}
    assert await store.blob(chosen[1].blob_key) == b"three"

    terms = RoundTerms(FP, 4, "L")
    made = await store.add_aggregate(
        b"agg", round_no=1, method="mean", params={}, clients=[], terms=terms, config={"r": 4}
    )
    assert made.round == 1
    assert await store.current_round() == 2
    assert await store.round_terms(2) == terms  # the next round stays on this base and rank
    with pytest.raises(FederationConflict, match="already been aggregated"):
        await store.add_aggregate(
            b"agg2", round_no=1, method="mean", params={}, clients=[], terms=terms, config={}
        )
    latest = await store.latest_aggregate()
    assert latest is not None
    assert latest.config == {"r": 4}


def test_migration_0009_goes_down_and_up_again(db_url: str, tmp_path: Path) -> None:
    from alembic import command

    command.downgrade(alembic_config(db_url), "0008")
    engine = create_engine(sync_url(db_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            assert "federation_upload" not in inspect(conn).get_table_names()
        assert upgrade(db_url) == "0009"
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert {"federation_client", "federation_upload", "federation_aggregate"} <= names
