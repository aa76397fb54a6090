"""Engines, database URLs and the translation of driver errors into StorageError."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from brain.errors import StorageError

SQLITE_BUSY_TIMEOUT_MS = 5000
# A pooled server connection idle this long is pinged before use (a restarted server
# has closed it); one in steady use is not (a ping is a round trip on every checkout).
PING_AFTER_IDLE_S = 1.0


_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
# psycopg 3 is both blocking and async; Alembic uses it blocking.
_SYNC_DRIVERS = {"sqlite": "sqlite", "postgresql": "postgresql+psycopg"}


def _with_driver(url: str, drivers: dict[str, str]) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in drivers:
        raise StorageError(
            f"Unsupported database {backend!r} in TOMO_DATABASE_URL: use sqlite or postgresql."
        )
    return parsed.set(drivername=drivers[backend]).render_as_string(hide_password=False)


def async_url(url: str) -> str:
    """Map a user-facing URL onto the async driver tomo uses."""
    return _with_driver(url, _ASYNC_DRIVERS)


def sync_url(url: str) -> str:
    """The same database through a blocking driver (for Alembic)."""
    return _with_driver(url, _SYNC_DRIVERS)


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database == ":memory:":
        return None
    database = parsed.database
    if parsed.query.get("uri") and database.startswith("file:"):
        database = database.removeprefix("file:")
    return Path(database)


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten with zeros: what a person had forgotten must not
        # linger in free pages of the file (some builds have this off by default).
        cur.execute("PRAGMA secure_delete=ON")
        # WAL: readers never block the writer; NORMAL sync is durable across crashes of
        # the process (a power cut may lose the last commits, never corrupt the file).
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return on_connect


def create_engine(url: str, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> AsyncEngine:
    aurl = async_url(url)
    path = sqlite_path(aurl)
    if path is not None and not path.parent.exists():
        raise StorageError(
            f"The database folder {path.parent} does not exist: create it or change "
            "TOMO_DATA_DIR / TOMO_DATABASE_URL."
        )
    engine = create_async_engine(aurl)
    if make_url(aurl).get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(busy_timeout_ms))
    else:
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling for connections idle over PING_AFTER_IDLE_S:
    SQLAlchemy's pool_pre_ping pings on every checkout, which doubled the round trips of
    a busy worker. A failed ping makes the pool open a fresh connection instead."""

    def checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["tomo_idle_since"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("tomo_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            ok = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("a pooled connection died while idle") from exc
        if not ok:
            raise DisconnectionError("a pooled connection died while idle")

    event.listen(engine.sync_engine, "checkin", checkin)
    event.listen(engine.sync_engine, "checkout", checkout)


_SECRETS = re.compile(r"(password=)\S+|(://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)


def _scrub(text: str) -> str:
    return _SECRETS.sub(
        lambda m: (m.group(1) or m.group(2)) + "***" + ("" if m.group(1) else "@"), text
    )


def translate(exc: SQLAlchemyError, *, url: str) -> StorageError:
    """A clear StorageError for a driver error; no secrets, no traceback text."""
    where = safe_url(url)
    path = sqlite_path(url)
    detail = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
    low = detail.lower()
    if "readonly" in low or "read-only" in low:
        return StorageError(
            f"The database {path or where} is read-only, so nothing new can be saved. "
            "Fix the file's permissions or point TOMO_DATA_DIR somewhere writable."
        )
    if "database is locked" in low:
        return StorageError(
            f"The database {path or where} is locked by another process. Close the other "
            "tomo (or whatever holds it) and try again; nothing was lost."
        )
    if "unable to open" in low:
        return StorageError(
            f"Cannot open the database file {path or where}: check that the folder exists "
            "and is writable, or change TOMO_DATA_DIR / TOMO_DATABASE_URL."
        )
    if isinstance(exc, OperationalError) and path is None:
        return StorageError(
            f"The database at {where} is not reachable ({_scrub(detail)}). Is it running? "
            "Check TOMO_DATABASE_URL."
        )
    return StorageError(f"Database error on {where}: {_scrub(detail)}")
