"""Postgres searches vectors itself (pgvector); SQLite searches them with numpy.

Both must rank alike, re-embedded vectors are stored once, and a large scope's HNSW
index is one the planner can use for that scope's searches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import text

from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall, RecallConfig
from brain.memory.types import NewMemory, scope_of
from brain.messages import Text
from brain.ports import NewMessage
from storage import pgvector
from storage.longterm import SqlLongTermStore
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, GROUP, T0

LINES = [
    "We adopted a grey cat called Miso last spring",
    "The marathon in Lisbon starts at eight",
    "My sister paints watercolour birds",
    "I am learning to bake sourdough bread",
    "Our team won the chess tournament on Sunday",
    "The cat knocked a plant off the shelf again",
    "I booked a train to the mountains for June",
    "Watercolour paper is expensive these days",
]
QUERIES = ["cat", "Lisbon marathon", "watercolour painting", "bread baking", "train trip"]


async def _fill(store: SqlMemoryStore) -> str:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    scope = scope_of(GROUP, person_id=alice.id)
    lt = SqlLongTermStore(store.db)
    recall = Recall(store=lt, embedder=HashEmbedder())
    for n, line in enumerate(LINES):
        msg, _ = await store.add_message(
            NewMessage(
                chat=GROUP,
                author=alice,
                role="user",
                platform_message_id=f"m{n}",
                text=line,
                segments=(Text(text=line),),
                sent_at=T0 + timedelta(minutes=n),
            )
        )
        await recall.index_message(msg, scope=scope)
    embedding = (await HashEmbedder().embed(["Alice's cat is called Miso"], kind="passage"))[0]
    await lt.add_memory(
        NewMemory(
            scope=scope,
            text="Alice's cat is called Miso",
            about=(alice.id,),
            source_message_ids=(1,),
            created_at=T0,
            embedding=embedding.tobytes(),
        )
    )
    return scope


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[SqlMemoryStore]:
    upgrade(pg_url)
    s = SqlMemoryStore(pg_url)
    try:
        yield s
    finally:
        await s.aclose()


async def test_postgres_and_sqlite_rank_alike(
    pg_store: SqlMemoryStore, sqlite_store: SqlMemoryStore
) -> None:
    results = {}
    for name, store in (("pg", pg_store), ("sqlite", sqlite_store)):
        scope = await _fill(store)
        lt = SqlLongTermStore(store.db)
        assert lt.native_vectors is (name == "pg")
        recall = Recall(store=lt, embedder=HashEmbedder())
        found = []
        for q in QUERIES:
            found.append(
                [(r.entry.kind, r.entry.text) for r in await recall.search(q, scopes=[scope], k=4)]
            )
        results[name] = found
    assert results["pg"] == results["sqlite"]
    assert results["pg"][0][0][1] in {LINES[0], LINES[5], "Alice's cat is called Miso"}


async def test_native_search_holds_no_vectors_and_finds_memories(
    pg_store: SqlMemoryStore,
) -> None:
    scope = await _fill(pg_store)
    lt = SqlLongTermStore(pg_store.db)
    recall = Recall(store=lt, embedder=HashEmbedder())
    found = await recall.search("cat called Miso", scopes=[scope], k=3)
    assert "memory" in {r.entry.kind for r in found}
    index = recall._scopes[scope]
    assert index.native
    assert all(row is None for row in index.rows)
    assert all(e.embedding is None for e in index.entries)
    qvec = (await HashEmbedder().embed(["cat"], kind="query"))[0]
    hits = await lt.dense_search(scope, qvec.tolist(), limit=3)
    assert len(hits) == 4  # up to 3 per table: three messages and the one memory
    # a scope with nothing stored finds nothing
    assert await lt.dense_search("dm:999", qvec.tolist(), limit=3) == []


async def test_re_embedded_vectors_are_stored(db_url: str) -> None:
    store = SqlMemoryStore(db_url)
    try:
        scope = await _fill(store)
        lt = SqlLongTermStore(store.db)
        # Another embedder (other dims) re-embeds every entry once, and stores the result.
        other = HashEmbedder(dims=64)
        recall = Recall(store=lt, embedder=other)
        assert await recall.search("cat", scopes=[scope], k=2)
        entries = await lt.index_entries(scope)
        assert {len(e.embedding or b"") for e in entries} == {64 * 4}
        if lt.native_vectors:
            async with store.db.session() as s:
                dims = (
                    await s.exec(  # type: ignore[call-overload]
                        text("SELECT DISTINCT vector_dims(vec) FROM message_key")
                    )
                ).all()
            assert [d for (d,) in dims] == [64]
    finally:
        await store.aclose()


async def test_large_scope_gets_an_index_the_planner_uses(pg_store: SqlMemoryStore) -> None:
    scope = await _fill(pg_store)
    lt = SqlLongTermStore(pg_store.db)
    recall = Recall(
        store=lt, embedder=HashEmbedder(), config=RecallConfig(vector_index_min_entries=5)
    )
    assert await recall.search("cat", scopes=[scope], k=2)
    dims = HashEmbedder().dims
    async with pg_store.db.session() as s:
        names = {
            n
            for (n,) in (
                await s.exec(  # type: ignore[call-overload]
                    text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_vec_%'")
                )
            ).all()
        }
        assert names == {pgvector.index_name(t, scope, dims) for t in pgvector.VECTOR_TABLES}
        # Asked again (another process's first search of the scope): nothing is created
        # and the tables' statistics are not rebuilt.
        assert await pgvector.ensure_index(s, scope=scope, dims=dims) == []
        # With the sort made costly, the planner must be able to pick the scope's index:
        # proof that the index predicate matches the search's own statement.
        await s.exec(text("SET LOCAL enable_seqscan = off"))  # type: ignore[call-overload]
        await s.exec(text("SET LOCAL enable_sort = off"))  # type: ignore[call-overload]
        conn = await s.connection()
        statement = pgvector.search_sql(scope=scope, dims=dims, limit=5, explain=True)
        explained = await conn.exec_driver_sql(statement, {"q": pgvector.vector_text([0.1] * dims)})
        plan = "\n".join(r[0] for r in explained.all())
    for table in pgvector.VECTOR_TABLES:
        assert pgvector.index_name(table, scope, dims) in plan
    # another scope's search cannot use it
    other = scope_of(GROUP, person_id=12345) + "x"
    assert await lt.dense_search(other, [0.1] * dims, limit=3) == []


def test_migration_fills_vec_from_stored_embeddings(pg_url: str) -> None:
    import numpy as np
    from sqlalchemy import create_engine, pool

    from alembic import command
    from storage.db import sync_url
    from storage.migrate import alembic_config

    command.upgrade(alembic_config(pg_url), "0002")
    engine = create_engine(sync_url(pg_url), poolclass=pool.NullPool)
    vector = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO memory (scope, text, importance, created_at, updated_at, "
                    "recall_count, embedding) VALUES ('dm:1', 'likes tea', 0.5, now(), now(), "
                    "0, :e)"
                ),
                {"e": vector.tobytes()},
            )
        upgrade(pg_url)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT vec::text FROM memory")).scalar_one()
    finally:
        engine.dispose()
    assert stored == "[0.6,0.8,0]"


async def test_a_search_on_an_autocommit_connection_keeps_its_hnsw_breadth(
    pg_store: SqlMemoryStore,
) -> None:
    """SET LOCAL is lost outside a transaction: the per-message path searches on an
    autocommit connection, where the breadth must be set for the session instead."""
    scope = await _fill(pg_store)
    dims = HashEmbedder().dims
    query = [0.1] * (dims - 1) + [9.99999993922529e-09]  # an exponent in the text form
    async with pg_store.db.autocommit_engine.connect() as conn:
        await pgvector.search(conn, scope=scope, query=query, limit=120)
        shown = (await conn.exec_driver_sql("SHOW hnsw.ef_search")).scalar()
    assert shown == "120"
    async with pg_store.db.engine.begin() as conn:  # in a transaction: local to it
        await pgvector.search(conn, scope=scope, query=query, limit=60)
        assert (await conn.exec_driver_sql("SHOW hnsw.ef_search")).scalar() == "60"
