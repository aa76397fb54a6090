"""Messages edited on their platform: the new words are stored and recalled, the old
ones kept as an edit, nothing answered twice, and forgetting takes the old words too."""

from __future__ import annotations

from datetime import timedelta

from brain.blobs import MemoryBlobStore
from brain.clock import ManualClock
from brain.llm.stub import StubModel
from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall
from brain.memory.types import scope_of
from brain.mind import Brain, LongTermMemory
from brain.persona.card import PersonaCard
from storage.longterm import SqlLongTermStore
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, DM, T0, inbound
from tests.memory_kit import find_everywhere


def make_brain(store: SqlMemoryStore) -> Brain:
    longterm = SqlLongTermStore(store.db)
    return Brain(
        store=store,
        model=StubModel(),
        persona=PersonaCard(name="Tomo", self_description="A friend."),
        clock=ManualClock(T0 + timedelta(minutes=5)),
        memory=LongTermMemory(
            longterm=longterm,
            recall=Recall(store=longterm, embedder=HashEmbedder()),
            blobs=MemoryBlobStore(),
        ),
    )


async def test_an_edit_changes_what_is_stored_and_recalled(store: SqlMemoryStore) -> None:
    brain = make_brain(store)
    await brain.handle(inbound("I moved to Kyoto in May", msg_id="m1"))
    await brain.edit(inbound("I moved to Sapporo in May", msg_id="m1"))
    user, reply = await store.recent_messages(DM, limit=5)
    assert user.text == "I moved to Sapporo in May"
    assert reply.text == "You said: I moved to Kyoto in May"  # what was answered stays
    assert await store.count_messages(DM) == 2  # an edit is not answered again
    assert "message_edit.text" in await find_everywhere(store.db, "Kyoto")
    person = await store.resolve_person(ALICE, seen_at=T0)
    assert brain.memory is not None
    found = await brain.memory.recall.search(
        "Sapporo", scopes=[scope_of(DM, person_id=person.id)], k=1
    )
    assert [r.entry.id for r in found] == [user.id]
    # editing a message never stored does nothing
    await brain.edit(inbound("never seen", msg_id="m404"))
    assert await store.count_messages(DM) == 2


async def test_forgetting_takes_the_old_words_too(store: SqlMemoryStore) -> None:
    brain = make_brain(store)
    await brain.handle(inbound("my locker code is 4471", msg_id="m1"))
    await brain.edit(inbound("my locker code is secret", msg_id="m1"))
    [ask] = await brain.handle(inbound("/memory forget all"))
    assert "confirm" in ask.text
    await brain.handle(inbound("/memory forget all confirm"))
    assert await find_everywhere(store.db, "4471") == set()
