"""Deleting L1 memories and L0 messages with everything that refers to them.

Used by forgetting: a memory goes with its history, subjects and provenance links; a
message goes with the bot's replies to it and its recall key, and the keys of the
neighbouring turns, which quoted it, are rewritten from what survives.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from brain.memory.keys import message_key
from storage.database import Database, load_messages
from storage.tables import (
    MemoryAboutRow,
    MemoryRow,
    MemorySourceRow,
    MemoryVersionRow,
    MessageEditRow,
    MessageKeyRow,
    MessageRow,
)


async def delete_memories(s: AsyncSession, ids: Sequence[int]) -> None:
    if not ids:
        return
    for table in (MemoryVersionRow, MemoryAboutRow, MemorySourceRow):
        await s.exec(delete(table).where(col(table.memory_id).in_(list(ids))))
    await s.exec(delete(MemoryRow).where(col(MemoryRow.id).in_(list(ids))))


async def delete_messages(db: Database, s: AsyncSession, ids: Sequence[int]) -> list[int]:
    """Delete L0 messages, the bot's replies to them, their keys and links.

    The recall keys of the messages next to a deleted one quote it (a key holds its
    neighbouring turns), so those keys are rewritten from what is left.
    """
    if not ids:
        return []
    replies = (
        await s.exec(select(MessageRow.id).where(col(MessageRow.answers_id).in_(list(ids))))
    ).all()
    every = sorted({*ids, *(r for r in replies if r is not None)})
    chats = (
        await s.exec(select(MessageRow.id, MessageRow.chat_id).where(col(MessageRow.id).in_(every)))
    ).all()
    await s.exec(
        update(MessageRow).where(col(MessageRow.answers_id).in_(every)).values(answers_id=None)
    )
    await s.exec(delete(MessageKeyRow).where(col(MessageKeyRow.message_id).in_(every)))
    await s.exec(delete(MessageEditRow).where(col(MessageEditRow.message_id).in_(every)))
    await s.exec(delete(MemorySourceRow).where(col(MemorySourceRow.message_id).in_(every)))
    await s.exec(delete(MessageRow).where(col(MessageRow.id).in_(every)))
    db.drop_owners(every)
    by_chat: dict[int, list[int]] = {}
    for mid, chat_id in chats:
        if mid is not None:
            by_chat.setdefault(chat_id, []).append(mid)
    for chat_id, gone in by_chat.items():
        await rekey_neighbours(db, s, chat_id, sorted(gone))
    return every


async def rekey_neighbours(db: Database, s: AsyncSession, chat_id: int, gone: list[int]) -> None:
    """Rewrite the keys of the surviving messages of a chat that sat next to `gone`."""
    in_chat = col(MessageRow.chat_id) == chat_id
    between = (
        await s.exec(
            select(MessageRow.id).where(
                in_chat, col(MessageRow.id) > gone[0], col(MessageRow.id) < gone[-1]
            )
        )
    ).all()
    before = (
        await s.exec(select(func.max(MessageRow.id)).where(in_chat, col(MessageRow.id) < gone[0]))
    ).one()
    after = (
        await s.exec(select(func.min(MessageRow.id)).where(in_chat, col(MessageRow.id) > gone[-1]))
    ).one()
    alive = {m for m in (before, *between, after) if m is not None}
    order = sorted(alive | set(gone))
    neighbours = {
        order[j]
        for i, mid in enumerate(order)
        if mid not in alive
        for j in (i - 1, i + 1)
        if 0 <= j < len(order) and order[j] in alive
    }
    for mid in sorted(neighbours):
        key_row = await s.get(MessageKeyRow, mid)
        if key_row is None:
            continue
        found = await load_messages(
            db,
            s,
            [
                in_chat,
                col(MessageRow.id).in_(
                    [
                        mid,
                        select(func.max(MessageRow.id))
                        .where(in_chat, col(MessageRow.id) < mid)
                        .scalar_subquery(),
                        select(func.min(MessageRow.id))
                        .where(in_chat, col(MessageRow.id) > mid)
                        .scalar_subquery(),
                    ]
                ),
            ],
        )
        at = {m.id: i for i, m in enumerate(found)}
        i = at[mid]
        key = message_key(
            found[i],
            at=found[i].sent_at,
            previous=found[i - 1] if i > 0 else None,
            following=found[i + 1] if i + 1 < len(found) else None,
        )
        # encrypted as before, with the message's owner's key (in this transaction)
        conn = await s.connection()
        owner = (await db.message_owners([mid], conn=conn)).get(mid)
        key_row.key_text = await db.seal(
            key, kind="message_key", owner=owner, conn=conn, create=False, fresh=True
        )
        s.add(key_row)  # the embedding is of the turn alone and stays
