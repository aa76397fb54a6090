"""Run the Alembic migrations (`tomo migrate`, and on every start of tomo)."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import SQLAlchemyError

import storage.pgvector  # noqa: F401  (registers pgvector's type for schema reflection)
from alembic import command
from brain.errors import StorageError
from storage.db import sqlite_path, sync_url, translate

SCRIPT_LOCATION = Path(__file__).resolve().parent.parent / "alembic"


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """What Alembic compares with the models: all but the Postgres-only pgvector parts
    (the `vec` columns and the per-scope HNSW indexes, see storage/pgvector.py)."""
    if type_ == "column" and name == "vec" and reflected and compare_to is None:
        return False
    return not (type_ == "index" and (name or "").startswith("ix_vec_"))


def alembic_config(url: str) -> Config:
    if not (SCRIPT_LOCATION / "env.py").is_file():
        raise StorageError(
            f"The migrations folder {SCRIPT_LOCATION} is missing: install tomo from its "
            "source tree (pip install -e .), as the Makefile does."
        )
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    # ConfigParser treats % as interpolation; URLs may carry %-escapes.
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def current_revision(url: str) -> str | None:
    engine = create_engine(sync_url(url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise translate(exc, url=url) from None
    finally:
        engine.dispose()


def upgrade(url: str) -> str | None:
    """Bring the database to the newest schema; returns the revision it is at."""
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(url)
    head = head_revision(url)
    if path is not None and path.exists() and current_revision(url) == head:
        return head  # nothing to do; also leaves a read-only file untouched
    try:
        command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        raise translate(exc, url=url) from None
    return head
