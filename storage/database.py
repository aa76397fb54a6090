"""Database: one engine, sessions that translate driver errors, shared lookups."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import TypeAdapter
from sqlalchemy import Row, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from brain.messages import ChatRef, Segment
from brain.ports import StoredMessage
from storage.db import SQLITE_BUSY_TIMEOUT_MS, create_engine, translate
from storage.tables import ChatRow, MessageRow

T = TypeVar("T")

SEGMENTS: TypeAdapter[tuple[Segment, ...]] = TypeAdapter(tuple[Segment, ...])


class Database:
    """The engine and what every repository on it shares."""

    def __init__(
        self,
        url: str,
        *,
        engine: AsyncEngine | None = None,
        busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    ) -> None:
        self.url = url
        self.engine = engine or create_engine(url, busy_timeout_ms=busy_timeout_ms)
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


def stored_message(row: MessageRow | Row[Any], chat: ChatRef) -> StoredMessage:
    assert row.id is not None
    role = "assistant" if row.role == "assistant" else "user"
    return StoredMessage(
        id=row.id,
        chat=chat,
        author_id=row.author_id,
        author_name=row.author_name,
        role=role,
        platform_message_id=row.platform_message_id,
        text=row.text,
        segments=SEGMENTS.validate_json(row.segments_json),
        sent_at=row.sent_at,
        answers_id=row.answers_id,
    )


async def load_messages(
    s: AsyncSession, where: Sequence[object], limit: int | None = None
) -> list[StoredMessage]:
    query = (
        select(MessageRow, ChatRow)
        .join(ChatRow, col(ChatRow.id) == col(MessageRow.chat_id))
        .where(*where)  # type: ignore[arg-type]
        .order_by(col(MessageRow.id))
    )
    if limit is not None:
        query = query.limit(limit)
    rows = (await s.exec(query)).all()
    return [stored_message(m, chat_ref(c)) for m, c in rows]
