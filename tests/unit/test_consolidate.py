"""Consolidation plumbing on real SQLite and Postgres stores with a scripted stub model.

The model's cleverness is not tested: it answers what each test scripts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from brain.clock import ManualClock
from brain.errors import ConfigError, ModelError
from brain.llm.stub import StubModel
from brain.memory.consolidate import ConsolidationConfig, Consolidator
from brain.memory.embed import HashEmbedder
from brain.memory.extract import parse_candidates
from brain.memory.recall import Recall
from brain.messages import ChatRef, PersonRef, Text
from brain.persona.card import PersonaCard
from brain.ports import ChatTurn, NewMessage, StoredMessage
from brain.prompt import TRUNCATION_MARK
from storage.longterm import SqlLongTermStore
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, GROUP, T0

PERSONA = PersonaCard(name="Tomo", self_description="A friend.")
GROUP_SCOPE = "group:telegram:-200"


def answer(*memories: Mapping[str, Any]) -> dict[str, Any]:
    return {"memories": list(memories)}


def mem(text: str, *about: str, importance: float = 0.5) -> dict[str, Any]:
    return {"text": text, "about": list(about), "importance": importance}


class BrokenModel(StubModel):
    """Fails (like a server going away) on its `fail_at`-th call."""

    def __init__(self, *, fail_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_at = fail_at
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
        if self.calls == self.fail_at:
            raise ModelError("the model server went away")
        return await super().complete(
            turns, max_tokens=max_tokens, temperature=temperature, json_schema=json_schema
        )


@dataclass
class World:
    store: SqlMemoryStore
    longterm: SqlLongTermStore
    clock: ManualClock
    recall: Recall

    def consolidator(self, model: StubModel, **cfg: Any) -> Consolidator:
        embedder = self.recall.embedder
        return Consolidator(
            store=self.store,
            longterm=self.longterm,
            model=model,
            embedder=embedder,
            recall=self.recall,
            persona=PERSONA,
            clock=self.clock,
            config=ConsolidationConfig(**cfg),
        )

    async def say(
        self, who: PersonRef | None, text: str, *, chat: ChatRef = GROUP, at: datetime = T0
    ) -> StoredMessage:
        person = None if who is None else await self.store.resolve_person(who, seen_at=at)
        stored, _ = await self.store.add_message(
            NewMessage(
                chat=chat,
                author=person,
                role="user" if person else "assistant",
                platform_message_id=None,
                text=text,
                segments=(Text(text=text),),
                sent_at=at,
            )
        )
        return stored

    async def pid(self, who: PersonRef) -> int:
        return (await self.store.resolve_person(who, seen_at=T0)).id


def _world(store: SqlMemoryStore) -> World:
    longterm = SqlLongTermStore(store.db)
    return World(
        store=store,
        longterm=longterm,
        clock=ManualClock(T0 + timedelta(hours=9)),
        recall=Recall(store=longterm, embedder=HashEmbedder()),
    )


@pytest.fixture
def world(store: SqlMemoryStore) -> World:
    """On SQLite and on Postgres."""
    return _world(store)


@pytest.fixture
def sqlite_world(sqlite_store: SqlMemoryStore) -> World:
    return _world(sqlite_store)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


# extraction -------------------------------------------------------------------------


async def test_group_memories_have_provenance_about_scope_and_a_speaker(world: World) -> None:
    a = await world.say(ALICE, "My sister May moves to Osaka in June", at=minutes(0))
    b = await world.say(BOB, "I adopted a kitten, her name is Mochi", at=minutes(1))
    await world.say(None, "Congratulations to you both!", at=minutes(2))
    # A cached recall index of the group must see the new memories afterwards.
    assert await world.recall.search("Mochi kitten", scopes=[GROUP_SCOPE]) == []
    model = StubModel(
        json_answers=[
            answer(
                mem("Alice's sister May moves to Osaka in June", "Alice", importance=0.7),
                mem("Adopted a kitten called Mochi", "Bob"),
            )
        ]
    )
    report = await world.consolidator(model).consolidate_chat(GROUP)

    assert (report.messages_read, report.memories_added, report.memories_merged) == (3, 2, 0)
    first, second = await world.longterm.memories_in_scope(GROUP_SCOPE)
    assert first.text == "Alice's sister May moves to Osaka in June"
    assert first.about == (await world.pid(ALICE),)
    assert first.source_message_ids == (a.id,)
    assert first.importance == 0.7
    assert second.text == "Bob said: Adopted a kitten called Mochi"
    assert second.about == (await world.pid(BOB),)
    assert second.source_message_ids == (b.id,)
    assert all(e is not None for _, e in await world.longterm.memory_embeddings(GROUP_SCOPE))
    found = await world.recall.search("Mochi kitten", scopes=[GROUP_SCOPE])
    assert ("memory", second.id) in {r.entry_id for r in found}
    # The prompt numbered the messages with dates and speakers (the bot by its name).
    prompt = model.prompts[0][-1].content
    assert "[1] 2026-03-01 12:00 Alice: My sister May" in prompt
    assert "[3] 2026-03-01 12:02 Tomo: Congratulations" in prompt
    assert await world.longterm.consolidation_cursor(GROUP) == 3


async def test_a_dm_memory_belongs_to_the_dms_with_that_person(world: World) -> None:
    said = await world.say(ALICE, "I started learning the cello", chat=DM)
    model = StubModel(json_answers=[answer(mem("Alice is learning the cello"))])
    report = await world.consolidator(model).consolidate_chat(DM)
    alice = await world.pid(ALICE)
    [memory] = await world.longterm.memories_in_scope(f"dm:{alice}")
    assert report.memories_added == 1
    assert memory.text == "Alice is learning the cello"  # no "said:" prefix in a DM
    assert memory.about == (alice,)  # defaulted to the speaker of its source
    assert memory.source_message_ids == (said.id,)


async def test_sources_are_the_messages_that_share_the_most_words(sqlite_world: World) -> None:
    w = sqlite_world
    await w.say(ALICE, "Good morning everyone", at=minutes(0))
    cello = await w.say(ALICE, "My cello lesson moved to Thursday", at=minutes(1))
    await w.say(BOB, "Nice weather today", at=minutes(2))
    model = StubModel(json_answers=[answer(mem("Alice's cello lesson is on Thursdays", "Alice"))])
    await w.consolidator(model).consolidate_chat(GROUP)
    [memory] = await w.longterm.memories_in_scope(GROUP_SCOPE)
    assert memory.source_message_ids == (cello.id,)


async def test_nothing_is_invented_when_the_model_finds_nothing(sqlite_world: World) -> None:
    await sqlite_world.say(ALICE, "hi")
    report = await sqlite_world.consolidator(StubModel(json_answers=[answer()])).consolidate_chat(
        GROUP
    )
    assert report.memories_added == 0
    assert await sqlite_world.longterm.memories_in_scope(GROUP_SCOPE) == []
    assert report.messages_read == 1


@pytest.mark.parametrize(
    "raw",
    [
        "Sure! Alice likes tea.",
        "",
        '{"memories": "Alice likes tea"}',
        [mem("Alice likes tea", "Alice")],
        answer({"text": 5, "about": ["Alice"], "importance": 0.5}),
        answer(mem("   ", "Alice")),
        answer(mem("Carol likes tea", "Carol")),
        answer({"text": "Alice likes tea", "about": {"name": "Alice"}, "importance": 1}),
        {"memories": ["Alice likes tea"]},
        '{"memories": [{"text": "Alice likes tea", "about": ["Alice"]',
    ],
)
async def test_invalid_model_output_adds_nothing_and_does_not_fail(
    sqlite_world: World, raw: Any
) -> None:
    await sqlite_world.say(ALICE, "I like green tea a lot")
    report = await sqlite_world.consolidator(StubModel(json_answers=[raw])).consolidate_chat(GROUP)
    assert await sqlite_world.longterm.memories_in_scope(GROUP_SCOPE) == []
    assert report.memories_added == 0
    assert report.skipped >= 1
    # Bad output is not a failure: the rest ran and the cursor moved on.
    assert report.summaries_written == 1
    assert await sqlite_world.longterm.consolidation_cursor(GROUP) == report.messages_read == 1


async def test_invalid_items_are_skipped_and_valid_ones_kept(sqlite_world: World) -> None:
    await sqlite_world.say(ALICE, "I like green tea, my friend Carol likes coffee")
    model = StubModel(
        json_answers=[
            answer(
                mem("Carol likes coffee", "Carol"),  # Carol did not speak
                {"text": None},
                mem("Alice likes green tea", "Alice", "Carol", importance=7),
            )
        ]
    )
    report = await sqlite_world.consolidator(model).consolidate_chat(GROUP)
    [memory] = await sqlite_world.longterm.memories_in_scope(GROUP_SCOPE)
    assert (report.memories_added, report.skipped) == (1, 2)
    assert memory.about == (await sqlite_world.pid(ALICE),)
    assert memory.importance == 1.0  # clamped


def test_parse_candidates_takes_fenced_json_and_clamps() -> None:
    raw = (
        '```json\n{"memories": [{"text": " Bob  likes  jazz ", "about": "Bob", '
        '"importance": -3}]}\n```'
    )
    [cand], skipped = parse_candidates(raw, max_items=5, max_chars=100)
    assert (cand.text, cand.names, cand.importance, skipped) == ("Bob likes jazz", ("Bob",), 0.0, 0)


# deduplication -----------------------------------------------------------------------


async def test_a_restated_memory_is_merged_with_history_and_nothing_deleted(world: World) -> None:
    first = await world.say(ALICE, "My sister is called May", chat=DM, at=minutes(0))
    consolidator = world.consolidator(
        StubModel(
            json_answers=[
                answer(mem("Alice's sister is called May", "Alice")),
                answer(mem("alice's sister is called May!", "Alice", importance=0.9)),
                answer(mem("Alice's sister is called May Tanaka", "Alice")),
            ]
        )
    )
    await consolidator.consolidate_chat(DM)
    scope = f"dm:{await world.pid(ALICE)}"
    [original] = await world.longterm.memories_in_scope(scope)

    second = await world.say(ALICE, "May, my sister, says hi", chat=DM, at=minutes(5))
    report = await consolidator.consolidate_chat(DM)
    assert (report.memories_added, report.memories_merged) == (0, 1)
    third = await world.say(ALICE, "Her full name is May Tanaka", chat=DM, at=minutes(9))
    report = await consolidator.consolidate_chat(DM)
    assert (report.memories_added, report.memories_merged) == (0, 1)

    [merged] = await world.longterm.memories_in_scope(scope)
    assert merged.id == original.id
    assert merged.text == "Alice's sister is called May Tanaka"
    assert merged.importance == 0.9
    assert merged.source_message_ids == (first.id, second.id, third.id)
    history = await world.longterm.memory_history(merged.id)
    assert [h.text for h in history] == [
        "Alice's sister is called May",
        "alice's sister is called May!",
    ]
    assert all(h.reason.startswith("merged: ") for h in history)
    assert await world.store.count_messages(DM) == 3


async def test_different_memories_are_not_merged(sqlite_world: World) -> None:
    await sqlite_world.say(ALICE, "I like tea and I live in Kyoto")
    model = StubModel(
        json_answers=[answer(mem("Alice likes tea", "Alice"), mem("Alice lives in Kyoto", "Alice"))]
    )
    report = await sqlite_world.consolidator(model).consolidate_chat(GROUP)
    assert (report.memories_added, report.memories_merged) == (2, 0)


async def test_similar_memories_about_different_people_are_not_merged(
    sqlite_world: World,
) -> None:
    await sqlite_world.say(ALICE, "I like green tea")
    await sqlite_world.say(BOB, "I like green tea too")
    model = StubModel(
        json_answers=[
            answer(mem("Alice likes green tea a lot", "Alice"), mem("likes green tea a lot", "Bob"))
        ]
    )
    # Threshold 0.5: the texts are close enough, only `about` keeps them apart.
    report = await sqlite_world.consolidator(model, merge_threshold=0.5).consolidate_chat(GROUP)
    assert (report.memories_added, report.memories_merged) == (2, 0)


# the cursor ----------------------------------------------------------------------------


async def test_a_failing_model_leaves_the_cursor_and_a_rerun_consolidates(world: World) -> None:
    await world.say(ALICE, "I moved to Osaka last week", at=minutes(0))
    last = await world.say(BOB, "Welcome to Osaka!", at=minutes(1))
    script = [answer(mem("Alice moved to Osaka", "Alice"))] * 2
    # Call 1 extracts (and stores a memory), call 2 (the daily summary) fails.
    broken = world.consolidator(BrokenModel(fail_at=2, json_answers=script))
    with pytest.raises(ModelError):
        await broken.consolidate_chat(GROUP)
    assert await world.longterm.consolidation_cursor(GROUP) == 0
    assert await world.longterm.summary_versions(kind="daily", subject=GROUP.key) == []

    report = await world.consolidator(StubModel(json_answers=script)).consolidate_chat(GROUP)
    assert report.messages_read == 2
    assert await world.longterm.consolidation_cursor(GROUP) == last.id
    [memory] = await world.longterm.memories_in_scope(GROUP_SCOPE)  # re-read, merged
    assert report.memories_merged == 1
    assert memory.text == "Alice moved to Osaka"
    again = await world.consolidator(StubModel()).consolidate_chat(GROUP)
    assert again.messages_read == 0
    assert again.summary_line == "Nothing new to consolidate."


async def test_messages_are_read_in_batches_and_long_ones_are_cut(sqlite_world: World) -> None:
    w = sqlite_world
    for i in range(4):
        await w.say(ALICE, f"message {i}", at=minutes(i))
    last = await w.say(ALICE, "x" * 5000, at=minutes(5))
    model = StubModel()
    report = await w.consolidator(model, batch_messages=2).consolidate_chat(GROUP)
    assert report.messages_read == 5
    assert await w.longterm.consolidation_cursor(GROUP) == last.id
    extraction = [p[-1].content for p in model.prompts if p[-1].content.startswith("Messages:")]
    assert len(extraction) == 3
    assert TRUNCATION_MARK in extraction[-1]
    assert len(extraction[-1]) < 600
    assert report.summary_line.startswith("Consolidated 5 messages: 0 new memories")


# L2 -------------------------------------------------------------------------------------


async def test_daily_summary_profile_and_self_get_a_new_version_each_run(world: World) -> None:
    await world.say(ALICE, "I love hiking in the Alps", at=minutes(0))
    await world.say(None, "Hiking sounds wonderful", at=minutes(1))
    model = StubModel(
        json_answers=[
            answer(mem("Alice loves hiking in the Alps", "Alice")),
            answer(mem("Alice climbed Mont Blanc", "Alice")),
        ]
    )
    consolidator = world.consolidator(model)
    first = await consolidator.consolidate_chat(GROUP)
    next_day = T0 + timedelta(days=1)
    await world.say(ALICE, "Yesterday I climbed Mont Blanc", at=next_day)
    await world.say(BOB, "Impressive", at=next_day + timedelta(minutes=1))
    await world.say(None, "Wow, well done!", at=next_day + timedelta(minutes=2))
    await world.say(ALICE, "Back home now", at=T0 + timedelta(minutes=30))  # still day one
    second = await consolidator.consolidate_chat(GROUP)

    assert (first.summaries_written, second.summaries_written) == (1, 2)
    daily = await world.longterm.summary_versions(kind="daily", subject=GROUP.key)
    assert [(s.day, s.version) for s in daily] == [
        ("2026-03-01", 1),
        ("2026-03-01", 2),
        ("2026-03-02", 1),
    ]
    # The day's summary is recursive: its rewrite saw the previous version.
    recursive = [p for p in model.prompts if "Summary of 2026-03-01 so far" in p[-1].content]
    assert daily[0].text in recursive[-1][-1].content

    alice = await world.pid(ALICE)
    profiles = await world.longterm.summary_versions(kind="profile", subject=str(alice))
    assert [p.version for p in profiles] == [1, 2]
    assert "Mont Blanc" in profiles[-1].text  # the stub echoes the facts it was given
    # Bob spoke but nothing is remembered about him: no profile from nothing.
    bob = await world.pid(BOB)
    assert await world.longterm.summary_versions(kind="profile", subject=str(bob)) == []
    assert (first.profiles_written, second.profiles_written) == (1, 1)
    selves = await world.longterm.summary_versions(kind="self", subject=GROUP.key)
    assert [s.version for s in selves] == [1, 2]


async def test_rewrite_profile_leaves_no_version_with_a_forgotten_fact(world: World) -> None:
    await world.say(ALICE, "My sister is called May", chat=DM, at=minutes(0))
    await world.say(ALICE, "I drink green tea every morning", chat=DM, at=minutes(1))
    model = StubModel(
        json_answers=[
            answer(mem("Alice's sister is called May", "Alice")),
            answer(mem("Alice drinks green tea every morning", "Alice")),
        ]
    )
    consolidator = world.consolidator(model, batch_messages=1)
    await consolidator.consolidate_chat(DM)
    alice = await world.pid(ALICE)
    versions = await world.longterm.summary_versions(kind="profile", subject=str(alice))
    assert len(versions) == 2
    assert any("sister" in v.text for v in versions)

    sister, tea = await world.longterm.memories_in_scope(f"dm:{alice}")
    await world.longterm.forget_memory(sister.id)
    rewritten = await consolidator.rewrite_profile(alice)
    assert rewritten is not None
    versions = await world.longterm.summary_versions(kind="profile", subject=str(alice))
    assert versions == [rewritten]
    assert "green tea" in rewritten.text
    assert not any("sister" in v.text or "May" in v.text for v in versions)
    assert "sister" not in model.prompts[-1][-1].content

    await world.longterm.forget_memory(tea.id)
    assert await consolidator.rewrite_profile(alice) is None
    assert await world.longterm.summary_versions(kind="profile", subject=str(alice)) == []


# consolidate_due ------------------------------------------------------------------------


async def test_consolidate_due_takes_only_chats_idle_for_eight_hours(world: World) -> None:
    quiet = ChatRef(platform="telegram", chat_id="-300", kind="group")
    busy = ChatRef(platform="telegram", chat_id="-400", kind="group")
    done = ChatRef(platform="telegram", chat_id="-500", kind="group")
    await world.say(ALICE, "hello quiet", chat=quiet, at=T0)
    await world.say(ALICE, "hello busy", chat=busy, at=T0 + timedelta(hours=1))
    await world.say(ALICE, "hello done", chat=done, at=T0)
    world.clock.set(T0 + timedelta(hours=1))
    consolidator = world.consolidator(StubModel(json_answers=[answer()] * 5))
    await consolidator.consolidate_chat(done)

    world.clock.set(T0 + timedelta(hours=8, minutes=30))
    reports = await consolidator.consolidate_due()
    assert [r.chat for r in reports] == [quiet]
    assert await consolidator.consolidate_due() == []
    world.clock.set(T0 + timedelta(hours=9))
    assert [r.chat for r in await consolidator.consolidate_due()] == [busy]


async def test_consolidate_due_goes_on_after_a_chat_fails(sqlite_world: World) -> None:
    w = sqlite_world
    first = ChatRef(platform="telegram", chat_id="-300", kind="group")
    second = ChatRef(platform="telegram", chat_id="-400", kind="group")
    await w.say(ALICE, "one", chat=first)
    await w.say(ALICE, "two", chat=second)
    model = BrokenModel(fail_at=1, json_answers=[answer()] * 2)
    reports = await w.consolidator(model, idle=timedelta(hours=1)).consolidate_due()
    [report] = reports  # the first chat's model call failed, the other one ran
    [left] = await w.longterm.chats_to_consolidate(quiet_since=w.clock.now())
    assert {report.chat, left} == {first, second}
    assert await w.longterm.consolidation_cursor(left) == 0


def test_config_is_checked() -> None:
    with pytest.raises(ConfigError):
        ConsolidationConfig(batch_messages=0)
    with pytest.raises(ConfigError):
        ConsolidationConfig(merge_threshold=1.5)
    assert ConsolidationConfig().idle == timedelta(hours=8)


async def test_each_chat_has_its_own_self_concept_from_what_tomo_said_there(
    world: World,
) -> None:
    await world.say(ALICE, "I have an appointment about my gout", chat=DM, at=minutes(0))
    await world.say(None, "I hope the gout appointment goes well, Alice", chat=DM, at=minutes(1))
    await world.say(BOB, "our band plays on friday", chat=GROUP, at=minutes(2))
    await world.say(None, "I will be there on friday!", chat=GROUP, at=minutes(3))
    model = StubModel(json_answers=[{"memories": []}, {"memories": []}])
    await world.consolidator(model).consolidate_chat(DM)
    await world.consolidator(model).consolidate_chat(GROUP)
    [in_dm] = await world.longterm.summary_versions(kind="self", subject=DM.key)
    [in_group] = await world.longterm.summary_versions(kind="self", subject=GROUP.key)
    assert "gout" in in_dm.text  # the stub echoes what it was given
    assert "gout" not in in_group.text
    assert "friday" in in_group.text
    assert "friday" not in in_dm.text
