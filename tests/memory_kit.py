"""A small world for /memory tests: real stores, a real Recall, people who talk."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from brain.blobs import MemoryBlobStore
from brain.clock import ManualClock
from brain.commands import CommandContext, parse_command, run_command
from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall
from brain.memory.types import Memory, NewMemory, scope_of
from brain.messages import ChatRef, Document, Reply, Text
from brain.ports import NewMessage, Person, StoredMessage
from storage.crypto import (
    CryptoError,
    Encryption,
    cipher,
    is_sealed,
    load_master_key,
    open_sealed,
    unwrap,
)
from storage.database import Database, load_messages
from storage.longterm import SqlLongTermStore
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, T0, inbound

BOB_DM = ChatRef(platform="telegram", chat_id="101", kind="dm")


@dataclass
class World:
    store: SqlMemoryStore
    longterm: SqlLongTermStore
    recall: Recall
    blobs: MemoryBlobStore
    clock: ManualClock
    alice: Person
    bob: Person
    consolidated: list[ChatRef] = field(default_factory=list)
    rewritten: list[int] = field(default_factory=list)
    _minutes: int = 0

    def scope(self, person: Person, chat: ChatRef = DM) -> str:
        return scope_of(chat, person_id=person.id)

    def _next_time(self) -> datetime:
        self._minutes += 1
        return T0 + timedelta(minutes=self._minutes)

    async def say(self, person: Person, words: str, *, chat: ChatRef = DM) -> StoredMessage:
        """Store what `person` said in `chat` and index it as the brain would."""
        return await self._store(person, words, chat=chat, answers=None)

    async def answer(self, to: StoredMessage, words: str) -> StoredMessage:
        """Store the bot's reply to `to` (indexed too)."""
        return await self._store(None, words, chat=to.chat, answers=to)

    async def _store(
        self, person: Person | None, words: str, *, chat: ChatRef, answers: StoredMessage | None
    ) -> StoredMessage:
        msg, _ = await self.store.add_message(
            NewMessage(
                chat=chat,
                author=person,
                role="user" if person else "assistant",
                platform_message_id=None if person is None else f"p{self._minutes}",
                text=words,
                segments=(Text(text=words),),
                sent_at=self._next_time(),
                answers_id=None if answers is None else answers.id,
            )
        )
        human = person or (self.alice if chat == DM else self.bob)
        await self.recall.index_message(msg, scope=scope_of(chat, person_id=human.id))
        return msg

    async def remember(
        self,
        words: str,
        *,
        about: tuple[Person, ...],
        sources: tuple[StoredMessage, ...] = (),
        scope: str | None = None,
    ) -> Memory:
        first = about[0]
        memory = await self.longterm.add_memory(
            NewMemory(
                scope=scope or (scope_of(sources[0].chat, person_id=first.id) if sources else ""),
                text=words,
                about=tuple(p.id for p in about),
                source_message_ids=tuple(m.id for m in sources),
                created_at=self._next_time(),
            )
        )
        self.recall.invalidate(memory.scope)  # as consolidation does after adding
        return memory

    def ctx(
        self, person: Person, *, chat: ChatRef | None = None, words: str = "/memory"
    ) -> CommandContext:
        """The context of `person` typing `words` (in their own DM unless told)."""
        ref = ALICE if person.id == self.alice.id else BOB
        chat = chat or (DM if ref is ALICE else BOB_DM)
        return CommandContext(
            inbound=inbound(words, chat=chat, author=ref),
            person=person,
            scope=scope_of(chat, person_id=person.id),
            store=self.store,
            longterm=self.longterm,
            recall=self.recall,
            blobs=self.blobs,
            clock=self.clock,
            consolidate=self._consolidate,
            rewrite_profile=self._rewrite_profile,
        )

    async def run(
        self, words: str, *, person: Person | None = None, chat: ChatRef | None = None
    ) -> list[Reply]:
        command = parse_command(words)
        assert command is not None, words
        return await run_command(command, self.ctx(person or self.alice, chat=chat, words=words))

    async def ask(
        self, words: str, *, person: Person | None = None, chat: ChatRef | None = None
    ) -> str:
        """The one text answer to a command."""
        [reply] = await self.run(words, person=person, chat=chat)
        return reply.text

    async def ask_all(
        self, words: str, *, person: Person | None = None, chat: ChatRef | None = None
    ) -> str:
        """Every answer to a command as one string, documents' contents included."""
        parts: list[str] = []
        for reply in await self.run(words, person=person, chat=chat):
            parts.append(reply.text)
            for seg in reply.segments:
                if isinstance(seg, Document):
                    parts.append((await self.blobs.get(seg.blob_key)).decode())
        return "\n".join(parts)

    async def _consolidate(self, chat: ChatRef) -> str:
        self.consolidated.append(chat)
        return "Consolidated 3 new messages into 1 memory."

    async def _rewrite_profile(self, person_id: int) -> None:
        """A stand-in for the model: the profile is the memories about the person now."""
        self.rewritten.append(person_id)
        total = await self.longterm.count_memories_about(person_id)
        about = await self.longterm.memories_about(person_id, offset=0, limit=max(total, 1))
        await self.longterm.put_summary(
            kind="profile",
            subject=str(person_id),
            text="Profile: " + " ".join(m.text for m in about),
            at=self.clock.now(),
        )


