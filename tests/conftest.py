"""Shared fixtures: real SQLite files and a real Postgres (pgserver, with pgvector)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from brain.messages import ChatRef, Inbound, PersonRef, Text
from brain.ports import Bus
from storage.bus import InProcessBus
from storage.crypto import Encryption
from storage.migrate import upgrade
from storage.redis_bus import RedisBus
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


# Stores in tests encrypt at rest, as tomo does by default (a fixed test master key).
TEST_ENCRYPTION = Encryption(master_key=bytes(range(32)))


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SqlMemoryStore]:
    s = SqlMemoryStore(db_url, encryption=TEST_ENCRYPTION)
    try:
        yield s
    finally:
        await s.aclose()


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[SqlMemoryStore]:
    await asyncio.to_thread(upgrade, sqlite_url)
    s = SqlMemoryStore(sqlite_url, encryption=TEST_ENCRYPTION)
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


# Redis for the bus contract suite: Debian's redis-server (installed by `make test`).


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A real redis-server on 127.0.0.1 with its own directory; `stop()` then `start()`
    restarts it on the same port. With `aof`, every write is fsynced to the append-only
    file, so streams and groups survive a restart."""

    def __init__(self, directory: Path, *, aof: bool = False) -> None:
        self.directory = directory
        self.port = free_port()
        self.aof = aof
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError(
                "redis-server is not installed: `make test` installs it (Debian's "
                "redis-server), or run apt-get install redis-server"
            )
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else []
        args = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no"]
        args += ["--dir", str(self.directory), "--save", ""]
        args += aof or ["--appendonly", "no"]
        with (self.directory / "redis.log").open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server (no persistence) for the whole test session."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis with database 0 emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url


# The bus on both implementations (the in-process default and Redis Streams).


@pytest.fixture(params=["memory", "redis"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    if request.param == "memory":
        b: Bus = InProcessBus(maxlen=1000)
    else:
        b = RedisBus(request.getfixturevalue("redis_url"), maxlen=1000)
    try:
        yield b
    finally:
        await b.aclose()


@pytest.fixture
async def redis_bus(redis_url: str) -> AsyncIterator[RedisBus]:
    b = RedisBus(redis_url)
    try:
        yield b
    finally:
        await b.aclose()
