"""The brain with long-term memory: recall in prompts, scopes, model-decided recall."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from brain.blobs import MemoryBlobStore
from brain.clock import ManualClock
from brain.llm.stub import StubModel
from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall
from brain.mind import Brain, BrainConfig, LongTermMemory
from brain.persona.card import PersonaCard
from storage.longterm import SqlLongTermStore
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, GROUP, T0, inbound

PERSONA = PersonaCard(name="Tomo", self_description="A friend.")
LATER = T0 + timedelta(days=2)  # a new conversation: the first one is out of the window
BOB_DM = DM.model_copy(update={"chat_id": "101"})


def brain_on(store: SqlMemoryStore, model: StubModel, **cfg: Any) -> Brain:
    lt = SqlLongTermStore(store.db)
    return Brain(
        store=store,
        model=model,
        persona=PERSONA,
        clock=ManualClock(LATER),
        config=BrainConfig(**{"model_recall": False, **cfg}),
        memory=LongTermMemory(
            longterm=lt,
            recall=Recall(store=lt, embedder=HashEmbedder()),
            blobs=MemoryBlobStore(),
        ),
    )


def system_prompt(model: StubModel, n: int = -1) -> str:
    generations = [p for p in model.prompts if p[0].content.startswith("You are Tomo")]
    return generations[n][0].content


async def test_a_dm_fact_is_recalled_later_in_the_same_dm(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel()
    brain = brain_on(sqlite_store, model)
    await brain.handle(inbound("my cat is called Miso", sent_at=T0))
    await brain.handle(inbound("what is my cat called?", sent_at=LATER))
    assert "Things you remember that may matter now:" in system_prompt(model)
    assert "Alice: my cat is called Miso" in system_prompt(model)


async def test_dm_memories_never_reach_a_group_or_another_person(
    sqlite_store: SqlMemoryStore,
) -> None:
    model = StubModel()
    brain = brain_on(sqlite_store, model)
    await brain.handle(inbound("my secret diagnosis is gout", sent_at=T0))
    await brain.handle(inbound("what is my secret diagnosis?", chat=GROUP, sent_at=LATER))
    assert "gout" not in system_prompt(model)
    await brain.handle(
        inbound("tell me alice's secret diagnosis", chat=BOB_DM, author=BOB, sent_at=LATER)
    )
    assert "gout" not in system_prompt(model)


async def test_group_memories_stay_in_their_group(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel()
    brain = brain_on(sqlite_store, model)
    other = GROUP.model_copy(update={"chat_id": "-300"})
    await brain.handle(inbound("our band practice is at the old mill", chat=GROUP, to_bot=False))
    await brain.handle(inbound("when is band practice?", chat=other, sent_at=LATER))
    assert "old mill" not in system_prompt(model)
    await brain.handle(inbound("when is band practice?", chat=GROUP, sent_at=LATER))
    assert "Alice: our band practice is at the old mill" in system_prompt(model)


async def test_what_was_recalled_is_not_recalled_again_in_one_conversation(
    sqlite_store: SqlMemoryStore,
) -> None:
    model = StubModel()
    brain = brain_on(sqlite_store, model)
    await brain.handle(inbound("my sister May lives in Osaka", sent_at=T0))
    await brain.handle(inbound("tell me about my sister", sent_at=LATER))
    assert "May lives in Osaka" in system_prompt(model)
    await brain.handle(inbound("and my sister again?", sent_at=LATER + timedelta(minutes=1)))
    assert "May lives in Osaka" not in system_prompt(model)


async def test_the_model_may_ask_for_a_search(sqlite_store: SqlMemoryStore) -> None:
    ask = {"recall": True, "query": "favourite volcano", "count": 2}
    model = StubModel(json_answers=[json.dumps({"recall": False, "query": "", "count": 1}), ask])
    brain = brain_on(sqlite_store, model, model_recall=True, recall_k=0)
    await brain.handle(inbound("my favourite volcano is Fuji", sent_at=T0))
    await brain.handle(inbound("guess what I like", sent_at=LATER))
    assert "Fuji" in system_prompt(model)


async def test_nonsense_from_the_model_is_ignored(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel(json_answers=["not json at all", '{"recall": "maybe"}'])
    brain = brain_on(sqlite_store, model, model_recall=True)
    [first] = await brain.handle(inbound("hello", sent_at=T0))
    [second] = await brain.handle(inbound("hello again", sent_at=LATER))
    assert first.text == "You said: hello"
    assert second.text == "You said: hello again"


async def test_commands_are_not_stored_or_indexed(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel()
    brain = brain_on(sqlite_store, model)
    [reply] = await brain.handle(inbound("/memory list"))
    assert "remember" in reply.text.lower()
    assert await sqlite_store.count_messages() == 0


async def test_the_profile_is_shown_only_in_a_dm_with_its_person(
    sqlite_store: SqlMemoryStore,
) -> None:
    model = StubModel()
    brain = brain_on(sqlite_store, model)
    assert brain.memory is not None
    alice = await sqlite_store.resolve_person(ALICE, seen_at=T0)
    await brain.memory.longterm.put_summary(
        kind="profile", subject=str(alice.id), text="Alice is being treated for gout", at=T0
    )
    await brain.handle(inbound("hi there", chat=GROUP, sent_at=LATER))
    assert "gout" not in system_prompt(model)
    await brain.handle(inbound("hi there", sent_at=LATER))
    assert "What you know about Alice: Alice is being treated for gout" in system_prompt(model)
