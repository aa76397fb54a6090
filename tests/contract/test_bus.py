"""The Bus contract, run on the in-process bus and on Redis Streams (a real redis-server)."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from brain.errors import ConfigError, StorageError
from brain.ports import Bus, Delivery
from storage.bus import InProcessBus, deliveries, open_bus
from storage.redis_bus import RedisBus
from tests.conftest import RedisServer, free_port

IDLE_MS = 100


def payloads(batch: list[Delivery]) -> list[bytes]:
    return [d.payload for d in batch]


async def test_both_buses_satisfy_the_port(bus: Bus) -> None:
    assert isinstance(bus, Bus)


async def test_consume_returns_entries_in_publish_order(bus: Bus) -> None:
    ids = [await bus.publish("in", f"m{i}".encode()) for i in range(5)]
    got = await bus.consume("in", group="workers", consumer="w1", count=10)
    assert payloads(got) == [f"m{i}".encode() for i in range(5)]
    assert [d.entry_id for d in got] == ids
    assert {d.stream for d in got} == {"in"}
    assert {d.deliveries for d in got} == {1}
    assert await bus.consume("in", group="workers", consumer="w1", count=10) == []
    assert await bus.length("in") == 5


async def test_count_limits_a_batch(bus: Bus) -> None:
    for i in range(5):
        await bus.publish("in", bytes([i]))
    first = await bus.consume("in", group="g", consumer="c", count=2)
    rest = await bus.consume("in", group="g", consumer="c", count=10)
    assert payloads(first) == [b"\x00", b"\x01"]
    assert payloads(rest) == [b"\x02", b"\x03", b"\x04"]


async def test_a_group_created_late_reads_what_was_published_before(bus: Bus) -> None:
    await bus.publish("in", b"early")
    got = await bus.consume("in", group="late", consumer="c")
    assert payloads(got) == [b"early"]


async def test_each_group_gets_every_entry(bus: Bus) -> None:
    await bus.publish("replies", b"r1")
    a = await bus.consume("replies", group="gateway-a", consumer="a", count=5)
    b = await bus.consume("replies", group="gateway-b", consumer="b", count=5)
    assert payloads(a) == payloads(b) == [b"r1"]


async def test_two_consumers_of_a_group_never_get_the_same_entry(bus: Bus) -> None:
    sent = {f"job{i}".encode() for i in range(30)}
    for p in sorted(sent):
        await bus.publish("in", p)

    async def drain(name: str) -> list[bytes]:
        got: list[bytes] = []
        while batch := await bus.consume("in", group="workers", consumer=name, count=3):
            got += payloads(batch)
            await asyncio.sleep(0)
        return got

    one, two = await asyncio.gather(drain("w1"), drain("w2"))
    assert not set(one) & set(two)
    assert set(one) | set(two) == sent
    assert len(one) + len(two) == len(sent)


async def test_a_blocked_consumer_wakes_on_publish_and_only_one_gets_it(bus: Bus) -> None:
    async def later() -> None:
        await asyncio.sleep(0.05)
        await bus.publish("in", b"wake")

    loop = asyncio.get_running_loop()
    started = loop.time()
    a, b, _ = await asyncio.gather(
        bus.consume("in", group="workers", consumer="w1", block_ms=500),
        bus.consume("in", group="workers", consumer="w2", block_ms=500),
        later(),
    )
    assert payloads(a) + payloads(b) == [b"wake"]
    assert loop.time() - started < 2


async def test_consume_without_block_returns_at_once(bus: Bus) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await bus.consume("empty", group="g", consumer="c", block_ms=0) == []
    assert await bus.consume("empty", group="g", consumer="c", block_ms=50) == []
    assert loop.time() - started < 1


async def test_unacked_entries_go_to_another_consumer_after_min_idle(bus: Bus) -> None:
    entry = await bus.publish("in", b"job")
    [first] = await bus.consume("in", group="workers", consumer="dead", count=1)
    assert first.deliveries == 1
    # not idle long enough yet
    assert await bus.claim_stale("in", group="workers", consumer="w2", min_idle_ms=5000) == []
    await asyncio.sleep(IDLE_MS * 1.5 / 1000)
    [again] = await bus.claim_stale("in", group="workers", consumer="w2", min_idle_ms=IDLE_MS)
    assert (again.entry_id, again.payload, again.deliveries) == (entry, b"job", 2)
    # a claim resets the idle time: nobody takes it straight back
    assert await bus.claim_stale("in", group="workers", consumer="w3", min_idle_ms=IDLE_MS) == []
    await asyncio.sleep(IDLE_MS * 1.5 / 1000)
    [third] = await bus.claim_stale("in", group="workers", consumer="w3", min_idle_ms=IDLE_MS)
    assert third.deliveries == 3
    # claimed entries are not new: consume does not hand them out again
    assert await bus.consume("in", group="workers", consumer="w4") == []


async def test_ack_removes_an_entry_from_pending(bus: Bus) -> None:
    ids = [await bus.publish("in", p) for p in (b"a", b"b")]
    got = await bus.consume("in", group="workers", consumer="w1", count=2)
    assert await bus.ack("in", got[0].entry_id, group="workers") == 1
    assert await bus.ack("in", got[0].entry_id, group="workers") == 0
    assert await bus.ack("in", group="workers") == 0
    assert await bus.ack("in", ids[1], group="other-group") == 0
    await asyncio.sleep(IDLE_MS * 1.5 / 1000)
    stale = await bus.claim_stale("in", group="workers", consumer="w2", min_idle_ms=IDLE_MS)
    assert [d.entry_id for d in stale] == [ids[1]]
    assert await bus.ack("in", *[d.entry_id for d in stale], group="workers") == 1
    await asyncio.sleep(IDLE_MS * 1.5 / 1000)
    assert await bus.claim_stale("in", group="workers", consumer="w3", min_idle_ms=IDLE_MS) == []


async def test_idle_consumers_with_nothing_pending_are_pruned(bus: Bus) -> None:
    """Each worker process is a new consumer name: the dead ones are forgotten, never one
    that still holds an entry (its entry would be lost from the pending list)."""

    async def take_and_finish(consumer: str) -> None:
        await bus.publish("s", consumer.encode())
        [entry] = await bus.consume("s", group="g", consumer=consumer, count=1)
        await bus.ack("s", entry.entry_id, group="g")

    await take_and_finish("finished")
    await bus.publish("s", b"held")
    [held] = await bus.consume("s", group="g", consumer="holding", count=1)
    await take_and_finish("alive")
    assert await bus.prune_consumers("s", group="g", idle_ms=60_000) == []  # all recent
    await asyncio.sleep(0.25)
    await take_and_finish("alive")  # seen just now
    assert await bus.prune_consumers("s", group="g", idle_ms=200) == ["finished"]
    assert await bus.prune_consumers("s", group="g", idle_ms=200) == []
    # the holder's entry is still pending and can be taken over
    [taken] = await bus.claim_stale("s", group="g", consumer="heir", min_idle_ms=0)
    assert taken.entry_id == held.entry_id
    assert await bus.prune_consumers("nothing", group="g", idle_ms=0) == []


async def test_claim_respects_count(bus: Bus) -> None:
    for i in range(5):
        await bus.publish("in", bytes([i]))
    await bus.consume("in", group="g", consumer="dead", count=5)
    await asyncio.sleep(IDLE_MS * 1.5 / 1000)
    got = await bus.claim_stale("in", group="g", consumer="c", min_idle_ms=IDLE_MS, count=2)
    assert payloads(got) == [b"\x00", b"\x01"]


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        bytes(range(256)),
        '{"text": "こんにちは 👋"}'.encode(),
        b"\r\n*3\r\n$4\r\nPING\r\n\x00",
        bytes(range(256)) * 2048,
    ],
    ids=["empty", "all-bytes", "utf8-json", "resp-lookalike", "half-megabyte"],
)
async def test_payload_bytes_round_trip_exactly(bus: Bus, payload: bytes) -> None:
    await bus.publish("in", payload)
    [got] = await bus.consume("in", group="g", consumer="c")
    assert got.payload == payload
    assert type(got.payload) is bytes


async def test_streams_are_trimmed_to_about_maxlen(bus: Bus) -> None:
    for i in range(300):
        await bus.publish("in", str(i).encode(), maxlen=10)
    length = await bus.length("in")
    assert 10 <= length <= 110  # Redis trims whole nodes (100 entries) at a time
    got = await bus.consume("in", group="late", consumer="c", count=500)
    assert len(got) == length
    assert got[-1].payload == b"299"
    assert got[0].payload != b"0"


async def test_the_default_maxlen_applies(bus: Bus) -> None:
    for i in range(1300):  # the fixtures' buses keep about 1000
        await bus.publish("in", str(i).encode())
    assert 1000 <= await bus.length("in") < 1300


async def test_the_lock_excludes_a_second_holder_of_the_same_key_only(bus: Bus) -> None:
    async with bus.lock("chat:1", ttl_ms=1000):
        with pytest.raises(TimeoutError):
            async with bus.lock("chat:1", ttl_ms=1000, wait_ms=100):
                pytest.fail("two holders of one lock")
        async with bus.lock("chat:2", ttl_ms=1000, wait_ms=100):
            pass
    async with bus.lock("chat:1", ttl_ms=1000, wait_ms=100):
        pass


async def test_a_waiter_gets_the_lock_when_the_holder_releases_it(bus: Bus) -> None:
    events: list[str] = []

    async def holder() -> None:
        async with bus.lock("chat:1", ttl_ms=1000):
            events.append("a in")
            await asyncio.sleep(0.1)
            events.append("a out")

    async def waiter() -> None:
        await asyncio.sleep(0.02)
        async with bus.lock("chat:1", ttl_ms=1000, wait_ms=2000):
            events.append("b in")

    await asyncio.gather(holder(), waiter())
    assert events == ["a in", "a out", "b in"]


async def test_a_held_lock_is_renewed_past_its_ttl(bus: Bus) -> None:
    async with bus.lock("chat:1", ttl_ms=150):
        await asyncio.sleep(0.4)  # well past the ttl
        with pytest.raises(TimeoutError):
            async with bus.lock("chat:1", ttl_ms=150, wait_ms=200):
                pytest.fail("the renewed lock lapsed")


async def test_a_lock_nobody_renews_lapses_and_only_its_owner_releases_it(bus: Bus) -> None:
    # renew=False stands for a holder that died: nobody renews its lock
    events: list[str] = []

    async def dead_holder() -> None:
        async with bus.lock("chat:1", ttl_ms=100, renew=False):
            events.append("dead in")
            await asyncio.sleep(0.4)
        events.append("dead out")  # its release must not free the next holder's lock

    async def next_holder() -> None:
        await asyncio.sleep(0.02)
        async with bus.lock("chat:1", ttl_ms=2000, wait_ms=2000):
            events.append("next in")
            await asyncio.sleep(0.5)
            with pytest.raises(TimeoutError):
                async with bus.lock("chat:1", ttl_ms=1000, wait_ms=50):
                    pytest.fail("the lapsed holder released someone else's lock")
            events.append("next out")

    await asyncio.gather(dead_holder(), next_holder())
    assert events == ["dead in", "next in", "dead out", "next out"]


async def test_the_lock_is_released_when_the_body_raises(bus: Bus) -> None:
    with pytest.raises(RuntimeError):
        async with bus.lock("chat:1", ttl_ms=1000):
            raise RuntimeError("boom")
    async with bus.lock("chat:1", ttl_ms=1000, wait_ms=50):
        pass


async def test_the_delivery_loop_takes_over_a_dead_consumers_entries(bus: Bus) -> None:
    await bus.publish("in", b"orphan")
    await bus.consume("in", group="workers", consumer="dead")
    await bus.publish("in", b"fresh")
    got: list[Delivery] = []
    loop = deliveries(bus, "in", group="workers", consumer="w2", block_ms=50, claim_idle_ms=IDLE_MS)
    async with asyncio.timeout(5):
        async for d in loop:
            got.append(d)
            await bus.ack("in", d.entry_id, group="workers")
            if {x.payload for x in got} == {b"orphan", b"fresh"}:
                break
    await loop.aclose()
    by_payload = {d.payload: d.deliveries for d in got}
    assert by_payload == {b"fresh": 1, b"orphan": 2}


async def test_a_delivery_loop_stops_promptly_when_cancelled_at_any_point(bus: Bus) -> None:
    # a worker shutting down cancels its loop; no await inside may swallow that
    handled = 0
    first = asyncio.Event()

    async def work() -> None:
        nonlocal handled
        async for d in deliveries(bus, "in", group="g", consumer="c", block_ms=20):
            async with bus.lock("chat:1", ttl_ms=1000):
                await bus.ack("in", d.entry_id, group="g")
            handled += 1
            first.set()

    for i in range(12):
        task = asyncio.create_task(work())
        for _ in range(3):
            await bus.publish("in", b"job")
        await asyncio.sleep(0.002 * i)
        if i == 11:
            # on a busy machine the short sleeps may cancel every loop before its first
            # entry: let the last one get going, so cancelling mid-work is covered too
            async with asyncio.timeout(5):
                await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(2):
                await task
    assert handled > 0


async def test_open_bus_picks_the_implementation() -> None:
    embedded = open_bus(None)
    assert isinstance(embedded, InProcessBus)
    await embedded.aclose()
    remote = open_bus("redis://127.0.0.1:1/0")
    assert isinstance(remote, RedisBus)
    await remote.aclose()


# Redis only


async def test_a_lock_left_by_a_dead_process_lapses_after_its_ttl(
    redis_bus: RedisBus, redis_url: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        await client.set("tomo:lock:chat:9", b"token-of-a-dead-worker", px=150)
    finally:
        await client.aclose()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with redis_bus.lock("chat:9", ttl_ms=1000, wait_ms=2000):
        waited = loop.time() - started
    assert 0.1 <= waited < 1.5


@pytest.fixture
def redis_user(redis_url: str) -> Iterator[tuple[str, str]]:
    """An ACL user with a password on the session's Redis."""
    client = redis.Redis.from_url(redis_url)
    name, password = "tomo-test", "s3cret-Pa55word"
    client.acl_setuser(
        name, enabled=True, passwords=[f"+{password}"], keys="*", channels="*", commands=["+@all"]
    )
    try:
        yield name, password
    finally:
        client.acl_deluser(name)
        client.close()


