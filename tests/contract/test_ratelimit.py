"""The RateLimiter port: one suite on the in-process limiter and on Redis (real server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from brain.errors import StorageError
from brain.limits import InMemoryRateLimiter
from brain.ports import Rate, RateLimiter
from storage.ratelimit import RedisRateLimiter
from tests.conftest import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Make = Callable[[], RateLimiter]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest, clock: Clock) -> AsyncIterator[Make]:
    """Limiters on one shared store: the same process's buckets for `memory`, one Redis
    for `redis` (each call a new client: another worker)."""
    made: list[RateLimiter] = []
    if request.param == "memory":
        shared = InMemoryRateLimiter(clock=clock)
        made.append(shared)

        def make() -> RateLimiter:
            return shared
    else:
        url = request.getfixturevalue("redis_url")

        def make() -> RateLimiter:
            limiter = RedisRateLimiter(url, clock=clock)
            made.append(limiter)
            return limiter

    yield make
    for limiter in made:
        await limiter.aclose()


async def test_burst_then_refusal_warned_once_then_refill(make: Make, clock: Clock) -> None:
    limiter = make()
    rate = Rate(burst=3, per_second=0.5)
    got = [await limiter.take({"person:telegram:1": rate}) for _ in range(5)]
    assert [a.allowed for a in got] == [True, True, True, False, False]
    assert [a.warn for a in got] == [False, False, False, True, False]
    assert got[3].limited_by == "person:telegram:1"
    assert got[3].retry_after_s == pytest.approx(2.0)
    clock.now += 1.0  # half a token
    half = await limiter.take({"person:telegram:1": rate})
    assert (half.allowed, half.warn) == (False, False)
    assert half.retry_after_s == pytest.approx(1.0)
    clock.now += 1.0
    assert (await limiter.take({"person:telegram:1": rate})).allowed
    again = await limiter.take({"person:telegram:1": rate})
    assert (again.allowed, again.warn) == (False, True)  # a new stretch: told again


async def test_all_or_none_and_the_first_empty_bucket_named(make: Make, clock: Clock) -> None:
    limiter = make()
    person, chat = Rate(burst=5, per_second=1.0), Rate(burst=2, per_second=1.0)
    for _ in range(2):
        assert (await limiter.take({"person:x": person, "chat:g": chat})).allowed
    refused = await limiter.take({"person:x": person, "chat:g": chat})
    assert (refused.allowed, refused.limited_by) == (False, "chat:g")
    # person:x kept its tokens: 3 left, on its own it goes through three times
    assert [(await limiter.take({"person:x": person})).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]


async def test_limiters_of_two_workers_share_the_buckets(make: Make) -> None:
    first, second = make(), make()
    rate = Rate(burst=4, per_second=0.01)
    takes = [
        first.take({"chat:g": rate}) if i % 2 else second.take({"chat:g": rate}) for i in range(12)
    ]
    results = await asyncio.gather(*takes)
    assert sum(a.allowed for a in results) == 4  # atomic: never a token spent twice
    assert sum(a.warn for a in results) == 1


async def test_redis_buckets_live_under_tomo_with_a_ttl(redis_url: str, clock: Clock) -> None:
    limiter = RedisRateLimiter(redis_url, clock=clock)
    try:
        await limiter.take({"person:telegram:7": Rate(burst=2, per_second=0.5)})
    finally:
        await limiter.aclose()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys("*") == [b"tomo:limit:person:telegram:7"]
        ttl_ms = client.pttl("tomo:limit:person:telegram:7")
        # one token spent: full again after 2 s, plus a second of slack
        assert 2_000 < ttl_ms <= 3_000
    finally:
        client.close()


async def test_redis_uses_its_own_clock_by_default(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url)
    rate = Rate(burst=1, per_second=20.0)  # a token every 50 ms
    try:
        assert (await limiter.take({"k": rate})).allowed
        assert not (await limiter.take({"k": rate})).allowed
        started = time.monotonic()
        while not (await limiter.take({"k": rate})).allowed:
            assert time.monotonic() - started < 2.0
            await asyncio.sleep(0.01)
        assert time.monotonic() - started >= 0.03
    finally:
        await limiter.aclose()


async def test_redis_down_is_a_storage_error_without_the_password() -> None:
    limiter = RedisRateLimiter(f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StorageError) as caught:
            await limiter.take({"k": Rate(burst=1, per_second=1.0)})
    finally:
        await limiter.aclose()
    assert "s3cret-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
