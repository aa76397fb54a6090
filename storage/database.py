"""Database: one engine, sessions that translate driver errors, shared lookups."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from brain.messages import ChatRef, Segment
from brain.ports import StoredMessage
from storage.crypto import CryptoError, Encryption, is_sealed, seal
from storage.db import SQLITE_BUSY_TIMEOUT_MS, create_engine, translate
from storage.keyring import DELETE_KEY, OPENED_KEPT, PLAIN, Keyring, Opener
from storage.tables import ChatRow, MessageRow

T = TypeVar("T")

SEGMENTS: TypeAdapter[tuple[Segment, ...]] = TypeAdapter(tuple[Segment, ...])

# Whose key a message is encrypted with (its "owner"): its author's, and for a reply of
# the bot the key of the person it answers (in a DM: the other party of the chat).
# Reads join the answered message for its author.
ANSWERED = aliased(MessageRow, name="answered")
_MESSAGE = MessageRow.__table__  # type: ignore[attr-defined]
_ANSWERED = _MESSAGE.alias("answered")
MESSAGE_WITH_ANSWERED = _MESSAGE.outerjoin(_ANSWERED, _ANSWERED.c.id == _MESSAGE.c.answers_id)
"""The message table joined to the message each row answers (Core statements)."""
ANSWERED_AUTHOR = _ANSWERED.c.author_id.label("answered_author")
_OWNER_OF = (
    sa.select(_MESSAGE.c.id, sa.func.coalesce(_MESSAGE.c.author_id, _ANSWERED.c.author_id))
    .select_from(MESSAGE_WITH_ANSWERED)
    .where(_MESSAGE.c.id.in_(sa.bindparam("ids", expanding=True)))
)
OWNERS_CACHED = 50_000


def owner_of(author_id: int | None, answered_author: int | None) -> int | None:
    return author_id if author_id is not None else answered_author


class Database:
    """The engine and what every repository on it shares."""

    def __init__(
        self,
        url: str,
        *,
        engine: AsyncEngine | None = None,
        busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        encryption: Encryption | None = None,
    ) -> None:
        self.url = url
        self.engine = engine or create_engine(url, busy_timeout_ms=busy_timeout_ms)
        # None: nothing is encrypted, and encrypted rows cannot be read.
        self.keyring: Keyring | None = (
            Keyring(encryption, database=self) if encryption is not None else None
        )
        # message id -> whose key encrypts it (see `message_owners`)
        self._owners: OrderedDict[int, int | None] = OrderedDict()
        # Postgres: sessions of one statement (or of independent ones) run without
        # BEGIN and COMMIT/ROLLBACK, a third of the round trips on the per-message path.
        self._autocommit = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.engine.dialect.name == "postgresql"
            else self.engine
        )
        # Chats are never deleted or renumbered, so their row ids can be remembered.
        self._chat_ids: dict[ChatRef, int] = {}

    @property
    def autocommit_engine(self) -> AsyncEngine:
        """The engine with each statement committed as it runs (Postgres; on SQLite the
        engine itself)."""
        return self._autocommit

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self, *, autocommit: bool = False) -> AsyncIterator[AsyncSession]:
        """A session; `autocommit` for work whose statements each stand alone (a read,
        or one upsert): each is committed as it runs, and commit() is a no-op."""
        bind = self._autocommit if autocommit else self.engine
        try:
            async with AsyncSession(bind, expire_on_commit=False) as session:
                yield session
        except IntegrityError:
            raise  # a lost race on a unique key: the caller reads the winner back
        except SQLAlchemyError as exc:
            raise translate(exc, url=self.url) from None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection (no ORM session: the per-message path), committed when the
        block ends cleanly; on Postgres each statement commits as it runs."""
        try:
            async with self._autocommit.connect() as conn:
                yield conn
                await conn.commit()
        except IntegrityError:
            raise  # a lost race on a unique key: the caller reads the winner back
        except SQLAlchemyError as exc:
            raise translate(exc, url=self.url) from None

    # encryption at rest ----------------------------------------------------------------

    def _key_conn(self, conn: AsyncConnection | None) -> AsyncConnection | None:
        # The caller's connection serves key reads and writes when the keys live in this
        # database (inside a transaction that has written, SQLite allows no other writer).
        return conn if self.keyring is not None and self.keyring.database is self else None

    async def seal(
        self,
        value: str,
        *,
        kind: str,
        owner: int | None,
        conn: AsyncConnection | None = None,
        create: bool = True,
        fresh: bool = False,
    ) -> str:
        """`value` encrypted with `owner`'s key; as it is when nobody owns it or
        encryption is off. `fresh`: the key as the database holds it now, not a cached
        copy (writes off the per-message path, where no person lookup checked it)."""
        if owner is None or self.keyring is None:
            return value
        key = await self.keyring.sealing_key(
            owner, conn=self._key_conn(conn), create=create, fresh=fresh
        )
        if key is None:
            return value
        sealed = seal(key, value, kind=kind, person_id=owner)
        memo = self.keyring.opened  # read back soon (the window): no need to decrypt
        memo[sealed] = (key, kind, value)
        if len(memo) > OPENED_KEPT:
            memo.popitem(last=False)
        return sealed

    def observe_key(self, person_id: int, wrapped: bytes | None) -> None:
        """The person's wrapped key as just read along with the person (see Keyring)."""
        if self.keyring is not None and self.keyring.database is self:
            self.keyring.observe(person_id, wrapped)

    async def opener(
        self,
        owners: Iterable[int | None],
        *,
        conn: AsyncConnection | None = None,
        fresh: bool = False,
    ) -> Opener:
        """An Opener holding the keys of `owners` (those of the rows that are sealed)."""
        wanted = {o for o in owners if o is not None}
        if self.keyring is None or not wanted:
            return PLAIN
        keys = await self.keyring.opening_keys(wanted, conn=self._key_conn(conn), fresh=fresh)
        return Opener(keys, keyring=True, memo=self.keyring.opened)

    async def opened(
        self,
        owners: Iterable[int | None],
        build: Callable[[Opener], T],
        *,
        conn: AsyncConnection | None = None,
    ) -> T:
        """`build(opener)` with the keys of `owners`. A failure with cached keys (one
        another process has since replaced) is tried once more with keys read afresh."""
        wanted = {o for o in owners if o is not None}
        opener = await self.opener(wanted, conn=conn)
        try:
            return build(opener)
        except CryptoError:
            if opener is PLAIN:
                raise
            return build(await self.opener(wanted, conn=conn, fresh=True))

    async def destroy_key(self, person_id: int, *, conn: AsyncConnection) -> None:
        """Crypto-shredding: delete the person's key (in the caller's transaction), with
        or without a master key configured here, and its cached copy."""
        await conn.execute(DELETE_KEY, {"pid": person_id})
        if self.keyring is not None:
            self.keyring.evict(person_id)

    def drop_owners(self, message_ids: Iterable[int]) -> None:
        """Forget the owners of deleted messages (SQLite may hand their ids out again)."""
        for mid in message_ids:
            self._owners.pop(mid, None)

    def note_owner(self, message_id: int, owner: int | None) -> None:
        self._owners[message_id] = owner
        if len(self._owners) > OWNERS_CACHED:
            self._owners.popitem(last=False)

    async def message_owners(
        self, message_ids: Iterable[int], *, conn: AsyncConnection | None = None
    ) -> dict[int, int | None]:
        """Whose key encrypts each message: remembered for messages this process wrote
        or read, else read (one statement)."""
        found: dict[int, int | None] = {}
        missing: list[int] = []
        for mid in set(message_ids):
            if mid in self._owners:
                found[mid] = self._owners[mid]
            else:
                missing.append(mid)
        if missing:
            if conn is not None:
                rows = (await conn.execute(_OWNER_OF, {"ids": missing})).all()
            else:
                async with self.connect() as own:
                    rows = (await own.execute(_OWNER_OF, {"ids": missing})).all()
            for mid, owner in rows:
                self.note_owner(mid, owner)
                found[mid] = owner
        return found

    async def messages_from_rows(
        self,
        rows: Sequence[tuple[Any, ChatRef, int | None]],
        *,
        conn: AsyncConnection | None = None,
    ) -> list[StoredMessage]:
        """StoredMessages of (message row, its chat, the author of the message it
        answers) triples, decrypted."""
        owners = [owner_of(r.author_id, answered) for r, _, answered in rows]
        sealed = [
            o
            for (r, _, _), o in zip(rows, owners, strict=True)
            if is_sealed(r.text) or is_sealed(r.segments_json)
        ]
        for (r, _, _), owner in zip(rows, owners, strict=True):
            if r.id is not None:
                self.note_owner(r.id, owner)
        return await self.opened(
            sealed,
            lambda opener: [
                stored_message(r, chat, opener=opener, owner=owner)
                for (r, chat, _), owner in zip(rows, owners, strict=True)
            ],
            conn=conn,
        )

    async def known_chat_id(self, chat: ChatRef, *, create: bool) -> int | None:
        """The chat's row id, remembered after the first lookup (chats are never
        deleted or renumbered); None for an unknown chat unless `create`."""
        known = self._chat_ids.get(chat)
        if known is not None:
            return known

        async def attempt() -> int | None:
            async with self.session() as s:
                found = await self.chat_id(s, chat, create=create)
                await s.commit()
                return found

        found = await self.retry_on_conflict(attempt)
        if found is not None:
            self._chat_ids[chat] = found
        return found

    async def ping(self) -> None:
        """One round trip to the database (readiness checks); StorageError if down."""
        try:
            async with self.autocommit_engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise translate(exc, url=self.url) from None

    async def retry_on_conflict(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt`; after a unique-key race, run it again to read the winner."""
        for _ in range(3):
            try:
                return await attempt()
            except IntegrityError:
                continue
        try:
            return await attempt()
        except IntegrityError as exc:
            raise translate(exc, url=self.url) from None

    async def chat_id(self, s: AsyncSession, chat: ChatRef, *, create: bool) -> int | None:
        known = self._chat_ids.get(chat)
        if known is not None:
            return known
        row = (
            await s.exec(
                select(ChatRow).where(
                    ChatRow.platform == chat.platform, ChatRow.chat_id == chat.chat_id
                )
            )
        ).first()
        if row is not None:
            assert row.id is not None
            self._chat_ids[chat] = row.id
            return row.id
        if not create:
            return None
        row = ChatRow(
            platform=chat.platform, chat_id=chat.chat_id, kind=chat.kind, created_at=now_utc()
        )
        s.add(row)
        await s.flush()
        return row.id  # cached once the transaction has committed (next lookup)

    async def aclose(self) -> None:
        await self.engine.dispose()


def now_utc() -> datetime:
    return datetime.now(UTC)


def chat_ref(row: ChatRow) -> ChatRef:
    return ChatRef.model_validate(
        {"platform": row.platform, "chat_id": row.chat_id, "kind": row.kind}
    )


def stored_message(
    row: MessageRow | Row[Any], chat: ChatRef, *, opener: Opener = PLAIN, owner: int | None = None
) -> StoredMessage:
    assert row.id is not None
    role = "assistant" if row.role == "assistant" else "user"
    text = opener.open(row.text, kind="message.text", owner=owner)
    segments = opener.open(row.segments_json, kind="message.segments", owner=owner)
    return StoredMessage(
        id=row.id,
        chat=chat,
        author_id=row.author_id,
        author_name=row.author_name,
        role=role,
        platform_message_id=row.platform_message_id,
        text=text,
        segments=SEGMENTS.validate_json(segments),
        sent_at=row.sent_at,
        answers_id=row.answers_id,
    )


async def load_messages(
    db: Database, s: AsyncSession, where: Sequence[object], limit: int | None = None
) -> list[StoredMessage]:
    query = (
        select(MessageRow, ChatRow, ANSWERED.author_id)
        .join(ChatRow, col(ChatRow.id) == col(MessageRow.chat_id))
        .outerjoin(ANSWERED, col(ANSWERED.id) == col(MessageRow.answers_id))
        .where(*where)  # type: ignore[arg-type]
        .order_by(col(MessageRow.id))
    )
    if limit is not None:
        query = query.limit(limit)
    rows = (await s.exec(query)).all()
    return await db.messages_from_rows(
        [(m, chat_ref(c), answered) for m, c, answered in rows], conn=await s.connection()
    )
