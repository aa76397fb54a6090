"""MemoryStore.bot_replies (the persona's replies with their context), on SQLite and Postgres."""

from __future__ import annotations

from datetime import timedelta

from brain.messages import ChatRef, Text
from brain.ports import NewMessage, Person, StoredMessage
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, GROUP, T0


async def _say(
    store: SqlMemoryStore,
    who: Person | None,
    text: str,
    *,
    minute: int,
    chat: ChatRef = DM,
    answers: StoredMessage | None = None,
) -> StoredMessage:
    msg, _ = await store.add_message(
        NewMessage(
            chat=chat,
            author=who,
            role="user" if who else "assistant",
            platform_message_id=f"m{minute}" if who else None,
            text=text,
            segments=(Text(text=text),),
            sent_at=T0 + timedelta(minutes=minute),
            answers_id=answers.id if answers else None,
        )
    )
    return msg


async def test_replies_come_newest_first_with_their_chat_before_them(
    store: SqlMemoryStore,
) -> None:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    bob = await store.resolve_person(BOB, seen_at=T0)
    a1 = await _say(store, alice, "hi", minute=0)
    r1 = await _say(store, None, "hello Alice", minute=1, answers=a1)
    g1 = await _say(store, bob, "hey all", minute=2, chat=GROUP)
    a2 = await _say(store, alice, "I adopted a cat", minute=3)
    r2 = await _say(store, None, "No way! What's their name?", minute=4, answers=a2)
    rg = await _say(store, None, "hi Bob", minute=5, chat=GROUP, answers=g1)

    replies = await store.bot_replies(limit=10, context=2)
    assert [r.reply.id for r in replies] == [rg.id, r2.id, r1.id]
    assert replies[0].before == (g1,)  # only its own chat
    assert replies[0].reply.chat == GROUP
    assert replies[1].before == (r1, a2)  # the last two, oldest first
    assert replies[1].reply.answers_id == a2.id
    assert replies[2].before == (a1,)

    # paging: below an id, a smaller page, no context
    page = await store.bot_replies(before_id=r2.id, limit=1, context=0)
    assert [r.reply.id for r in page] == [r1.id]
    assert page[0].before == ()
    assert await store.bot_replies(before_id=r1.id, limit=5, context=3) == []


async def test_no_replies_in_an_empty_database(store: SqlMemoryStore) -> None:
    assert await store.bot_replies(limit=5, context=3) == []
