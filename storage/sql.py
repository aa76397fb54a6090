"""SqlMemoryStore: the MemoryStore port (L0: people, chats, messages) on SQL."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from brain.messages import ChatRef, PersonRef, Segment
from brain.ports import NewMessage, Person, ReplyInContext, StoredMessage
from storage.crypto import Encryption
from storage.database import (
    ANSWERED,
    ANSWERED_AUTHOR,
    MESSAGE_WITH_ANSWERED,
    SEGMENTS,
    Database,
    chat_ref,
)
from storage.db import SQLITE_BUSY_TIMEOUT_MS
from storage.tables import (
    AccountRow,
    ChatRow,
    MessageEditRow,
    MessageRow,
    PersonKeyRow,
    PersonRow,
)

# The per-message path in Core, built once (an ORM session and a statement built per call
# cost more than the round trip itself).
_PERSON = PersonRow.__table__  # type: ignore[attr-defined]
_ACCOUNT = AccountRow.__table__  # type: ignore[attr-defined]
_MESSAGE = MessageRow.__table__  # type: ignore[attr-defined]
_PERSON_KEY = PersonKeyRow.__table__  # type: ignore[attr-defined]
# The person's wrapped data key comes along: a key destroyed or replaced by another
# process (a forget on another worker) is noticed before this message is encrypted.
_FIND_PERSON = (
    sa.select(_PERSON, _ACCOUNT.c.display_name.label("account_name"), _PERSON_KEY.c.wrapped_key)
    .join(_ACCOUNT, _ACCOUNT.c.person_id == _PERSON.c.id)
    .outerjoin(_PERSON_KEY, _PERSON_KEY.c.person_id == _PERSON.c.id)
    .where(_ACCOUNT.c.platform == sa.bindparam("platform"))
    .where(_ACCOUNT.c.user_id == sa.bindparam("user_id"))
)
_INSERT_MESSAGE = sa.insert(_MESSAGE).returning(_MESSAGE.c.id)
# Message reads carry the author of the message each row answers: a reply of the bot is
# encrypted with that person's key (see storage/database.py).
_FIND_MESSAGE = (
    sa.select(_MESSAGE, ANSWERED_AUTHOR)
    .select_from(MESSAGE_WITH_ANSWERED)
    .where(_MESSAGE.c.chat_id == sa.bindparam("chat_id"))
    .where(_MESSAGE.c.role == sa.bindparam("role"))
    .where(_MESSAGE.c.platform_message_id == sa.bindparam("pid"))
)
_RECENT = (
    sa.select(_MESSAGE, ANSWERED_AUTHOR)
    .select_from(MESSAGE_WITH_ANSWERED)
    .where(_MESSAGE.c.chat_id == sa.bindparam("chat_id"))
    .order_by(_MESSAGE.c.sent_at.desc(), _MESSAGE.c.id.desc())
    .limit(sa.bindparam("limit"))
)
_RECENT_SINCE = _RECENT.where(_MESSAGE.c.sent_at >= sa.bindparam("since"))
_SENT_TIMES = (
    sa.select(_MESSAGE.c.sent_at)
    .where(_MESSAGE.c.chat_id == sa.bindparam("chat_id"))
    .order_by(_MESSAGE.c.sent_at.desc())
    .limit(sa.bindparam("limit"))
)

# How far back conversation_start looks for the last silence.
_CONVERSATION_SCAN = 1000
_CONVERSATION_FIRST_SCAN = 40


class SqlMemoryStore:
    """L0 messages, people and chats in one SQL database."""

    def __init__(
        self,
        url: str,
        *,
        database: Database | None = None,
        busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        encryption: Encryption | None = None,
    ) -> None:
        self.db = database or Database(url, busy_timeout_ms=busy_timeout_ms, encryption=encryption)
        self.url = url
        self.engine = self.db.engine

    def _session(self, *, autocommit: bool = False) -> AbstractAsyncContextManager[AsyncSession]:
        return self.db.session(autocommit=autocommit)

    async def aclose(self) -> None:
        await self.db.aclose()

    # people -------------------------------------------------------------------------

    async def resolve_person(self, ref: PersonRef, *, seen_at: datetime) -> Person:
        return await self.db.retry_on_conflict(
            lambda: self._resolve_person_once(ref, seen_at=seen_at)
        )

    async def _resolve_person_once(self, ref: PersonRef, *, seen_at: datetime) -> Person:
        async with self.db.connect() as conn:
            known = (
                await conn.execute(_FIND_PERSON, {"platform": ref.platform, "user_id": ref.user_id})
            ).first()
        if known is not None:
            self.db.observe_key(known.id, known.wrapped_key)
        if known is not None and known.account_name == ref.display_name:
            return _person(known)
        # A new person, or a new name: the ORM path (rare).
        async with self._session() as s:
            found = (
                await s.exec(
                    select(AccountRow, PersonRow)
                    .join(PersonRow, col(PersonRow.id) == col(AccountRow.person_id))
                    .where(AccountRow.platform == ref.platform, AccountRow.user_id == ref.user_id)
                )
            ).first()
            if found is not None:
                account, person = found
                if account.display_name != ref.display_name:
                    account.display_name = ref.display_name
                    person.display_name = ref.display_name
                    s.add(account)
                    s.add(person)
                    await s.commit()
                return _person(person)
            person = PersonRow(display_name=ref.display_name, first_seen_at=seen_at)
            s.add(person)
            await s.flush()
            assert person.id is not None
            s.add(
                AccountRow(
                    person_id=person.id,
                    platform=ref.platform,
                    user_id=ref.user_id,
                    display_name=ref.display_name,
                )
            )
            await s.commit()
            return _person(person)

    async def set_voice_replies(self, person_id: int, *, on: bool) -> Person:
        async with self._session() as s:
            person = await s.get(PersonRow, person_id)
            if person is None:
                raise KeyError(person_id)
            person.voice_replies = on
            s.add(person)
            await s.commit()
            return _person(person)

    async def set_sticker_prefs(
        self, person_id: int, *, on: bool | None = None, accessory: str | None = None
    ) -> Person:
        async with self._session() as s:
            person = await s.get(PersonRow, person_id)
            if person is None:
                raise KeyError(person_id)
            if on is not None:
                person.stickers = on
            if accessory is not None:
                person.sticker_accessory = accessory
            s.add(person)
            await s.commit()
            return _person(person)

    # chats and messages -------------------------------------------------------------

    async def _chat_id(self, s: AsyncSession, chat: ChatRef, *, create: bool) -> int | None:
        return await self.db.chat_id(s, chat, create=create)

    async def add_message(self, message: NewMessage) -> tuple[StoredMessage, bool]:
        return await self.db.retry_on_conflict(lambda: self._add_message_once(message))

    async def _add_message_once(self, message: NewMessage) -> tuple[StoredMessage, bool]:
        # Insert first: a message seen again (a redelivery) is the rare case, found by
        # the unique key (chat, role, platform message id) rather than by a read first.
        chat_id = await self.db.known_chat_id(message.chat, create=True)
        assert chat_id is not None
        author_id = message.author.id if message.author else None
        author_name = message.author.display_name if message.author else ""
        owner = author_id  # whose key seals it: the author, or the person a reply answers
        if owner is None and message.answers_id is not None:
            owner = (await self.db.message_owners([message.answers_id])).get(message.answers_id)
        segments_json = SEGMENTS.dump_json(message.segments).decode()
        values = {
            "chat_id": chat_id,
            "author_id": author_id,
            "author_name": author_name,
            "role": message.role,
            "platform_message_id": message.platform_message_id,
            "text": await self.db.seal(message.text, kind="message.text", owner=owner),
            "segments_json": await self.db.seal(
                segments_json, kind="message.segments", owner=owner
            ),
            "sent_at": message.sent_at,
            "answers_id": message.answers_id,
        }
        try:
            async with self.db.connect() as conn:
                new_id = (await conn.execute(_INSERT_MESSAGE, values)).scalar_one()
        except IntegrityError:
            if message.platform_message_id is None:
                raise
        else:
            self.db.note_owner(new_id, owner)
            return (
                StoredMessage(
                    id=new_id,
                    chat=message.chat,
                    author_id=author_id,
                    author_name=author_name,
                    role="assistant" if message.role == "assistant" else "user",
                    platform_message_id=message.platform_message_id,
                    text=message.text,
                    segments=message.segments,
                    sent_at=message.sent_at,
                    answers_id=message.answers_id,
                ),
                True,
            )
        async with self.db.connect() as conn:
            existing = (
                await conn.execute(
                    _FIND_MESSAGE,
                    {"chat_id": chat_id, "role": message.role, "pid": message.platform_message_id},
                )
            ).first()
        if existing is None:  # deleted in between: try again
            raise IntegrityError("message", None, Exception("vanished"))
        [found] = await self.db.messages_from_rows(
            [(existing, message.chat, existing.answered_author)]
        )
        return found, False

    async def edit_message(
        self,
        chat: ChatRef,
        *,
        platform_message_id: str,
        text: str,
        segments: tuple[Segment, ...],
        edited_at: datetime,
    ) -> StoredMessage | None:
        async with self._session() as s:
            chat_id = await self._chat_id(s, chat, create=False)
            if chat_id is None:
                return None
            row = (
                await s.exec(
                    select(MessageRow).where(
                        MessageRow.chat_id == chat_id,
                        MessageRow.role == "user",
                        MessageRow.platform_message_id == platform_message_id,
                    )
                )
            ).first()
            if row is None or row.id is None:
                return None
            [before] = await self.db.messages_from_rows([(row, chat, None)])
            old_segments = SEGMENTS.dump_json(before.segments).decode()
            new_segments = SEGMENTS.dump_json(segments).decode()
            if before.text == text and old_segments == new_segments:
                return before
            owner = row.author_id
            db = self.db
            s.add(
                MessageEditRow(
                    message_id=row.id,
                    text=await db.seal(
                        before.text, kind="message_edit.text", owner=owner, fresh=True
                    ),
                    segments_json=await db.seal(
                        old_segments, kind="message_edit.segments", owner=owner
                    ),
                    edited_at=edited_at,
                )
            )
            row.text = await db.seal(text, kind="message.text", owner=owner)
            row.segments_json = await db.seal(new_segments, kind="message.segments", owner=owner)
            s.add(row)
            await s.commit()
            return before.model_copy(update={"text": text, "segments": segments})

    async def answer_to(self, message_id: int) -> StoredMessage | None:
        async with self._session() as s:
            found = (
                await s.exec(
                    select(MessageRow, ChatRow, ANSWERED.author_id)
                    .join(ChatRow, col(ChatRow.id) == col(MessageRow.chat_id))
                    .outerjoin(ANSWERED, col(ANSWERED.id) == col(MessageRow.answers_id))
                    .where(MessageRow.answers_id == message_id)
                    .order_by(col(MessageRow.id))
                )
            ).first()
            if found is None:
                return None
            row, chat, answered = found
            [reply] = await self.db.messages_from_rows([(row, chat_ref(chat), answered)])
            return reply

    async def recent_messages(
        self, chat: ChatRef, *, limit: int, since: datetime | None = None
    ) -> list[StoredMessage]:
        chat_id = await self.db.known_chat_id(chat, create=False)
        if chat_id is None:
            return []
        params: dict[str, object] = {"chat_id": chat_id, "limit": limit}
        if since is not None:
            params["since"] = since
        async with self.db.connect() as conn:
            rows = (await conn.execute(_RECENT if since is None else _RECENT_SINCE, params)).all()
        return await self.db.messages_from_rows([(r, chat, r.answered_author) for r in rows[::-1]])

    async def conversation_start(
        self, chat: ChatRef, *, now: datetime, idle_gap: timedelta
    ) -> datetime:
        chat_id = await self.db.known_chat_id(chat, create=False)
        if chat_id is None:
            return now
        start = now
        # Most conversations are short: look at the latest few first, then further.
        async with self.db.connect() as conn:
            for scan in (_CONVERSATION_FIRST_SCAN, _CONVERSATION_SCAN):
                times = (
                    (await conn.execute(_SENT_TIMES, {"chat_id": chat_id, "limit": scan}))
                    .scalars()
                    .all()
                )
                if not times or now - times[0] > idle_gap:
                    return now
                start = times[0]
                gap_found = False
                for earlier in times[1:]:
                    if start - earlier > idle_gap:
                        gap_found = True
                        break
                    start = earlier
                if gap_found or len(times) < scan:
                    break
        return start

    async def count_messages(self, chat: ChatRef | None = None) -> int:
        async with self._session() as s:
            query = select(func.count()).select_from(MessageRow)
            if chat is not None:
                chat_id = await self._chat_id(s, chat, create=False)
                if chat_id is None:
                    return 0
                query = query.where(MessageRow.chat_id == chat_id)
            return int((await s.exec(query)).one())

    async def bot_replies(
        self, *, before_id: int | None = None, limit: int, context: int
    ) -> list[ReplyInContext]:
        async with self._session() as s:
            query = (
                select(MessageRow, ChatRow, ANSWERED.author_id)
                .join(ChatRow, col(ChatRow.id) == col(MessageRow.chat_id))
                .outerjoin(ANSWERED, col(ANSWERED.id) == col(MessageRow.answers_id))
                .where(MessageRow.role == "assistant")
            )
            if before_id is not None:
                query = query.where(col(MessageRow.id) < before_id)
            replies = (await s.exec(query.order_by(col(MessageRow.id).desc()).limit(limit))).all()
            found: list[ReplyInContext] = []
            for row, chat_row, answered in replies:
                chat = chat_ref(chat_row)
                earlier = (
                    (
                        await s.exec(
                            select(MessageRow, ANSWERED.author_id)
                            .outerjoin(ANSWERED, col(ANSWERED.id) == col(MessageRow.answers_id))
                            .where(
                                MessageRow.chat_id == row.chat_id,
                                col(MessageRow.id) < row.id,
                            )
                            .order_by(col(MessageRow.id).desc())
                            .limit(context)
                        )
                    ).all()
                    if context > 0
                    else []
                )
                [reply, *before] = await self.db.messages_from_rows(
                    [(row, chat, answered), *((m, chat, a) for m, a in reversed(earlier))]
                )
                found.append(ReplyInContext(reply=reply, before=tuple(before)))
            return found


def _person(row: PersonRow | sa.Row[Any]) -> Person:
    assert row.id is not None
    return Person(
        id=row.id,
        display_name=row.display_name,
        first_seen_at=row.first_seen_at,
        voice_replies=row.voice_replies,
        stickers=row.stickers,
        sticker_accessory=row.sticker_accessory,
    )