def shown(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


async def test_a_password_in_the_url_never_reaches_errors_or_logs(
    redis_server: RedisServer, redis_user: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    name, password = redis_user
    where = f"127.0.0.1:{redis_server.port}/0"
    good = RedisBus(f"redis://{name}:{password}@{where}", retries=1)
    try:
        await good.publish("in", b"authenticated")
        assert await good.length("in") == 1
        assert password not in repr(good)
    finally:
        await good.aclose()

    wrong = RedisBus(f"redis://{name}:wrong-{password}@{where}", retries=1)
    with pytest.raises(StorageError) as info:
        await wrong.publish("in", b"x")
    await wrong.aclose()
    assert f"127.0.0.1:{redis_server.port}" in str(info.value)
    assert password not in shown(info.value)

    down = RedisBus(f"redis://:{password}@127.0.0.1:{free_port()}/0", retries=1)
    with caplog.at_level(logging.DEBUG):
        loop = deliveries(down, "in", group="g", consumer="c", block_ms=10, max_backoff_s=0.05)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await anext(loop)
        await loop.aclose()
        with pytest.raises(StorageError) as info:
            await down.consume("in", group="g", consumer="c")
    await down.aclose()
    assert password not in shown(info.value)
    assert "bus unavailable" in caplog.text
    assert password not in caplog.text

    with pytest.raises(ConfigError) as config:
        RedisBus(f"http://user:{password}@example.invalid/0")
    assert password not in shown(config.value)


@pytest.mark.parametrize("aof", [True, False], ids=["persistent", "volatile"])
async def test_a_consumer_loop_survives_a_redis_restart(tmp_path: Path, *, aof: bool) -> None:
    server = RedisServer(tmp_path, aof=aof)
    server.start()
    publisher, worker = RedisBus(server.url), RedisBus(server.url)
    got: list[bytes] = []
    arrived = asyncio.Event()

    async def consume() -> None:
        loop = deliveries(
            worker, "in", group="workers", consumer="w1", block_ms=100, max_backoff_s=0.2
        )
        async for d in loop:
            got.append(d.payload)
            arrived.set()
            await worker.ack("in", d.entry_id, group="workers")

    task = asyncio.create_task(consume())
    try:
        await publisher.publish("in", b"before")
        async with asyncio.timeout(5):
            await arrived.wait()
        arrived.clear()
        await asyncio.sleep(0.05)  # let the ack land
        server.stop()
        await asyncio.sleep(0.3)  # the worker finds Redis gone
        server.start()
        await publisher.publish("in", b"after")
        async with asyncio.timeout(10):
            while b"after" not in got:
                await arrived.wait()
                arrived.clear()
        assert got == [b"before", b"after"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(5):  # a loop that cannot be stopped fails here
                await task
        await publisher.aclose()
        await worker.aclose()
        server.stop()
