"""pgvector on Postgres: a `vec` column beside each stored embedding, exact search per
scope, and an HNSW index per scope once the scope is large.

The `vec` columns exist only on Postgres (migration 0003); SQLite keeps the bytes and
recall searches them with numpy. Each scope's HNSW index is a partial index on
`vec::vector(dims)` with the scope in its predicate, so a search stays inside its scope
and a small scope is searched exactly (the planner sorts its few rows instead).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import UserDefinedType
from sqlmodel.ext.asyncio.session import AsyncSession


class VectorType(UserDefinedType[str]):
    """pgvector's `vector`, so that reflecting the schema knows the type."""

    cache_ok = True

    def get_col_spec(self, **kw: object) -> str:
        return "vector"


ischema_names.setdefault("vector", VectorType)

# The tables with an embedding, and the column naming their row.
VECTOR_TABLES = {"message_key": "message_id", "memory": "id"}
VEC_COLUMN = "vec"


def literal(embedding: bytes) -> str:
    """float32 bytes as pgvector's text form, '[0.1,0.2,...]'."""
    return vector_text(np.frombuffer(embedding, dtype=np.float32).tolist())


async def set_vector(s: AsyncSession, *, table: str, row_id: int, embedding: bytes | None) -> None:
    id_col = VECTOR_TABLES[table]
    await s.exec(  # type: ignore[call-overload]
        text(
            f"UPDATE {table} SET {VEC_COLUMN} = CAST(:v AS vector) WHERE {id_col} = :id"
        ).bindparams(v=None if embedding is None else literal(embedding), id=row_id)
    )


def index_name(table: str, scope: str, dims: int) -> str:
    digest = hashlib.sha1(scope.encode()).hexdigest()[:16]
    return f"ix_vec_{table}_{dims}_{digest}"


def _quote(value: str) -> str:
    """A SQL string literal (DDL takes no bind parameters)."""
    if "\x00" in value:
        raise ValueError("a scope cannot contain NUL")
    return "'" + value.replace("'", "''") + "'"


async def ensure_index(s: AsyncSession, *, scope: str, dims: int) -> list[str]:
    """Create the scope's HNSW indexes (cosine) if missing; returns the names of those
    it created. An index already there costs one catalogue lookup (each process asks
    once per scope), not a rebuild of the table's statistics."""
    names = []
    for table in VECTOR_TABLES:
        name = index_name(table, scope, dims)
        exists = await s.exec(  # type: ignore[call-overload]
            text("SELECT 1 FROM pg_indexes WHERE indexname = :name").bindparams(name=name)
        )
        if exists.first() is not None:
            continue
        await s.exec(  # type: ignore[call-overload]
            text(
                f"CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw "
                f"(({VEC_COLUMN}::vector({dims})) vector_cosine_ops) "
                f"WHERE scope = {_quote(scope)} AND vector_dims({VEC_COLUMN}) = {dims}"
            )
        )
        names.append(name)
        # Fresh statistics, so that the planner knows the scope is now large.
        await s.exec(text(f"ANALYZE {table}"))  # type: ignore[call-overload]
    return names


def search_sql(*, scope: str, dims: int, limit: int, explain: bool = False) -> str:
    """The nearest messages and memories of `scope` (kind, id, cosine distance), in the
    driver's own form with one parameter, %(q)s, the query vector.

    The scope is written into the statement (as an escaped literal) so that the planner
    can match it against the scope's partial index; the statement is passed to the
    driver as it is (SQLAlchemy's compilation costs more than the search itself).
    """
    parts = []
    for kind, (table, id_col) in zip(("message", "memory"), VECTOR_TABLES.items(), strict=True):
        expr = f"{VEC_COLUMN}::vector({dims})"
        parts.append(
            f"(SELECT '{kind}' AS kind, {id_col} AS id, "
            f"{expr} <=> CAST(%(q)s AS vector({dims})) AS distance FROM {table} "
            f"WHERE scope = {_quote(scope)} AND {VEC_COLUMN} IS NOT NULL "
            f"AND vector_dims({VEC_COLUMN}) = {dims} ORDER BY distance LIMIT {int(limit)})"
        )
    return ("EXPLAIN " if explain else "") + " UNION ALL ".join(parts)


def vector_text(values: Sequence[float]) -> str:
    """pgvector's text form; str() of a list of floats is C-fast and reads back exact."""
    return str(np.asarray(values, dtype=np.float64).tolist())


async def search(
    conn: AsyncConnection, *, scope: str, query: Sequence[float], limit: int
) -> list[tuple[str, int, float]]:
    """The `limit` nearest messages and memories of `scope`: (kind, id, cosine similarity).

    Sets the connection's HNSW search breadth first: for the session on an autocommit
    connection (SET LOCAL would be lost outside a transaction; every search sets its
    own, so what it leaves behind is never relied on), for the transaction otherwise.
    """
    # HNSW returns at most ef_search rows; ask for enough.
    ef = max(40, min(int(limit), 1000))
    sync = conn.sync_connection
    options = sync.get_execution_options() if sync is not None else {}
    autocommit = options.get("isolation_level") == "AUTOCOMMIT"
    await conn.exec_driver_sql(f"SET {'' if autocommit else 'LOCAL '}hnsw.ef_search = {ef}")
    statement = search_sql(scope=scope, dims=len(query), limit=limit)
    result = await conn.exec_driver_sql(statement, {"q": vector_text(query)})
    rows: list[tuple[Any, ...]] = [tuple(row) for row in result.all()]
    return [(str(kind), int(row_id), 1.0 - float(dist)) for kind, row_id, dist in rows]


__all__ = [
    "VECTOR_TABLES",
    "VectorType",
    "ensure_index",
    "index_name",
    "literal",
    "search",
    "search_sql",
    "set_vector",
    "vector_text",
]
