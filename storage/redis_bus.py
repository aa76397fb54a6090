"""RedisBus: the Bus port on Redis Streams (redis-py's asyncio client).

Each stream is a Redis stream under `prefix`; an entry holds the payload bytes in one
field. Consumer groups are created on first use (MKSTREAM, from the oldest entry, so a
group created late still sees what was published before), and again when Redis lost
them (restarted without persistence). `publish` trims with `MAXLEN ~`. `claim_stale`
is XAUTOCLAIM plus XPENDING for the delivery counts. Locks are redis-py's `Lock`
(SET NX PX with a random token; Lua scripts extend and release only with the token),
renewed by a background task while held.

Connection failures are retried by the client with jittered exponential backoff; what
still fails becomes a StorageError that names the server by host, port and database
only: the password in the URL never reaches a log or an error message.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockNotOwnedError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brain.errors import ConfigError, StorageError
from brain.ports import Delivery
from storage.bus import DEFAULT_MAXLEN

log = logging.getLogger(__name__)

_FIELD = b"p"
MAX_BLOCK_MS = 10_000  # a longer wait is cut to this, so a call never blocks for long
# No socket timeout: with one, redis-py sends every command through asyncio.wait_for,
# which on Python 3.11 can swallow a task's cancellation (CPython gh-86296), and a
# worker could then never be stopped. TCP keepalive finds a dead peer instead.
_KEEPALIVE = {
    opt: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (opt := getattr(socket, name, None)) is not None
}


def _redacted(url: str) -> tuple[str, list[str]]:
    """`scheme://host:port/db` for messages, and the password (as written in the URL and
    decoded) to scrub from any text."""
    parts = urlsplit(url)
    secrets = [parts.password, unquote(parts.password)] if parts.password else []
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    where = f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"
    return where, sorted(set(secrets), key=len, reverse=True)


class RedisBus:
    """The Bus port on Redis Streams. `url` is a redis:// or rediss:// URL."""

    def __init__(
        self,
        url: SecretStr | str,
        *,
        maxlen: int = DEFAULT_MAXLEN,
        prefix: str = "tomo:",
        lock_poll_ms: int = 5,
        retries: int = 5,
    ) -> None:
        raw = url.get_secret_value() if isinstance(url, SecretStr) else url
        self._where, self._secrets = _redacted(raw)
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._maxlen = maxlen
        self._prefix = prefix
        self._lock_poll_s = lock_poll_ms / 1000
        self._groups: set[tuple[str, str]] = set()
        retry = Retry(EqualJitterBackoff(cap=1.0, base=0.05), retries)
        try:
            self._redis: Redis = Redis.from_url(
                raw,
                decode_responses=False,
                retry=retry,
                retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
                socket_connect_timeout=5.0,
                socket_timeout=None,  # redis-py's default is 5 s; see _KEEPALIVE
                socket_keepalive=True,
                socket_keepalive_options=_KEEPALIVE,
                health_check_interval=30,
            )
        except ValueError as exc:
            raise ConfigError(
                f"TOMO_REDIS_URL is not a usable Redis URL ({self._scrub(str(exc))})."
            ) from None

    def __repr__(self) -> str:
        return f"RedisBus({self._where})"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except RedisError as exc:
            detail = self._scrub(str(exc)) or type(exc).__name__
            raise StorageError(f"Redis at {self._where} failed {doing}: {detail}") from None

    def _key(self, stream: str) -> str:
        return self._prefix + stream

    async def _ensure_group(self, stream: str, group: str) -> None:
        if (stream, group) in self._groups:
            return
        try:
            await self._redis.xgroup_create(self._key(stream), group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add((stream, group))

    async def publish(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        keep = maxlen if maxlen is not None else self._maxlen
        with self._errors(f"publishing to {stream}"):
            entry_id = await self._redis.xadd(
                self._key(stream), {_FIELD: payload}, maxlen=max(keep, 1), approximate=True
            )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def consume(
        self, stream: str, *, group: str, consumer: str, count: int = 1, block_ms: int = 0
    ) -> list[Delivery]:
        block = min(block_ms, MAX_BLOCK_MS) if block_ms > 0 else None
        with self._errors(f"reading {stream} for {group}"):
            for attempt in (1, 2):
                await self._ensure_group(stream, group)
                try:
                    reply = await self._redis.xreadgroup(
                        group, consumer, {self._key(stream): ">"}, count=max(count, 1), block=block
                    )
                    break
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc) or attempt == 2:
                        raise
                    self._groups.discard((stream, group))  # Redis lost it: make it again
        out: list[Delivery] = []
        for _name, entries in _stream_items(reply):
            for entry_id, fields in entries:
                if fields is None:
                    continue
                out.append(_delivery(stream, entry_id, fields, deliveries=1))
        return out

    async def ack(self, stream: str, *entry_ids: str, group: str) -> int:
        if not entry_ids:
            return 0
        with self._errors(f"acknowledging entries of {stream}"):
            try:
                return int(await self._redis.xack(self._key(stream), group, *entry_ids))
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    return 0
                raise

    async def claim_stale(
        self, stream: str, *, group: str, consumer: str, min_idle_ms: int, count: int = 16
    ) -> list[Delivery]:
        key = self._key(stream)
        claimed: list[tuple[bytes, dict[bytes, bytes]]] = []
        with self._errors(f"claiming stale entries of {stream}"):
            await self._ensure_group(stream, group)
            cursor: Any = "0-0"
            while len(claimed) < count:
                try:
                    reply = await self._redis.xautoclaim(
                        key,
                        group,
                        consumer,
                        max(min_idle_ms, 0),
                        cursor,
                        count=count - len(claimed),
                    )
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    self._groups.discard((stream, group))
                    return []
                cursor, entries = reply[0], reply[1]
                claimed += [(i, f) for i, f in entries if f is not None]
                if cursor in (b"0-0", "0-0"):
                    break
            if not claimed:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry_id, _fields in claimed:
                    pipe.xpending_range(key, group, entry_id, entry_id, 1, consumer)
                counts = await pipe.execute()
        out = []
        for (entry_id, fields), pending in zip(claimed, counts, strict=True):
            times = int(pending[0]["times_delivered"]) if pending else 2
            out.append(_delivery(stream, entry_id, fields, deliveries=times))
        return out

    async def prune_consumers(self, stream: str, *, group: str, idle_ms: int) -> list[str]:
        key = self._key(stream)
        pruned: list[str] = []
        with self._errors(f"pruning the consumers of {stream}"):
            try:
                consumers = await self._redis.xinfo_consumers(key, group)
            except ResponseError as exc:
                if "NOGROUP" in str(exc) or "no such key" in str(exc):
                    return []
                raise
            for consumer in consumers:
                name = consumer["name"]
                name = name.decode() if isinstance(name, bytes) else str(name)
                if int(consumer["pending"]) == 0 and int(consumer["idle"]) >= idle_ms:
                    await self._redis.xgroup_delconsumer(key, group, name)
                    pruned.append(name)
        return pruned

    async def length(self, stream: str) -> int:
        with self._errors(f"measuring {stream}"):
            return int(await self._redis.xlen(self._key(stream)))

    @asynccontextmanager
    async def lock(
        self, key: str, *, ttl_ms: int = 30_000, wait_ms: int | None = None, renew: bool = True
    ) -> AsyncIterator[None]:
        if ttl_ms < 1:
            raise ValueError("ttl_ms must be at least 1")
        lock = Lock(
            self._redis,
            f"{self._prefix}lock:{key}",
            timeout=ttl_ms / 1000,
            sleep=self._lock_poll_s,
            blocking_timeout=None if wait_ms is None else wait_ms / 1000,
            thread_local=False,
        )
        with self._errors(f"taking the lock {key!r}"):
            if not await lock.acquire():
                raise TimeoutError(f"The lock {key!r} stayed held for {wait_ms} ms.")
        renewer = asyncio.create_task(self._renew(lock, key, ttl_ms)) if renew else None
        try:
            yield
        finally:
            if renewer is not None:
                renewer.cancel()
            try:
                await lock.release()
            except LockNotOwnedError:
                log.warning("the lock %r lapsed before its holder released it", key)
            except RedisError as exc:  # it lapses by itself after ttl_ms
                log.warning("could not release the lock %r: %s", key, self._scrub(str(exc)))
            if renewer is not None:
                # asyncio.wait, not `await renewer`: a cancellation of this task must
                # not be mistaken for the renewer's and swallowed
                await asyncio.wait({renewer})

    async def _renew(self, lock: Lock, key: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            try:
                await lock.reacquire()
            except LockNotOwnedError:
                log.warning("the lock %r lapsed while held (renewed too late)", key)
                return
            except RedisError as exc:
                log.warning("could not renew the lock %r: %s", key, self._scrub(str(exc)))

    async def aclose(self) -> None:
        with suppress(RedisError):
            await self._redis.aclose()


def _stream_items(reply: Any) -> list[tuple[Any, list[Any]]]:
    """XREADGROUP's reply as (stream, entries) pairs, for RESP2 lists and RESP3 maps."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [
            (name, entries[0] if entries and isinstance(entries[0], list) else entries)
            for name, entries in reply.items()
        ]
    return [(name, entries) for name, entries in reply]


def _delivery(stream: str, entry_id: Any, fields: Any, *, deliveries: int) -> Delivery:
    payload = fields.get(_FIELD, b"") if isinstance(fields, dict) else b""
    eid = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return Delivery(stream=stream, entry_id=eid, payload=payload, deliveries=deliveries)
