"""The MemoryStore contract, run on SQLite and on Postgres (pgserver)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from brain.messages import Text
from brain.ports import NewMessage, Person
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, GROUP, T0


def user_msg(person: Person, text: str, pid: str, *, minutes: int = 0, chat=DM) -> NewMessage:  # type: ignore[no-untyped-def]
    return NewMessage(
        chat=chat,
        author=person,
        role="user",
        platform_message_id=pid,
        text=text,
        segments=(Text(text=text),),
        sent_at=T0 + timedelta(minutes=minutes),
    )


async def test_resolve_person_is_stable_and_follows_renames(store: SqlMemoryStore) -> None:
    a1 = await store.resolve_person(ALICE, seen_at=T0)
    a2 = await store.resolve_person(ALICE, seen_at=T0 + timedelta(days=3))
    b = await store.resolve_person(BOB, seen_at=T0)
    assert a1.id == a2.id != b.id
    assert a2.first_seen_at == T0
    renamed = await store.resolve_person(
        ALICE.model_copy(update={"display_name": "Ally"}), seen_at=T0
    )
    assert renamed.id == a1.id
    assert renamed.display_name == "Ally"


async def test_concurrent_first_sight_makes_one_person(store: SqlMemoryStore) -> None:
    people = await asyncio.gather(*(store.resolve_person(BOB, seen_at=T0) for _ in range(5)))
    assert len({p.id for p in people}) == 1


async def test_messages_round_trip_with_utc_times(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    stored, created = await store.add_message(user_msg(alice, "héllo 🐢", "m1"))
    assert created
    [again] = await store.recent_messages(DM, limit=10)
    assert again == stored
    assert again.sent_at == T0
    assert again.sent_at.tzinfo is not None
    assert again.segments == (Text(text="héllo 🐢"),)
    assert again.author_name == "Alice"


async def test_same_platform_id_is_stored_once(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    first, c1 = await store.add_message(user_msg(alice, "hi", "m1"))
    second, c2 = await store.add_message(user_msg(alice, "hi", "m1"))
    assert (c1, c2) == (True, False)
    assert second.id == first.id
    assert await store.count_messages(DM) == 1


async def test_concurrent_duplicates_store_one_row(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    results = await asyncio.gather(
        *(store.add_message(user_msg(alice, "x", "dup")) for _ in range(4))
    )
    assert sum(created for _, created in results) == 1
    assert len({m.id for m, _ in results}) == 1


async def test_same_id_in_two_chats_is_two_messages(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    await store.add_message(user_msg(alice, "a", "m1"))
    await store.add_message(user_msg(alice, "b", "m1", chat=GROUP))
    assert await store.count_messages() == 2


async def test_recent_messages_window(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    for i in range(10):
        await store.add_message(user_msg(alice, f"t{i}", f"m{i}", minutes=i))
    last3 = await store.recent_messages(DM, limit=3)
    assert [m.text for m in last3] == ["t7", "t8", "t9"]
    since = await store.recent_messages(DM, limit=100, since=T0 + timedelta(minutes=8))
    assert [m.text for m in since] == ["t8", "t9"]
    assert await store.recent_messages(GROUP, limit=5) == []


async def test_answers_are_linked(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    question, _ = await store.add_message(user_msg(alice, "q", "m1"))
    assert await store.answer_to(question.id) is None
    answer, created = await store.add_message(
        NewMessage(
            chat=DM,
            author=None,
            role="assistant",
            platform_message_id=None,
            text="a",
            sent_at=T0,
            answers_id=question.id,
        )
    )
    assert created
    assert await store.answer_to(question.id) == answer


async def test_conversation_start_follows_silences(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    gap = timedelta(hours=8)
    now = T0 + timedelta(hours=30)
    assert await store.conversation_start(DM, now=now, idle_gap=gap) == now  # new chat
    for minutes in (0, 10, 20, 12 * 60, 12 * 60 + 5):
        await store.add_message(user_msg(alice, "x", f"m{minutes}", minutes=minutes))
    at = T0 + timedelta(hours=12, minutes=6)
    assert await store.conversation_start(DM, now=at, idle_gap=gap) == T0 + timedelta(hours=12)
    assert await store.conversation_start(DM, now=now, idle_gap=gap) == now  # gone quiet


async def test_a_100kb_message_is_stored_whole(store: SqlMemoryStore) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    big = "0123456789" * 10_000
    await store.add_message(user_msg(alice, big, "big"))
    [got] = await store.recent_messages(DM, limit=1)
    assert got.text == big
