"""Rate and size limits in the brain: one friendly note, then silence; refused messages
kept as overheard; commands limited too; on every platform but the terminal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from brain.clock import ManualClock
from brain.limits import (
    CHAT_TOO_FAST,
    PERSON_TOO_FAST,
    InMemoryRateLimiter,
    LimitConfig,
    Limits,
)
from brain.llm.stub import StubModel
from brain.messages import ChatRef, PersonRef
from brain.mind import Brain
from brain.persona.card import PersonaCard
from brain.ports import Rate, RateLimiter
from storage.ratelimit import RedisRateLimiter
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, GROUP, T0, free_port, inbound

PERSONA = PersonaCard(name="Tomo", self_description="A friend.")
SLOW = Rate(burst=2, per_second=0.1)  # two at once, then one every 10 s
WIDE = Rate(burst=100, per_second=100.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def brain_with(
    store: SqlMemoryStore, limiter: RateLimiter | None, model: StubModel | None = None, **cfg: Any
) -> Brain:
    config = LimitConfig(**{"person": SLOW, "chat": WIDE, **cfg})
    return Brain(
        store=store,
        model=model or StubModel(),
        persona=PERSONA,
        clock=ManualClock(T0 + timedelta(seconds=1)),
        limits=Limits(config, limiter=limiter),
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def limiter(clock: Clock) -> AsyncIterator[InMemoryRateLimiter]:
    lim = InMemoryRateLimiter(clock=clock)
    yield lim
    await lim.aclose()


def texts(replies: list[Any]) -> list[str]:
    return [r.text for r in replies]


async def test_over_the_limit_one_friendly_reply_then_silence(
    sqlite_store: SqlMemoryStore, limiter: InMemoryRateLimiter, clock: Clock
) -> None:
    model = StubModel()
    brain = brain_with(sqlite_store, limiter, model)
    answers = [texts(await brain.handle(inbound(f"message {i}"))) for i in range(5)]
    assert answers == [
        ["You said: message 0"],
        ["You said: message 1"],
        [PERSON_TOO_FAST],
        [],
        [],
    ]
    # the refused messages are kept (as overheard), not answered
    stored = await sqlite_store.recent_messages(DM, limit=20)
    assert [m.text for m in stored if m.role == "user"] == [f"message {i}" for i in range(5)]
    assert sum(m.role == "assistant" for m in stored) == 2
    clock.now += 10.0  # one token back
    [reply] = await brain.handle(inbound("message 5"))
    assert reply.text == "You said: message 5"
    # ... and the next answer has them in its conversation window
    prompt = "\n".join(t.content for t in model.prompts[-1])
    assert "message 3" in prompt
    assert "message 4" in prompt
    # a new stretch over the limit is told again, once
    assert texts(await brain.handle(inbound("message 6"))) == [PERSON_TOO_FAST]
    assert texts(await brain.handle(inbound("message 7"))) == []


async def test_commands_are_limited_too_and_never_stored(
    sqlite_store: SqlMemoryStore, limiter: InMemoryRateLimiter
) -> None:
    brain = brain_with(sqlite_store, limiter)
    for i in range(2):
        await brain.handle(inbound(f"hi {i}"))
    assert texts(await brain.handle(inbound("/memory list"))) == [PERSON_TOO_FAST]
    assert texts(await brain.handle(inbound("/help"))) == []
    stored = await sqlite_store.recent_messages(DM, limit=20)
    assert [m.text for m in stored if m.role == "user"] == ["hi 0", "hi 1"]


async def test_a_busy_group_is_limited_per_chat_and_people_per_person(
    sqlite_store: SqlMemoryStore, limiter: InMemoryRateLimiter
) -> None:
    brain = brain_with(sqlite_store, limiter, person=WIDE, chat=Rate(burst=3, per_second=0.1))
    carol = PersonRef(platform="telegram", user_id="3", display_name="Carol")
    said = [
        texts(await brain.handle(inbound(f"@tomo {who.display_name}", chat=GROUP, author=who)))
        for who in (ALICE, BOB, carol, ALICE, BOB)
    ]
    # in a group the model sees who spoke: "Alice: @tomo Alice"
    assert said[:3] == [
        ["You said: Alice: @tomo Alice"],
        ["You said: Bob: @tomo Bob"],
        ["You said: Carol: @tomo Carol"],
    ]
    assert said[3:] == [[CHAT_TOO_FAST], []]


async def test_overheard_messages_are_not_rate_limited_and_the_terminal_not_at_all(
    sqlite_store: SqlMemoryStore, limiter: InMemoryRateLimiter
) -> None:
    brain = brain_with(sqlite_store, limiter)
    for i in range(6):
        assert await brain.handle(inbound(f"chatter {i}", chat=GROUP, to_bot=False)) == []
    # the group's chatter took no tokens: Alice is still answered there
    answer = texts(await brain.handle(inbound("@tomo hi", chat=GROUP)))
    assert answer == ["You said: Alice: @tomo hi"]
    console = ChatRef(platform="console", chat_id="local", kind="dm")
    me = PersonRef(platform="console", user_id="me", display_name="Me")
    for i in range(6):
        [reply] = await brain.handle(inbound(f"line {i}", chat=console, author=me))
        assert reply.text == f"You said: line {i}"
    # nor is its length: the operator may paste what they like
    [long] = await brain.handle(inbound("w" * 20_000, chat=console, author=me))
    assert long.text.startswith("You said: www")


async def test_a_message_over_the_length_limit_is_refused_and_not_stored(
    sqlite_store: SqlMemoryStore, limiter: InMemoryRateLimiter
) -> None:
    brain = brain_with(sqlite_store, limiter, max_text_chars=100)
    [reply] = await brain.handle(inbound("x" * 101))
    assert reply.text == (
        "That message is 101 characters long; I can read up to 100. Could you send it in "
        "shorter parts?"
    )
    assert await brain.handle(inbound("y" * 500, chat=GROUP, to_bot=False)) == []
    assert await sqlite_store.count_messages() == 0
    [fine] = await brain.handle(inbound("z" * 100))
    assert fine.text.startswith("You said: zzz")


async def test_limiters_in_redis_are_shared_by_two_workers(
    sqlite_store: SqlMemoryStore, redis_url: str
) -> None:
    first, second = RedisRateLimiter(redis_url), RedisRateLimiter(redis_url)
    try:
        worker_a = brain_with(sqlite_store, first)
        worker_b = brain_with(sqlite_store, second)
        assert texts(await worker_a.handle(inbound("one"))) == ["You said: one"]
        assert texts(await worker_b.handle(inbound("two"))) == ["You said: two"]
        assert texts(await worker_a.handle(inbound("three"))) == [PERSON_TOO_FAST]
        assert texts(await worker_b.handle(inbound("four"))) == []
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_limiter_that_is_down_lets_messages_through(
    sqlite_store: SqlMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    down = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0")
    try:
        brain = brain_with(sqlite_store, down)
        for i in range(3):
            assert texts(await brain.handle(inbound(f"m{i}"))) == [f"You said: m{i}"]
    finally:
        await down.aclose()
    assert "rate limits unavailable" in caplog.text
