"""Alembic environment for tomo: SQLite (batch mode) and Postgres.

`tomo migrate` configures this programmatically (storage/migrate.py); plain `alembic`
works too with `-x url=...`.
"""

from __future__ import annotations

from sqlalchemy import create_engine, pool, text

from alembic import context
from storage.migrate import include_object
from storage.tables import metadata

config = context.config
# pg_advisory_lock key of tomo's migrations (any constant; 'tomo' in ASCII).
MIGRATION_LOCK = 0x746F6D6F


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or context.get_x_argument(
        as_dictionary=True
    ).get("url")
    if not url:
        raise SystemExit("no database URL: pass -x url=... or use `tomo migrate`")
    return url


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        include_object=include_object,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several processes migrating one database at once (workers starting beside
            # a migrate job) take turns: the later ones find it done. Held until the
            # connection closes, across the commit below.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
        context.configure(
            connection=connection,
            target_metadata=metadata,
            include_object=include_object,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
