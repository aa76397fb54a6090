"""`tomo bench recall`: recall latency with many memories (synthetic, no model).

Fills a database with N L1 memories spread over scopes of 1k-10k each (random unit
vectors, sentences from a small vocabulary), then asks random scopes: the first query
of a scope loads its index from the database (cold), later ones hit the cached index
(warm). The query vector is precomputed so the figures are the store and the index,
not the embedding model (add about 16 ms per query for e5 on this machine).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import insert, text
from sqlmodel import col

from bots.bench import percentile
from brain.memory.recall import Recall, RecallConfig
from brain.memory.vectors import Vector, normalize
from storage import pgvector
from storage.database import Database
from storage.longterm import SqlLongTermStore
from storage.migrate import upgrade
from storage.tables import MemoryRow

WORDS = (
    "sister brother cat dog Osaka Paris moved job painting camping hiking birthday cake "
    "guitar lessons garden tea coffee school exam travel train beach mountain book movie "
    "friend party music concert doctor recipe soup bicycle marathon museum photo puppy"
).split()
DIMS = 384


class FixedEmbedder:
    """Random unit vectors, the same for the same text: stands in for a model."""

    dims = DIMS

    async def embed(self, texts: Sequence[str], *, kind: Literal["query", "passage"]) -> Vector:
        rows = [np.random.default_rng(abs(hash(t)) % (2**32)).standard_normal(DIMS) for t in texts]
        return normalize(np.asarray(rows, dtype=np.float32).reshape(len(texts), DIMS))


async def _fill(
    db: Database, *, total: int, scope_sizes: tuple[int, int], seed: int, vector_index_min: int
) -> list[str]:
    """Fill `db`; on Postgres also the pgvector column, and the HNSW index of each scope
    large enough for one (as recall would make it when the scope grew past the size)."""
    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    scopes: list[str] = []
    made = 0
    while made < total:
        size = min(total - made, pyrng.randint(*scope_sizes))
        scope = f"group:bench:{len(scopes)}"
        scopes.append(scope)
        for start in range(0, size, 5000):
            n = min(5000, size - start)
            vectors = normalize(rng.standard_normal((n, DIMS)).astype(np.float32))
            rows: list[dict[str, Any]] = [
                {
                    "scope": scope,
                    "text": " ".join(pyrng.choices(WORDS, k=8)),
                    "importance": 0.5,
                    "created_at": now,
                    "updated_at": now,
                    "recall_count": 0,
                    "embedding": vectors[i].astype("<f4").tobytes(),
                }
                for i in range(n)
            ]
            async with db.engine.begin() as conn:
                returning = insert(MemoryRow).returning(
                    col(MemoryRow.id), sort_by_parameter_order=True
                )
                ids = list((await conn.execute(returning, rows)).scalars())
                if db.dialect == "postgresql":
                    await conn.execute(
                        text("UPDATE memory SET vec = CAST(:v AS vector) WHERE id = :id"),
                        [
                            {"id": row_id, "v": pgvector.literal(row["embedding"])}
                            for row_id, row in zip(ids, rows, strict=True)
                        ],
                    )
        made += size
        if size >= vector_index_min:
            await SqlLongTermStore(db).ensure_vector_index(scope, dims=DIMS)
    return scopes


async def recall_latency(
    *, url: str | None, totals: Sequence[int], queries: int, seed: int = 7
) -> None:
    for total in totals:
        with tempfile.TemporaryDirectory(prefix="tomo-bench-") as tmp:
            the_url = url or f"sqlite:///{Path(tmp) / 'tomo.db'}"
            await asyncio.to_thread(upgrade, the_url)
            db = Database(the_url)
            t0 = time.perf_counter()
            config = RecallConfig()
            scopes = await _fill(
                db,
                total=total,
                scope_sizes=(1000, 10000),
                seed=seed,
                vector_index_min=config.vector_index_min_entries,
            )
            fill_s = time.perf_counter() - t0
            recall = Recall(store=SqlLongTermStore(db), embedder=FixedEmbedder(), config=config)
            rng = random.Random(seed)
            cold: list[float] = []
            warm: list[float] = []
            for i in range(queries):
                scope = rng.choice(scopes)
                query = " ".join(rng.choices(WORDS, k=4)) + f" {i}"
                fresh = scope not in recall._scopes
                t = time.perf_counter()
                await recall.search(query, scopes=[scope], k=10)
                (cold if fresh else warm).append((time.perf_counter() - t) * 1000)
            backend = db.dialect + ("+pgvector" if db.dialect == "postgresql" else "+numpy")
            if url is not None:
                async with db.engine.begin() as conn:
                    await conn.execute(MemoryRow.__table__.delete())  # type: ignore[attr-defined]
            await db.aclose()
        print(
            f"{backend} {total:>9,} memories in {len(scopes)} scopes (filled in {fill_s:.0f} s): "
            f"warm query p50 {percentile(warm, 0.5):.1f} ms p99 {percentile(warm, 0.99):.1f} ms "
            f"(n={len(warm)}); cold scope load+query p50 {statistics.median(cold):.0f} ms "
            f"p99 {percentile(cold, 0.99):.0f} ms (n={len(cold)})",
            flush=True,
        )