async def make_world(store: SqlMemoryStore) -> World:
    longterm = SqlLongTermStore(store.db)
    return World(
        store=store,
        longterm=longterm,
        recall=Recall(store=longterm, embedder=HashEmbedder()),
        blobs=MemoryBlobStore(),
        clock=ManualClock(T0 + timedelta(days=1)),
        alice=await store.resolve_person(ALICE, seen_at=T0),
        bob=await store.resolve_person(BOB, seen_at=T0),
    )


SEALED_KINDS = (
    "message.text",
    "message.segments",
    "message_edit.text",
    "message_edit.segments",
    "message_key",
    "memory",
    "memory_version",
    "memory_version.reason",
    "summary.profile",
)


async def find_everywhere(
    db: Database,
    needle: str,
    *,
    see_through: bool = True,
    keys: dict[int, AESGCM] | None = None,
) -> set[str]:
    """Every `table.column` of the database holding `needle` (any case), in any row.

    Text is searched as text, binary columns as UTF-8 bytes. `see_through`: encrypted
    values are searched as what they decrypt to with any person key the database still
    has (what someone holding the database and the master key could read), and with
    `keys` (taken earlier with `person_keys`, so that a forget is checked to delete
    rows, not only to destroy the key that reads them).
    """
    low = needle.casefold()
    raw = needle.encode()
    hits: set[str] = set()
    async with db.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert {"message", "memory", "message_key", "summary"} <= set(tables), tables
        known = {**(keys or {}), **(await _person_keys(db, conn))} if see_through else {}
        for table in tables:
            rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).all()
            for row in rows:
                for column, value in row._mapping.items():
                    if isinstance(value, str) and is_sealed(value):
                        value = _decrypted(value, known)
                    if _holds(value, low=low, raw=raw):
                        hits.add(f"{table}.{column}")
    return hits


async def person_keys(db: Database) -> dict[int, AESGCM]:
    """Every person key the database holds now, unwrapped."""
    async with db.engine.connect() as conn:
        return await _person_keys(db, conn)


async def _person_keys(db: Database, conn: AsyncConnection) -> dict[int, AESGCM]:
    if db.keyring is None:
        return {}
    rows = (await conn.execute(text("SELECT person_id, wrapped_key FROM person_key"))).all()
    master = db.keyring.encryption.master_key
    return {pid: cipher(unwrap(master, pid, bytes(wrapped))) for pid, wrapped in rows}


def _decrypted(value: str, keys: dict[int, AESGCM]) -> str:
    """The plaintext of a sealed value under any of `keys` (as it is when none opens it)."""
    for pid, key in keys.items():
        for kind in SEALED_KINDS:
            try:
                return open_sealed(key, value, kind=kind, person_id=pid)
            except CryptoError:
                continue
    return value


def _holds(value: object, *, low: str, raw: bytes) -> bool:
    if isinstance(value, str):
        return low in value.casefold()
    if isinstance(value, bytes | memoryview):
        return raw in bytes(value)
    return False


def stored_messages(data_dir: Path) -> list[tuple[str, str]]:
    """(role, text) of every message in a data folder's SQLite database, in order,
    decrypted with the folder's master key (what `tomo` stored, as a person sees it)."""

    async def read() -> list[tuple[str, str]]:
        master = load_master_key(None, data_dir=data_dir, create=False)
        db = Database(
            f"sqlite:///{data_dir / 'tomo.db'}",
            encryption=None if master is None else Encryption(master_key=master),
        )
        try:
            async with db.session() as s:
                return [(m.role, m.text) for m in await load_messages(db, s, [])]
        finally:
            await db.aclose()

    return asyncio.run(read())
