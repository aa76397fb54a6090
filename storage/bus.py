"""The Bus port in one process (the embedded default), and what every bus shares.

`InProcessBus` keeps streams, consumer groups and locks in this process's memory with
the same semantics as the Redis bus (storage/redis_bus.py): entries stay pending until
acked, `claim_stale` hands entries idle too long to another consumer and counts the
delivery, streams are trimmed to about `maxlen` entries, and a lock is held by one
owner at a time. `open_bus` picks the implementation from TOMO_REDIS_URL and
`deliveries` is the consume loop a worker or gateway runs on either.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from pydantic import SecretStr

from brain.errors import StorageError
from brain.ports import Bus, Delivery

log = logging.getLogger(__name__)

DEFAULT_MAXLEN = 100_000  # entries a stream keeps (approximately) unless told otherwise


def open_bus(redis_url: SecretStr | str | None, *, maxlen: int = DEFAULT_MAXLEN) -> Bus:
    """The Redis bus when a URL is set, else the in-process one."""
    if redis_url is None:
        return InProcessBus(maxlen=maxlen)
    from storage.redis_bus import RedisBus

    return RedisBus(redis_url, maxlen=maxlen)


async def deliveries(
    bus: Bus,
    stream: str,
    *,
    group: str,
    consumer: str,
    count: int = 16,
    block_ms: int = 1_000,
    claim_idle_ms: int = 30_000,
    max_backoff_s: float = 5.0,
) -> AsyncGenerator[Delivery, None]:
    """Every entry for this consumer, forever: entries a dead consumer left pending
    longer than `claim_idle_ms` first (looked for every claim_idle_ms / 2), then new
    ones. When the bus fails (Redis down or restarting) the loop logs, waits with
    capped exponential backoff and goes on. Ack each delivery once it is handled;
    cancel the task to stop."""
    loop = asyncio.get_running_loop()
    backoff = 0.05
    next_claim = 0.0
    while True:
        try:
            batch: list[Delivery] = []
            if loop.time() >= next_claim:
                batch = await bus.claim_stale(
                    stream, group=group, consumer=consumer, min_idle_ms=claim_idle_ms, count=count
                )
                next_claim = loop.time() + claim_idle_ms / 2000
                if batch:
                    log.info("%s took over %d stale entries of %s", consumer, len(batch), stream)
            if not batch:
                batch = await bus.consume(
                    stream, group=group, consumer=consumer, count=count, block_ms=block_ms
                )
        except StorageError as exc:
            log.warning("bus unavailable for %s (%s); retrying in %.2f s", stream, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
            next_claim = 0.0
            continue
        backoff = 0.05
        for delivery in batch:
            yield delivery


@dataclass
class _Pending:
    consumer: str
    since: float  # loop time of the last delivery
    deliveries: int


@dataclass
class _Group:
    last_seq: int = 0  # the newest entry handed to any consumer of the group
    pending: dict[int, _Pending] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # consumer: loop time last seen


@dataclass
class _Stream:
    entries: deque[bytes] = field(default_factory=deque)
    first_seq: int = 1  # the sequence number of entries[0]
    last_seq: int = 0
    groups: dict[str, _Group] = field(default_factory=dict)
    published: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Held:
    token: str
    expires_at: float  # loop time; inf while renewed
    released: asyncio.Event = field(default_factory=asyncio.Event)


def _entry_id(seq: int) -> str:
    return f"{seq}-0"


def _seq(entry_id: str) -> int | None:
    head, _, tail = entry_id.partition("-")
    if not head.isdigit() or tail not in ("", "0"):
        return None
    return int(head)


class InProcessBus:
    """The Bus port in this process's memory: one asyncio event loop, no persistence."""

    def __init__(self, *, maxlen: int = DEFAULT_MAXLEN) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._maxlen = maxlen
        self._streams: dict[str, _Stream] = {}
        self._locks: dict[str, _Held] = {}
        self._closed = False

    def _stream(self, name: str) -> _Stream:
        if self._closed:
            raise StorageError("The in-process bus is closed.")
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    async def publish(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        s = self._stream(stream)
        s.last_seq += 1
        s.entries.append(bytes(payload))
        keep = maxlen if maxlen is not None else self._maxlen
        while len(s.entries) > max(keep, 1):
            s.entries.popleft()
            s.first_seq += 1
        s.published.set()
        s.published = asyncio.Event()
        return _entry_id(s.last_seq)

    async def consume(
        self, stream: str, *, group: str, consumer: str, count: int = 1, block_ms: int = 0
    ) -> list[Delivery]:
        s = self._stream(stream)
        g = s.groups.setdefault(group, _Group())
        loop = asyncio.get_running_loop()
        g.seen[consumer] = loop.time()
        deadline = loop.time() + max(block_ms, 0) / 1000
        while True:
            start = max(g.last_seq + 1, s.first_seq)
            if start <= s.last_seq:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            try:
                async with asyncio.timeout(remaining):
                    await s.published.wait()
            except TimeoutError:
                return []
            if self._closed:
                return []
        end = min(start + max(count, 1) - 1, s.last_seq)
        now = loop.time()
        out = []
        for seq in range(start, end + 1):
            g.pending[seq] = _Pending(consumer=consumer, since=now, deliveries=1)
            out.append(
                Delivery(
                    stream=stream,
                    entry_id=_entry_id(seq),
                    payload=s.entries[seq - s.first_seq],
                    deliveries=1,
                )
            )
        g.last_seq = end
        return out

    async def ack(self, stream: str, *entry_ids: str, group: str) -> int:
        g = self._stream(stream).groups.get(group)
        if g is None:
            return 0
        done = 0
        for entry_id in entry_ids:
            seq = _seq(entry_id)
            if seq is not None and g.pending.pop(seq, None) is not None:
                done += 1
        return done

    async def claim_stale(
        self, stream: str, *, group: str, consumer: str, min_idle_ms: int, count: int = 16
    ) -> list[Delivery]:
        s = self._stream(stream)
        g = s.groups.setdefault(group, _Group())
        now = asyncio.get_running_loop().time()
        g.seen[consumer] = now
        out: list[Delivery] = []
        for seq in sorted(g.pending):
            if len(out) >= count:
                break
            p = g.pending[seq]
            if (now - p.since) * 1000 < min_idle_ms:
                continue
            if seq < s.first_seq:  # trimmed away while pending: nothing left to hand on
                del g.pending[seq]
                continue
            p.consumer, p.since, p.deliveries = consumer, now, p.deliveries + 1
            payload = s.entries[seq - s.first_seq]
            out.append(
                Delivery(
                    stream=stream, entry_id=_entry_id(seq), payload=payload, deliveries=p.deliveries
                )
            )
        return out

    async def length(self, stream: str) -> int:
        return len(self._stream(stream).entries)

    async def prune_consumers(self, stream: str, *, group: str, idle_ms: int) -> list[str]:
        g = self._stream(stream).groups.get(group)
        if g is None:
            return []
        now = asyncio.get_running_loop().time()
        busy = {p.consumer for p in g.pending.values()}
        pruned = [
            name
            for name, seen in g.seen.items()
            if name not in busy and (now - seen) * 1000 >= idle_ms
        ]
        for name in pruned:
            del g.seen[name]
        return sorted(pruned)

    @asynccontextmanager
    async def lock(
        self, key: str, *, ttl_ms: int = 30_000, wait_ms: int | None = None, renew: bool = True
    ) -> AsyncIterator[None]:
        if ttl_ms < 1:
            raise ValueError("ttl_ms must be at least 1")
        loop = asyncio.get_running_loop()
        deadline = math.inf if wait_ms is None else loop.time() + wait_ms / 1000
        while True:
            if self._closed:
                raise StorageError("The in-process bus is closed.")
            now = loop.time()
            held = self._locks.get(key)
            if held is None or held.expires_at <= now:
                break
            if now >= deadline:
                raise TimeoutError(f"The lock {key!r} stayed held for {wait_ms} ms.")
            wait = min(held.expires_at, deadline) - now
            try:
                async with asyncio.timeout(None if math.isinf(wait) else wait):
                    await held.released.wait()
            except TimeoutError:
                pass
        mine = _Held(
            token=uuid.uuid4().hex,
            expires_at=math.inf if renew else loop.time() + ttl_ms / 1000,
        )
        self._locks[key] = mine
        try:
            yield
        finally:
            if self._locks.get(key) is mine:
                del self._locks[key]
            else:
                log.warning("the lock %r lapsed before its holder released it", key)
            mine.released.set()

    async def aclose(self) -> None:
        self._closed = True
        for s in self._streams.values():
            s.published.set()
        for held in self._locks.values():
            held.released.set()
