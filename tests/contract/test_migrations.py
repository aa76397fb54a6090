"""Alembic migrations on SQLite and Postgres match the SQLModel tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool, text

from storage.db import sync_url
from storage.migrate import current_revision, head_revision, include_object, upgrade
from storage.tables import metadata

REPO = Path(__file__).resolve().parents[2]


def test_migrations_reach_head_and_match_the_models(db_url: str) -> None:
    assert current_revision(db_url) == head_revision(db_url)
    engine = create_engine(sync_url(db_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"include_object": include_object}),
                metadata,
            )
    finally:
        engine.dispose()
    assert diff == []


def test_upgrade_twice_is_harmless(db_url: str) -> None:
    assert upgrade(db_url) == upgrade(db_url) == head_revision(db_url)


def test_postgres_has_pgvector(pg_url: str) -> None:
    upgrade(pg_url)
    engine = create_engine(sync_url(pg_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ext = conn.execute(text("SELECT extname FROM pg_extension WHERE extname='vector'"))
            assert ext.scalar() == "vector"
    finally:
        engine.dispose()


def test_sqlite_has_no_vector_extension_step(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = create_engine(sync_url(sqlite_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            names = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}
    finally:
        engine.dispose()
    assert {"person", "account", "chat", "message", "alembic_version"} <= names


def test_several_processes_migrating_one_new_postgres_take_turns(
    pg_url: str, tmp_path: Path
) -> None:
    """Workers starting beside a migrate job all migrate: none fails, the schema is whole."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update(TOMO_DATABASE_URL=pg_url, TOMO_DATA_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bots", "migrate"],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(3)
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err.decode()[-2000:]
    assert current_revision(pg_url) == head_revision(pg_url)


def test_the_old_persona_wide_self_concept_is_deleted(db_url: str) -> None:
    """0007: self-concepts per chat stay; the one shown everywhere (by persona name) goes."""
    from alembic import command
    from storage.migrate import alembic_config

    cfg = alembic_config(db_url)
    command.downgrade(cfg, "0006")
    engine = create_engine(sync_url(db_url), poolclass=pool.NullPool)
    insert = text(
        "INSERT INTO summary (kind, subject, day, version, text, created_at) "
        "VALUES ('self', :subject, '', 1, :text, '2026-01-01 00:00:00+00:00')"
    )
    try:
        with engine.begin() as conn:
            conn.execute(insert, {"subject": "Tomo", "text": "old, shown everywhere"})
            conn.execute(insert, {"subject": "telegram:-100", "text": "this group's"})
        upgrade(db_url)
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT subject FROM summary WHERE kind = 'self'"))
            assert [r[0] for r in kept] == ["telegram:-100"]
    finally:
        engine.dispose()
