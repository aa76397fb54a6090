"""SQLModel tables: people and their platform accounts, chats, L0 messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Index,
    LargeBinary,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite keeps no zone; Postgres' timestamptz does. Both come back as aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _utc_column(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class PersonRow(SQLModel, table=True):
    __tablename__ = "person"

    id: int | None = Field(default=None, primary_key=True)
    display_name: str
    first_seen_at: datetime = _utc_column()
    # /voice on|off: answer this person with voice as well as text.
    voice_replies: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    # /sticker on|off and /sticker accessory <name>: sticker replies for this person.
    stickers: bool = Field(
        default=True, sa_column=Column(Boolean, nullable=False, server_default=true())
    )
    sticker_accessory: str | None = None


class AccountRow(SQLModel, table=True):
    """A platform account of a person (Telegram user 42 is tomo person 7)."""

    __tablename__ = "account"
    __table_args__ = (UniqueConstraint("platform", "user_id", name="uq_account_platform_user"),)

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    platform: str
    user_id: str
    display_name: str


class ChatRow(SQLModel, table=True):
    __tablename__ = "chat"
    __table_args__ = (UniqueConstraint("platform", "chat_id", name="uq_chat_platform_chat"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str
    chat_id: str
    kind: str
    created_at: datetime = _utc_column()


class MessageRow(SQLModel, table=True):
    """L0: every message, who said it, where, when. Never edited."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("chat_id", "role", "platform_message_id", name="uq_message_platform_id"),
        Index("ix_message_chat_sent", "chat_id", "sent_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    chat_id: int = Field(foreign_key="chat.id")
    author_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    author_name: str
    role: str
    platform_message_id: str | None = None
    text: str = Field(sa_column=Column(Text, nullable=False))
    segments_json: str = Field(sa_column=Column(Text, nullable=False))
    sent_at: datetime = _utc_column()
    answers_id: int | None = Field(default=None, foreign_key="message.id", index=True)


class MessageEditRow(SQLModel, table=True):
    """An edit of an L0 message on its platform: the text the message had before.

    The message row holds what was said last; its earlier wordings stay here, so an
    edit never silently loses what was said. Forgetting the message removes these too.
    """

    __tablename__ = "message_edit"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="message.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    segments_json: str = Field(sa_column=Column(Text, nullable=False))
    edited_at: datetime = _utc_column()


# --- long-term memory (L1, L2) and the recall index ------------------------------------


class MessageKeyRow(SQLModel, table=True):
    """The recall index entry of an L0 message: its context key and that key's embedding.

    `scope` is where the message may be recalled ("dm:<person id>" or
    "group:<platform>:<chat id>"); recall filters on it in the query.
    """

    __tablename__ = "message_key"

    message_id: int = Field(foreign_key="message.id", primary_key=True)
    scope: str = Field(index=True)
    key_text: str = Field(sa_column=Column(Text, nullable=False))
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class MemoryRow(SQLModel, table=True):
    """L1: a short, self-contained statement with provenance."""

    __tablename__ = "memory"

    id: int | None = Field(default=None, primary_key=True)
    scope: str = Field(index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    importance: float = 0.5
    created_at: datetime = _utc_column()
    updated_at: datetime = _utc_column()
    last_recalled_at: datetime | None = _utc_column(nullable=True)
    recall_count: int = 0
    embedding: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class MemoryAboutRow(SQLModel, table=True):
    __tablename__ = "memory_about"

    memory_id: int = Field(foreign_key="memory.id", primary_key=True)
    person_id: int = Field(foreign_key="person.id", primary_key=True, index=True)


class MemorySourceRow(SQLModel, table=True):
    """Provenance: the L0 messages an L1 memory was derived from."""

    __tablename__ = "memory_source"

    memory_id: int = Field(foreign_key="memory.id", primary_key=True)
    message_id: int = Field(foreign_key="message.id", primary_key=True, index=True)


class MemoryVersionRow(SQLModel, table=True):
    """Every change of a memory: the text it had before, and why it changed."""

    __tablename__ = "memory_version"

    id: int | None = Field(default=None, primary_key=True)
    memory_id: int = Field(foreign_key="memory.id", index=True)
    text: str = Field(sa_column=Column(Text, nullable=False))
    importance: float
    reason: str
    changed_at: datetime = _utc_column()


class SummaryRow(SQLModel, table=True):
    """L2, versioned: a chat's daily summary, a person's profile, the self-concept.

    kind = "daily" (subject = chat key, day = YYYY-MM-DD), "profile" (subject = person
    id), "self" (the self-concept in one chat; subject = chat key). Each rewrite adds a
    version.
    """

    __tablename__ = "summary"
    __table_args__ = (
        UniqueConstraint("kind", "subject", "day", "version", name="uq_summary_version"),
        Index("ix_summary_lookup", "kind", "subject", "day"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str
    subject: str
    day: str = ""
    version: int
    text: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _utc_column()


class PersonKeyRow(SQLModel, table=True):
    """A person's data key, wrapped by the master key (see storage/crypto.py).

    Deleting the row (`/memory forget all`) makes everything encrypted with it unreadable,
    in backups too when they do not hold this table (crypto-shredding).
    """

    __tablename__ = "person_key"

    person_id: int = Field(foreign_key="person.id", primary_key=True)
    wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _utc_column()


class ConsolidationRow(SQLModel, table=True):
    """How far consolidation has read each chat (the last message id it took in)."""

    __tablename__ = "consolidation"

    chat_id: int = Field(foreign_key="chat.id", primary_key=True)
    through_message_id: int
    at: datetime = _utc_column()


metadata = SQLModel.metadata

# The federation server's tables (storage/federation_tables.py) join the same metadata.
from storage import federation_tables as _federation_tables  # noqa: E402, F401
