"""SqlLongTermStore: L1 memories, the recall index and L2 summaries on SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import LargeBinary, bindparam, delete, func, text, tuple_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from brain.memory.types import IndexEntry, Memory, MemoryVersion, NewMemory, Summary
from brain.messages import ChatRef
from brain.ports import ForgetReport, StoredMessage
from storage import pgvector
from storage.crypto import is_sealed
from storage.database import ANSWERED, Database, chat_ref, load_messages, owner_of
from storage.db import translate
from storage.deletion import delete_memories, delete_messages
from storage.keyring import Opener
from storage.tables import (
    ChatRow,
    ConsolidationRow,
    MemoryAboutRow,
    MemoryRow,
    MemorySourceRow,
    MemoryVersionRow,
    MessageKeyRow,
    MessageRow,
    SummaryRow,
)

_SUMMARY = SummaryRow.__table__  # type: ignore[attr-defined]
_SUMMARY_COLUMNS = [c.name for c in _SUMMARY.c]
_RANKED_SUMMARIES = (
    sa_select(
        _SUMMARY,
        func.row_number()
        .over(
            partition_by=(_SUMMARY.c.kind, _SUMMARY.c.subject, _SUMMARY.c.day),
            order_by=_SUMMARY.c.version.desc(),
        )
        .label("newest"),
    )
    .where(
        tuple_(_SUMMARY.c.kind, _SUMMARY.c.subject, _SUMMARY.c.day).in_(
            bindparam("keys", expanding=True)
        )
    )
    .subquery()
)
# The latest version of each (kind, subject, day) asked for, in one statement.
_LATEST_SUMMARIES = sa_select(_RANKED_SUMMARIES).where(_RANKED_SUMMARIES.c.newest == 1)


class SqlLongTermStore:
    def __init__(self, database: Database) -> None:
        self.db = database
        # Postgres searches vectors itself (pgvector); SQLite leaves it to recall.
        self.native_vectors = database.dialect == "postgresql"

    # the recall index ----------------------------------------------------------------

    async def put_message_key(
        self,
        message_id: int,
        *,
        scope: str,
        key: str,
        embedding: bytes | None,
        keep_embedding: bool = False,
    ) -> None:
        # One upsert (a statement per message on the hot path; was read, write, vector).
        # The key quotes the message: it is encrypted with the message's owner's key.
        owner = (await self.db.message_owners([message_id])).get(message_id)
        changed = ["scope", "key_text"] + ([] if keep_embedding else ["embedding"])
        params: dict[str, object] = {
            "id": message_id,
            "scope": scope,
            "key": await self.db.seal(key, kind="message_key", owner=owner),
            "emb": None if keep_embedding else embedding,
        }
        columns, values = "message_id, scope, key_text, embedding", ":id, :scope, :key, :emb"
        if self.native_vectors:
            columns, values = columns + ", vec", values + ", CAST(:v AS vector)"
            vector = None if keep_embedding or embedding is None else embedding
            params["v"] = None if vector is None else pgvector.literal(vector)
            if not keep_embedding:
                changed.append(pgvector.VEC_COLUMN)
        updates = ", ".join(f"{c} = excluded.{c}" for c in changed)
        statement = text(
            f"INSERT INTO message_key ({columns}) VALUES ({values}) "
            f"ON CONFLICT (message_id) DO UPDATE SET {updates}"
        ).bindparams(bindparam("emb", type_=LargeBinary))
        async with self.db.connect() as conn:
            await conn.execute(statement, params)

    async def put_embeddings(self, items: Sequence[tuple[str, int, bytes]]) -> None:
        """Store new embeddings of entries, (kind, id, float32 bytes); text unchanged."""
        if not items:
            return
        async with self.db.session() as s:
            for kind, row_id, embedding in items:
                table = "message_key" if kind == "message" else "memory"
                row_col = MessageKeyRow.message_id if kind == "message" else MemoryRow.id
                model = MessageKeyRow if kind == "message" else MemoryRow
                await s.exec(
                    update(model).where(col(row_col) == row_id).values(embedding=embedding)
                )
                if self.native_vectors:
                    await pgvector.set_vector(s, table=table, row_id=row_id, embedding=embedding)
            await s.commit()

    async def dense_search(
        self, scope: str, query: Sequence[float], *, limit: int
    ) -> list[tuple[str, int, float]]:
        """The nearest entries of `scope` by cosine similarity (Postgres only)."""
        if not self.native_vectors:
            raise NotImplementedError("dense_search needs Postgres with pgvector")
        try:
            async with self.db.autocommit_engine.connect() as conn:
                return await pgvector.search(conn, scope=scope, query=query, limit=limit)
        except SQLAlchemyError as exc:
            raise translate(exc, url=self.db.url) from None

    async def ensure_vector_index(self, scope: str, *, dims: int) -> None:
        """Give a large scope its own HNSW index (Postgres; idempotent)."""
        if not self.native_vectors:
            return
        async with self.db.session() as s:
            await pgvector.ensure_index(s, scope=scope, dims=dims)
            await s.commit()

    async def index_entries(self, scope: str) -> list[IndexEntry]:
        async with self.db.session() as s:
            keyed = (
                await s.exec(
                    select(MessageKeyRow, MessageRow, ANSWERED.author_id)
                    .join(MessageRow, col(MessageRow.id) == col(MessageKeyRow.message_id))
                    .outerjoin(ANSWERED, col(ANSWERED.id) == col(MessageRow.answers_id))
                    .where(MessageKeyRow.scope == scope)
                    .order_by(col(MessageRow.id))
                )
            ).all()
            owners = [owner_of(msg.author_id, answered) for _, msg, answered in keyed]
            for (key, _, _), owner in zip(keyed, owners, strict=True):
                self.db.note_owner(key.message_id, owner)

            def build(opener: Opener) -> list[IndexEntry]:
                return [
                    IndexEntry(
                        kind="message",
                        id=msg.id or 0,
                        scope=scope,
                        key=opener.open(key.key_text, kind="message_key", owner=owner),
                        text=opener.open(msg.text, kind="message.text", owner=owner),
                        source_message_ids=(msg.id or 0,),
                        author_id=msg.author_id,
                        author_name=msg.author_name,
                        at=msg.sent_at,
                        embedding=key.embedding,
                    )
                    for (key, msg, _), owner in zip(keyed, owners, strict=True)
                ]

            entries = await self.db.opened(
                (
                    o
                    for (key, msg, _), o in zip(keyed, owners, strict=True)
                    if is_sealed(key.key_text) or is_sealed(msg.text)
                ),
                build,
            )
            memories = await self._memory_pairs(s, [col(MemoryRow.scope) == scope])
        for mem, embedding in memories:
            entries.append(
                IndexEntry(
                    kind="memory",
                    id=mem.id,
                    scope=scope,
                    key=mem.text,
                    text=mem.text,
                    source_message_ids=mem.source_message_ids,
                    author_id=mem.about[0] if mem.about else None,
                    at=mem.updated_at,
                    embedding=embedding,
                )
            )
        return entries

    # L1 memories ---------------------------------------------------------------------

    async def _memories(self, s: AsyncSession, where: Sequence[object]) -> list[Memory]:
        return [memory for memory, _ in await self._memory_pairs(s, where)]

    async def _memory_pairs(
        self, s: AsyncSession, where: Sequence[object]
    ) -> list[tuple[Memory, bytes | None]]:
        """Memories with their stored embeddings, read in one pass over the rows."""
        rows = (
            await s.exec(select(MemoryRow).where(*where).order_by(col(MemoryRow.id)))  # type: ignore[arg-type]
        ).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        about: dict[int, list[int]] = {}
        for a in (
            await s.exec(select(MemoryAboutRow).where(col(MemoryAboutRow.memory_id).in_(ids)))
        ).all():
            about.setdefault(a.memory_id, []).append(a.person_id)
        sources: dict[int, list[int]] = {}
        for src in (
            await s.exec(select(MemorySourceRow).where(col(MemorySourceRow.memory_id).in_(ids)))
        ).all():
            sources.setdefault(src.memory_id, []).append(src.message_id)

        def build(opener: Opener) -> list[tuple[Memory, bytes | None]]:
            return [
                (
                    Memory(
                        id=r.id or 0,
                        scope=r.scope,
                        text=opener.open(
                            r.text, kind="memory", owner=_memory_owner(about.get(r.id or 0, ()))
                        ),
                        about=tuple(sorted(about.get(r.id or 0, []))),
                        source_message_ids=tuple(sorted(sources.get(r.id or 0, []))),
                        importance=r.importance,
                        created_at=r.created_at,
                        updated_at=r.updated_at,
                        last_recalled_at=r.last_recalled_at,
                        recall_count=r.recall_count,
                    ),
                    r.embedding,
                )
                for r in rows
            ]

        return await self.db.opened(
            (_memory_owner(about.get(r.id or 0, ())) for r in rows if is_sealed(r.text)), build
        )

    async def add_memory(self, memory: NewMemory) -> Memory:
        owner = _memory_owner(memory.about)
        sealed = await self.db.seal(memory.text, kind="memory", owner=owner, fresh=True)
        async with self.db.session() as s:
            row = MemoryRow(
                scope=memory.scope,
                text=sealed,
                importance=memory.importance,
                created_at=memory.created_at,
                updated_at=memory.created_at,
                embedding=memory.embedding,
            )
            s.add(row)
            await s.flush()
            assert row.id is not None
            if self.native_vectors and memory.embedding is not None:
                await pgvector.set_vector(
                    s, table="memory", row_id=row.id, embedding=memory.embedding
                )
            for pid in sorted(set(memory.about)):
                s.add(MemoryAboutRow(memory_id=row.id, person_id=pid))
            for mid in sorted(set(memory.source_message_ids)):
                s.add(MemorySourceRow(memory_id=row.id, message_id=mid))
            await s.commit()
            [stored] = await self._memories(s, [col(MemoryRow.id) == row.id])
            return stored

    async def update_memory(
        self,
        memory_id: int,
        *,
        text: str,
        importance: float,
        embedding: bytes | None,
        reason: str,
        at: datetime,
        add_sources: Sequence[int] = (),
    ) -> Memory:
        async with self.db.session() as s:
            row = await s.get(MemoryRow, memory_id)
            if row is None:
                raise KeyError(memory_id)
            owner = await self._owner_of_memory(s, memory_id)
            sealed = row.text
            before = await self.db.opened(
                [owner] if is_sealed(sealed) else [],
                lambda opener: opener.open(sealed, kind="memory", owner=owner),
            )
            seal = self.db.seal
            s.add(
                MemoryVersionRow(
                    memory_id=memory_id,
                    text=await seal(before, kind="memory_version", owner=owner, fresh=True),
                    importance=row.importance,
                    reason=await seal(reason, kind="memory_version.reason", owner=owner),
                    changed_at=at,
                )
            )
            row.text = await seal(text, kind="memory", owner=owner)
            row.importance, row.updated_at = importance, at
            if embedding is not None:
                row.embedding = embedding
            s.add(row)
            if self.native_vectors and embedding is not None:
                await s.flush()
                await pgvector.set_vector(s, table="memory", row_id=memory_id, embedding=embedding)
            known = set(
                (
                    await s.exec(
                        select(MemorySourceRow.message_id).where(
                            MemorySourceRow.memory_id == memory_id
                        )
                    )
                ).all()
            )
            for mid in sorted(set(add_sources) - known):
                s.add(MemorySourceRow(memory_id=memory_id, message_id=mid))
            await s.commit()
            [stored] = await self._memories(s, [col(MemoryRow.id) == memory_id])
            return stored

    async def get_memory(self, memory_id: int) -> Memory | None:
        async with self.db.session() as s:
            found = await self._memories(s, [col(MemoryRow.id) == memory_id])
        return found[0] if found else None

    async def memories_in_scope(self, scope: str) -> list[Memory]:
        async with self.db.session() as s:
            return await self._memories(s, [col(MemoryRow.scope) == scope])

    async def memory_embeddings(self, scope: str) -> list[tuple[Memory, bytes | None]]:
        async with self.db.session() as s:
            return await self._memory_pairs(s, [col(MemoryRow.scope) == scope])

    async def memories_about(self, person_id: int, *, offset: int, limit: int) -> list[Memory]:
        async with self.db.session() as s:
            ids = (
                await s.exec(
                    select(MemoryAboutRow.memory_id)
                    .where(MemoryAboutRow.person_id == person_id)
                    .order_by(col(MemoryAboutRow.memory_id))
                    .offset(offset)
                    .limit(limit)
                )
            ).all()
            if not ids:
                return []
            return await self._memories(s, [col(MemoryRow.id).in_(list(ids))])

    async def count_memories_about(self, person_id: int) -> int:
        async with self.db.session() as s:
            query = select(func.count()).select_from(MemoryAboutRow)
            return int((await s.exec(query.where(MemoryAboutRow.person_id == person_id))).one())

    async def memory_history(self, memory_id: int) -> list[MemoryVersion]:
        async with self.db.session() as s:
            rows = (
                await s.exec(
                    select(MemoryVersionRow)
                    .where(MemoryVersionRow.memory_id == memory_id)
                    .order_by(col(MemoryVersionRow.id))
                )
            ).all()
            sealed = any(is_sealed(r.text) or is_sealed(r.reason) for r in rows)
            owner = await self._owner_of_memory(s, memory_id) if sealed else None
        return await self.db.opened(
            [owner],
            lambda opener: [
                MemoryVersion(
                    memory_id=r.memory_id,
                    text=opener.open(r.text, kind="memory_version", owner=owner),
                    importance=r.importance,
                    reason=opener.open(r.reason, kind="memory_version.reason", owner=owner),
                    changed_at=r.changed_at,
                )
                for r in rows
            ],
        )

    async def _owner_of_memory(self, s: AsyncSession, memory_id: int) -> int | None:
        """Whose key encrypts a memory: the first person it is about."""
        first = (
            await s.exec(
                select(func.min(MemoryAboutRow.person_id)).where(
                    MemoryAboutRow.memory_id == memory_id
                )
            )
        ).one()
        return None if first is None else int(first)

    async def mark_recalled(self, memory_ids: Sequence[int], *, at: datetime) -> None:
        if not memory_ids:
            return
        async with self.db.session(autocommit=True) as s:
            await s.exec(
                update(MemoryRow)
                .where(col(MemoryRow.id).in_(list(memory_ids)))
                .values(last_recalled_at=at, recall_count=MemoryRow.recall_count + 1)
            )
            await s.commit()

    # L0 reads for provenance, consolidation and export ------------------------------

    async def messages(self, message_ids: Sequence[int]) -> list[StoredMessage]:
        if not message_ids:
            return []
        async with self.db.session() as s:
            return await load_messages(self.db, s, [col(MessageRow.id).in_(list(message_ids))])

    async def messages_after(
        self, chat: ChatRef, *, after_id: int, limit: int
    ) -> list[StoredMessage]:
        async with self.db.session() as s:
            chat_id = await self.db.chat_id(s, chat, create=False)
            if chat_id is None:
                return []
            return await load_messages(
                self.db,
                s,
                [col(MessageRow.chat_id) == chat_id, col(MessageRow.id) > after_id],
                limit=limit,
            )

    async def messages_by(self, person_id: int) -> list[StoredMessage]:
        async with self.db.session() as s:
            return await load_messages(self.db, s, [col(MessageRow.author_id) == person_id])

    # forgetting ----------------------------------------------------------------------

    async def forget_memory(self, memory_id: int) -> ForgetReport:
        async with self.db.session() as s:
            sources = (
                await s.exec(
                    select(MemorySourceRow.message_id).where(MemorySourceRow.memory_id == memory_id)
                )
            ).all()
            if await s.get(MemoryRow, memory_id) is None:
                return ForgetReport()
            await delete_memories(s, [memory_id])
            gone = await delete_messages(self.db, s, list(sources))
            await s.commit()
        return ForgetReport(memory_ids=(memory_id,), message_ids=tuple(gone))

    async def forget_person(self, person_id: int) -> ForgetReport:
        async with self.db.session() as s:
            about = (
                await s.exec(
                    select(MemoryAboutRow.memory_id).where(MemoryAboutRow.person_id == person_id)
                )
            ).all()
            said = (
                await s.exec(select(MessageRow.id).where(MessageRow.author_id == person_id))
            ).all()
            derived = (
                await s.exec(
                    select(MemorySourceRow.memory_id).where(
                        col(MemorySourceRow.message_id).in_([m for m in said if m is not None])
                    )
                )
            ).all()
            # what the memories about them came from goes too, as in forget_memory
            sources = (
                await s.exec(
                    select(MemorySourceRow.message_id).where(
                        col(MemorySourceRow.memory_id).in_(list(about))
                    )
                )
            ).all()
            memory_ids = sorted({*about, *derived})
            await delete_memories(s, memory_ids)
            gone = await delete_messages(
                self.db, s, sorted({*(m for m in said if m is not None), *sources})
            )
            await s.exec(
                delete(SummaryRow).where(
                    col(SummaryRow.kind) == "profile", col(SummaryRow.subject) == str(person_id)
                )
            )
            # Crypto-shredding: without their key, whatever of theirs is left anywhere
            # (a backup, a log of the database) cannot be decrypted.
            await self.db.destroy_key(person_id, conn=await s.connection())
            await s.commit()
        if self.db.keyring is not None:
            self.db.keyring.evict(person_id)
        return ForgetReport(memory_ids=tuple(memory_ids), message_ids=tuple(gone))

    async def scrub_deleted(self) -> None:
        """SQLite zeroes deleted rows (secure_delete) but keeps older copies of the pages
        in its write-ahead log until a checkpoint: checkpoint and truncate it. Postgres
        leaves dead rows to (auto)vacuum; nothing to do here."""
        if self.db.dialect != "sqlite":
            return
        try:
            async with self.db.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except SQLAlchemyError as exc:
            raise translate(exc, url=self.db.url) from None

    # L2 summaries --------------------------------------------------------------------

    async def put_summary(
        self, *, kind: str, subject: str, day: str = "", text: str, at: datetime
    ) -> Summary:
        owner = _summary_owner(kind, subject)
        sealed = await self.db.seal(text, kind=f"summary.{kind}", owner=owner, fresh=True)

        async def attempt() -> Summary:
            async with self.db.session() as s:
                latest = (
                    await s.exec(
                        select(func.max(SummaryRow.version)).where(
                            SummaryRow.kind == kind,
                            SummaryRow.subject == subject,
                            SummaryRow.day == day,
                        )
                    )
                ).one()
                row = SummaryRow(
                    kind=kind,
                    subject=subject,
                    day=day,
                    version=(latest or 0) + 1,
                    text=sealed,
                    created_at=at,
                )
                s.add(row)
                await s.commit()
                return _summary(row).model_copy(update={"text": text})

        return await self.db.retry_on_conflict(attempt)

    async def latest_summary(self, *, kind: str, subject: str, day: str = "") -> Summary | None:
        async with self.db.session(autocommit=True) as s:
            row = (
                await s.exec(
                    select(SummaryRow)
                    .where(
                        SummaryRow.kind == kind,
                        SummaryRow.subject == subject,
                        SummaryRow.day == day,
                    )
                    .order_by(col(SummaryRow.version).desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        [found] = await self._summaries([row])
        return found

    async def latest_summaries(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Summary]:
        if not keys:
            return {}
        async with self.db.connect() as conn:
            rows = (await conn.execute(_LATEST_SUMMARIES, {"keys": list(keys)})).all()
        found = await self._summaries(
            [
                SummaryRow.model_validate({n: getattr(row, n) for n in _SUMMARY_COLUMNS})
                for row in rows
            ]
        )
        return {(f.kind, f.subject, f.day): f for f in found}

    async def summary_versions(self, *, kind: str, subject: str) -> list[Summary]:
        async with self.db.session() as s:
            rows = (
                await s.exec(
                    select(SummaryRow)
                    .where(SummaryRow.kind == kind, SummaryRow.subject == subject)
                    .order_by(col(SummaryRow.day), col(SummaryRow.version))
                )
            ).all()
        return await self._summaries(rows)

    async def _summaries(self, rows: Sequence[SummaryRow]) -> list[Summary]:
        """Summaries of rows, profiles decrypted with their person's key."""

        def build(opener: Opener) -> list[Summary]:
            return [
                _summary(r).model_copy(
                    update={
                        "text": opener.open(
                            r.text,
                            kind=f"summary.{r.kind}",
                            owner=_summary_owner(r.kind, r.subject),
                        )
                    }
                )
                for r in rows
            ]

        return await self.db.opened(
            (_summary_owner(r.kind, r.subject) for r in rows if is_sealed(r.text)), build
        )

    async def delete_summaries(self, *, kind: str, subject: str) -> None:
        async with self.db.session() as s:
            await s.exec(
                delete(SummaryRow).where(
                    col(SummaryRow.kind) == kind, col(SummaryRow.subject) == subject
                )
            )
            await s.commit()

    # consolidation bookkeeping -------------------------------------------------------

    async def consolidation_cursor(self, chat: ChatRef) -> int:
        async with self.db.session() as s:
            chat_id = await self.db.chat_id(s, chat, create=False)
            if chat_id is None:
                return 0
            row = await s.get(ConsolidationRow, chat_id)
        return row.through_message_id if row else 0

    async def set_consolidation_cursor(
        self, chat: ChatRef, *, message_id: int, at: datetime
    ) -> None:
        async with self.db.session() as s:
            chat_id = await self.db.chat_id(s, chat, create=True)
            assert chat_id is not None
            row = await s.get(ConsolidationRow, chat_id)
            if row is None:
                row = ConsolidationRow(chat_id=chat_id, through_message_id=message_id, at=at)
            row.through_message_id, row.at = message_id, at
            s.add(row)
            await s.commit()

    async def chats_to_consolidate(self, *, quiet_since: datetime) -> list[ChatRef]:
        async with self.db.session() as s:
            last = (
                select(
                    MessageRow.chat_id,
                    func.max(MessageRow.id).label("last_id"),
                    func.max(MessageRow.sent_at).label("last_at"),
                )
                .group_by(col(MessageRow.chat_id))
                .subquery()
            )
            rows = (
                await s.exec(
                    select(
                        ChatRow, last.c.last_id, last.c.last_at, ConsolidationRow.through_message_id
                    )
                    .join(last, last.c.chat_id == ChatRow.id)
                    .outerjoin(ConsolidationRow, col(ConsolidationRow.chat_id) == col(ChatRow.id))
                )
            ).all()
        due: list[ChatRef] = []
        for chat, last_id, last_at, through in rows:
            last_at_utc = last_at if last_at.tzinfo else last_at.replace(tzinfo=quiet_since.tzinfo)
            if last_id > (through or 0) and last_at_utc <= quiet_since:
                due.append(chat_ref(chat))
        return due


def _memory_owner(about: Sequence[int]) -> int | None:
    """A memory is encrypted with the key of the first person it is about."""
    return min(about) if about else None


def _summary_owner(kind: str, subject: str) -> int | None:
    """Profiles are encrypted with their person's key; daily summaries and self-concepts
    (about a chat, not one person) are not."""
    return int(subject) if kind == "profile" and subject.isdigit() else None


def _summary(row: SummaryRow) -> Summary:
    kind = row.kind if row.kind in ("daily", "profile", "self") else "daily"
    return Summary.model_validate(
        {
            "kind": kind,
            "subject": row.subject,
            "day": row.day,
            "version": row.version,
            "text": row.text,
            "created_at": row.created_at,
        }
    )
