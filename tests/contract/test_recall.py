"""Recall on SQLite and Postgres: scopes are filtered in the query, keys carry context."""

from __future__ import annotations

from datetime import timedelta

from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall, RecallConfig
from brain.memory.types import NewMemory, scope_of
from brain.messages import ChatRef, Text
from brain.ports import NewMessage, Person, StoredMessage
from storage.longterm import SqlLongTermStore
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, GROUP, T0


async def say(
    store: SqlMemoryStore, person: Person, text: str, *, chat: ChatRef, n: int
) -> StoredMessage:
    msg, _ = await store.add_message(
        NewMessage(
            chat=chat,
            author=person,
            role="user",
            platform_message_id=f"{chat.chat_id}-{n}",
            text=text,
            segments=(Text(text=text),),
            sent_at=T0 + timedelta(minutes=n),
        )
    )
    return msg


async def test_search_never_leaves_its_scopes(store: SqlMemoryStore) -> None:
    lt = SqlLongTermStore(store.db)
    recall = Recall(store=lt, embedder=HashEmbedder())
    alice = await store.resolve_person(ALICE, seen_at=T0)
    bob = await store.resolve_person(BOB, seen_at=T0)
    dm_scope = scope_of(DM, person_id=alice.id)
    group_scope = scope_of(GROUP, person_id=bob.id)
    secret = await say(store, alice, "my password hint is purple giraffe", chat=DM, n=1)
    await recall.index_message(secret, scope=dm_scope)
    public = await say(store, bob, "I saw a giraffe at the zoo", chat=GROUP, n=2)
    await recall.index_message(public, scope=group_scope)

    in_group = await recall.search("purple giraffe password", scopes=[group_scope], k=10)
    assert [r.entry.id for r in in_group] == [public.id]
    in_dm = await recall.search("purple giraffe password", scopes=[dm_scope], k=10)
    assert [r.entry.id for r in in_dm] == [secret.id]
    # A cold index, loaded from the database, filters the same way.
    cold = Recall(store=lt, embedder=HashEmbedder())
    assert [r.entry.id for r in await cold.search("giraffe", scopes=[group_scope], k=10)] == [
        public.id
    ]


async def test_keys_carry_neighbours_and_items_cite_one_turn(store: SqlMemoryStore) -> None:
    lt = SqlLongTermStore(store.db)
    recall = Recall(store=lt, embedder=HashEmbedder())
    alice = await store.resolve_person(ALICE, seen_at=T0)
    bob = await store.resolve_person(BOB, seen_at=T0)
    scope = scope_of(GROUP, person_id=alice.id)
    q = await say(store, bob, "Where did you go for your holiday?", chat=GROUP, n=1)
    a = await say(store, alice, "Lisbon, it was lovely", chat=GROUP, n=2)
    c = await say(store, bob, "Nice! I love custard tarts", chat=GROUP, n=3)
    await recall.index_message(q, scope=scope)
    await recall.index_message(a, scope=scope)
    await recall.index_message(c, scope=scope)
    keys = {e.id: e.key for e in await lt.index_entries(scope)}
    assert "holiday" in keys[a.id]  # previous turn
    assert "custard" in keys[a.id]  # following turn, added when it arrived
    assert keys[a.id].startswith("1 March 2026.")
    [top] = await recall.search("Alice holiday Lisbon", scopes=[scope], k=1)
    assert top.entry.source_message_ids == (a.id,)
    assert top.shown == "[1 March 2026] Alice: Lisbon, it was lovely"


async def test_exclude_and_memories(store: SqlMemoryStore) -> None:
    lt = SqlLongTermStore(store.db)
    recall = Recall(store=lt, embedder=HashEmbedder())
    alice = await store.resolve_person(ALICE, seen_at=T0)
    scope = scope_of(DM, person_id=alice.id)
    said = await say(store, alice, "My sister May lives in Osaka", chat=DM, n=1)
    await recall.index_message(said, scope=scope)
    memory = await lt.add_memory(
        NewMemory(
            scope=scope,
            text="Alice's sister is called May",
            about=(alice.id,),
            source_message_ids=(said.id,),
            created_at=T0,
        )
    )
    recall.invalidate(scope)
    found = await recall.search("sister May", scopes=[scope], k=5)
    assert {r.entry_id for r in found} == {("message", said.id), ("memory", memory.id)}
    mem = next(r for r in found if r.entry.kind == "memory")
    assert mem.entry.source_message_ids == (said.id,)
    rest = await recall.search("sister May", scopes=[scope], k=5, exclude={("memory", memory.id)})
    assert [r.entry_id for r in rest] == [("message", said.id)]


async def test_cached_scopes_are_bounded(store: SqlMemoryStore) -> None:
    lt = SqlLongTermStore(store.db)
    recall = Recall(store=lt, embedder=HashEmbedder(), config=RecallConfig(max_cached_entries=2))
    alice = await store.resolve_person(ALICE, seen_at=T0)
    scopes = []
    for n in range(3):
        chat = GROUP.model_copy(update={"chat_id": f"-{n}"})
        scope = scope_of(chat, person_id=alice.id)
        said = await say(store, alice, f"note number {n}", chat=chat, n=n)
        await recall.index_message(said, scope=scope)
        scopes.append(scope)
    assert recall.cached_scopes() == scopes[1:]  # the oldest went
    [hit] = await recall.search("note number", scopes=[scopes[0]], k=1)  # reloads it
    assert hit.entry.text == "note number 0"
    assert recall.cached_scopes() == scopes[2:] + scopes[:1]
