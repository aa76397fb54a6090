"""The brain pipeline on a real SQLite store with an instant stub model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from brain.clock import ManualClock
from brain.errors import ModelError
from brain.llm.stub import StubModel
from brain.mind import Brain, BrainConfig, ChatLocks
from brain.persona.card import PersonaCard
from brain.ports import ChatTurn
from storage.sql import SqlMemoryStore
from tests.conftest import BOB, DM, GROUP, T0, inbound

PERSONA = PersonaCard(name="Tomo", self_description="A friend.")


def make_brain(store: SqlMemoryStore, model: Any = None, **cfg: Any) -> Brain:
    return Brain(
        store=store,
        model=model or StubModel(),
        persona=PERSONA,
        clock=ManualClock(T0 + timedelta(seconds=1)),
        config=BrainConfig(**cfg),
    )


async def test_a_message_gets_a_reply_and_both_are_stored(sqlite_store: SqlMemoryStore) -> None:
    brain = make_brain(sqlite_store)
    [reply] = await brain.handle(inbound("hello there", msg_id="m1"))
    assert reply.text == "You said: hello there"
    assert reply.reply_to == "m1"
    assert reply.chat == DM
    stored = await sqlite_store.recent_messages(DM, limit=10)
    assert [(m.role, m.text) for m in stored] == [
        ("user", "hello there"),
        ("assistant", "You said: hello there"),
    ]
    assert stored[1].answers_id == stored[0].id


async def test_the_same_inbound_twice_gives_one_reply(sqlite_store: SqlMemoryStore) -> None:
    brain = make_brain(sqlite_store)
    msg = inbound("hi", msg_id="same")
    first = await brain.handle(msg)
    second = await brain.handle(msg)
    assert len(first) == 1
    assert second == []
    assert await sqlite_store.count_messages(DM) == 2


async def test_concurrent_duplicates_give_one_reply(sqlite_store: SqlMemoryStore) -> None:
    brain = make_brain(sqlite_store)
    msg = inbound("hi", msg_id="race")
    results = await asyncio.gather(*(brain.handle(msg) for _ in range(5)))
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, 1]
    assert await sqlite_store.count_messages(DM) == 2


class FailingOnce(StubModel):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        self.calls += 1
        if self.calls == 1:
            raise ModelError("the model fell over")
        return await super().complete(turns, max_tokens=max_tokens)


async def test_a_crash_mid_reply_loses_nothing(sqlite_store: SqlMemoryStore) -> None:
    brain = make_brain(sqlite_store, FailingOnce())
    msg = inbound("remember me", msg_id="m1")
    with pytest.raises(ModelError):
        await brain.handle(msg)
    assert [m.text for m in await sqlite_store.recent_messages(DM, limit=5)] == ["remember me"]
    [reply] = await brain.handle(msg)  # redelivery answers it, once
    assert reply.text == "You said: remember me"
    assert await brain.handle(msg) == []


async def test_overheard_group_messages_are_stored_not_answered(
    sqlite_store: SqlMemoryStore,
) -> None:
    model = StubModel()
    brain = make_brain(sqlite_store, model)
    assert await brain.handle(inbound("chatting", chat=GROUP, author=BOB, to_bot=False)) == []
    assert model.prompts == []
    [reply] = await brain.handle(inbound("and you?", chat=GROUP))
    prompt = [t.content for t in model.prompts[0]]
    assert prompt[-2:] == ["Bob: chatting", "Alice: and you?"]
    assert reply.chat == GROUP


async def test_blank_messages_are_ignored(sqlite_store: SqlMemoryStore) -> None:
    brain = make_brain(sqlite_store)
    assert await brain.handle(inbound("  \n\t ")) == []
    assert await sqlite_store.count_messages() == 0


async def test_huge_message_stored_whole_but_cut_for_the_model(
    sqlite_store: SqlMemoryStore,
) -> None:
    model = StubModel()
    brain = make_brain(sqlite_store, model, max_message_chars=1000)
    big = "abcdefghij" * 10_000
    await brain.handle(inbound(big))
    stored = await sqlite_store.recent_messages(DM, limit=5)
    assert stored[0].text == big
    assert len(model.prompts[0][-1].content) == 1000


async def test_history_survives_a_new_brain(sqlite_store: SqlMemoryStore) -> None:
    await make_brain(sqlite_store).handle(inbound("my cat is Miso", sent_at=T0))
    model = StubModel()
    later = T0 + timedelta(minutes=5)
    await make_brain(sqlite_store, model).handle(inbound("what is my cat called?", sent_at=later))
    contents = [t.content for t in model.prompts[0]]
    assert "my cat is Miso" in contents
    assert "You said: my cat is Miso" in contents


async def test_commands_are_answered_without_the_model(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel()
    brain = make_brain(sqlite_store, model)
    [help_reply] = await brain.handle(inbound("/help"))
    [unknown] = await brain.handle(inbound("/frobnicate now"))
    assert "/help" in help_reply.text
    assert unknown.text == "Unknown command /frobnicate. Try /help."
    assert model.prompts == []


async def test_streaming_sends_tokens_and_stores_the_whole(sqlite_store: SqlMemoryStore) -> None:
    brain = make_brain(sqlite_store)
    pieces: list[str] = []

    async def sink(piece: str) -> None:
        pieces.append(piece)

    [reply] = await brain.handle(inbound("one two three"), on_token=sink)
    assert len(pieces) > 1
    assert "".join(pieces) == reply.text == "You said: one two three"


class SlowModel(StubModel):
    """Records how many generations run at once, per chat and overall."""

    def __init__(self) -> None:
        super().__init__()
        self.active: dict[str, int] = {}
        self.max_per_chat = 0
        self.max_overall = 0

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        key = "group" if "group chat" in turns[0].content else "dm"
        self.active[key] = self.active.get(key, 0) + 1
        self.max_per_chat = max(self.max_per_chat, self.active[key])
        self.max_overall = max(self.max_overall, sum(self.active.values()))
        await asyncio.sleep(0.02)
        self.active[key] -= 1
        return await super().complete(turns, max_tokens=max_tokens)

    def stream(
        self, turns: Sequence[ChatTurn], *, max_tokens: int, temperature: float = 0.7
    ) -> AsyncIterator[str]:
        raise NotImplementedError


async def test_one_chat_at_a_time_but_chats_in_parallel(sqlite_store: SqlMemoryStore) -> None:
    model = SlowModel()
    brain = make_brain(sqlite_store, model)
    jobs = [brain.handle(inbound(f"dm {i}")) for i in range(4)]
    jobs += [brain.handle(inbound(f"group {i}", chat=GROUP)) for i in range(4)]
    results = await asyncio.gather(*jobs)
    assert all(len(r) == 1 for r in results)
    assert model.max_per_chat == 1
    assert model.max_overall == 2
    assert len(brain.locks) == 0  # no lock left behind


async def test_chat_locks_release_on_error() -> None:
    locks = ChatLocks()
    with pytest.raises(RuntimeError):
        async with locks.hold(DM):
            raise RuntimeError("boom")
    assert len(locks) == 0


async def test_time_facts_use_the_clock_and_first_meeting(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel()
    brain = Brain(
        store=sqlite_store,
        model=model,
        persona=PERSONA,
        clock=ManualClock(datetime(2026, 3, 4, 9, 30, tzinfo=UTC)),
    )
    await brain.handle(inbound("hey", sent_at=datetime(2026, 3, 4, 9, 29, tzinfo=UTC)))
    system = model.prompts[0][0].content
    assert "Now: Wednesday 04 March 2026, 09:30 UTC." in system
    assert "This conversation started: Wednesday 04 March 2026, 09:29 UTC." in system
    assert "You first met Alice on 04 March 2026." in system
