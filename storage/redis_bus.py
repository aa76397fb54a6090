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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError, RedisError, ResponseError

from brain.ports import Delivery
from storage.bus import DEFAULT_MAXLEN
from storage.redis_client import RedisClient

log = logging.getLogger(__name__)

_FIELD = b"p"
MAX_BLOCK_MS = 10_000  # a longer wait is cut to this, so a call never blocks for long


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
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._maxlen = maxlen
        self._prefix = prefix
        self._lock_poll_s = lock_poll_ms / 1000
        self._groups: set[tuple[str, str]] = set()
        self._client = RedisClient(
            url,
            retries=retries,
            backoff_cap_s=1.0,
            backoff_base_s=0.05,
            connect_timeout_s=5.0,
            health_check_interval_s=30,
        )
        self._redis = self._client.redis
        self._scrub = self._client.scrub
        self._errors = self._client.errors

    def __repr__(self) -> str:
        return f"RedisBus({self._client.where})"

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
        await self._client.aclose()


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
