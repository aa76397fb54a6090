"""Consolidation: new L0 messages -> L1 memories (deduplicated) -> L2 summaries.

A chat is read after its consolidation cursor in batches. For each batch, in order:
extract memories (structured JSON, checked), merge them into near-duplicates of the same
scope or add them, rewrite the chat's daily summary of each day the batch covers, write
new versions of the speakers' profiles and of the self-concept, and only then move the
cursor past the batch. A failure anywhere leaves the cursor where it was, so the batch is
read again next time (deduplication makes that harmless). Nothing is ever deleted here,
except profiles by `rewrite_profile`, which must not let a forgotten fact survive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from brain.errors import ConfigError, TomoError
from brain.memory.dedupe import store_deduplicated
from brain.memory.extract import (
    EXTRACT_SCHEMA,
    Planned,
    extraction_turns,
    parse_candidates,
    plan_memories,
)
from brain.memory.recall import Recall
from brain.memory.summaries import daily_turns, profile_turns, self_turns
from brain.memory.types import Memory, Summary
from brain.messages import ChatRef
from brain.persona.card import PersonaCard
from brain.ports import (
    ChatTurn,
    Clock,
    Embedder,
    LanguageModel,
    LongTermStore,
    MemoryStore,
    StoredMessage,
)
from brain.prompt import truncate

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ConsolidationConfig:
    idle: timedelta = field(default_factory=lambda: timedelta(hours=8))
    batch_messages: int = 40
    max_batches: int = 25  # per run; the rest waits for the next run
    merge_threshold: float = 0.9
    max_message_chars: int = 400  # each message, as the model sees it
    max_prompt_chars: int = 8000  # the messages or facts of one prompt
    max_memory_chars: int = 300
    max_summary_chars: int = 2000
    max_memories_per_batch: int = 20
    max_sources: int = 3
    profile_memories: int = 60  # the newest memories about a person a profile sees
    extract_tokens: int = 800
    summary_tokens: int = 400
    profile_tokens: int = 400
    self_tokens: int = 300
    temperature: float = 0.2

    def __post_init__(self) -> None:
        if self.batch_messages < 1 or self.max_batches < 1:
            raise ConfigError("consolidation batch_messages and max_batches must be >= 1")
        if not 0.0 < self.merge_threshold <= 1.0:
            raise ConfigError("consolidation merge_threshold must be in (0, 1]")
        if self.idle <= timedelta(0):
            raise ConfigError("consolidation idle must be a positive duration")


@dataclass(frozen=True, kw_only=True)
class ConsolidationReport:
    chat: ChatRef
    messages_read: int = 0
    memories_added: int = 0
    memories_merged: int = 0
    skipped: int = 0  # model proposals that failed the checks
    summaries_written: int = 0  # daily summary versions
    profiles_written: int = 0
    self_written: int = 0

    @property
    def summary_line(self) -> str:
        if self.messages_read == 0:
            return "Nothing new to consolidate."
        s = "" if self.messages_read == 1 else "s"
        return (
            f"Consolidated {self.messages_read} message{s}: "
            f"{self.memories_added} new memories, {self.memories_merged} merged, "
            f"{self.profiles_written} profiles updated."
        )


@dataclass
class _Tally:
    read: int = 0
    added: int = 0
    merged: int = 0
    skipped: int = 0
    summaries: int = 0
    profiles: int = 0
    selves: int = 0


def _day(message: StoredMessage) -> str:
    return message.sent_at.strftime("%Y-%m-%d")


class Consolidator:
    def __init__(
        self,
        *,
        store: MemoryStore,
        longterm: LongTermStore,
        model: LanguageModel,
        embedder: Embedder,
        recall: Recall,
        persona: PersonaCard,
        clock: Clock,
        config: ConsolidationConfig | None = None,
    ) -> None:
        self.store = store
        self.longterm = longterm
        self.model = model
        self.embedder = embedder
        self.recall = recall
        self.persona = persona
        self.clock = clock
        self.config = config or ConsolidationConfig()
        self._locks: dict[str, asyncio.Lock] = {}

    # entry points --------------------------------------------------------------------

    async def consolidate_due(self) -> list[ConsolidationReport]:
        """Consolidate every chat quiet for `config.idle` with unconsolidated messages.

        A chat that fails (the model or the database) is logged and left for next time;
        the other chats still run.
        """
        quiet_since = self.clock.now() - self.config.idle
        reports: list[ConsolidationReport] = []
        for chat in await self.longterm.chats_to_consolidate(quiet_since=quiet_since):
            try:
                reports.append(await self.consolidate_chat(chat))
            except TomoError as exc:
                log.warning("consolidation failed", extra={"chat": chat.key, "error": str(exc)})
        return reports

    async def consolidate_chat(self, chat: ChatRef) -> ConsolidationReport:
        lock = self._locks.setdefault(chat.key, asyncio.Lock())
        async with lock:
            tally = _Tally()
            cfg = self.config
            cursor = await self.longterm.consolidation_cursor(chat)
            for _ in range(cfg.max_batches):
                fetched = await self.longterm.messages_after(
                    chat, after_id=cursor, limit=cfg.batch_messages
                )
                if not fetched:
                    break
                batch = self._fit(fetched)
                await self._consolidate_batch(chat, batch, tally)
                cursor = batch[-1].id
                await self.longterm.set_consolidation_cursor(
                    chat, message_id=cursor, at=self.clock.now()
                )
                tally.read += len(batch)
                if len(fetched) < cfg.batch_messages and len(batch) == len(fetched):
                    break
        report = ConsolidationReport(
            chat=chat,
            messages_read=tally.read,
            memories_added=tally.added,
            memories_merged=tally.merged,
            skipped=tally.skipped,
            summaries_written=tally.summaries,
            profiles_written=tally.profiles,
            self_written=tally.selves,
        )
        log.info("consolidated", extra={"chat": chat.key, "line": report.summary_line})
        return report

    async def rewrite_profile(self, person_id: int) -> Summary | None:
        """Regenerate a person's profile from their remaining memories only (after a
        forget). Every older version is deleted first, since any of them may hold the
        forgotten fact; with no memories left, no profile remains."""
        subject = str(person_id)
        await self.longterm.delete_summaries(kind="profile", subject=subject)
        memories = await self._memories_about(person_id)
        if not memories:
            return None
        name = await self._name_of(person_id, memories)
        text = await self._profile_text(name=name, previous=None, memories=memories)
        if not text:
            return None
        return await self.longterm.put_summary(
            kind="profile", subject=subject, text=text, at=self.clock.now()
        )

    # one batch -----------------------------------------------------------------------

    def _fit(self, messages: Sequence[StoredMessage]) -> list[StoredMessage]:
        """The longest prefix whose (cut) texts fit one prompt; at least one message."""
        cfg = self.config
        used = 0
        kept: list[StoredMessage] = []
        for m in messages:
            size = min(len(m.text), cfg.max_message_chars) + len(m.author_name) + 24
            if kept and used + size > cfg.max_prompt_chars:
                break
            kept.append(m)
            used += size
        return kept

    async def _consolidate_batch(
        self, chat: ChatRef, batch: Sequence[StoredMessage], tally: _Tally
    ) -> None:
        planned = await self._extract(chat, batch, tally)
        await self._store_memories(planned, tally)
        await self._write_daily(chat, batch, tally)
        speakers: dict[int, str] = {}
        for m in batch:
            if m.role == "user" and m.author_id is not None:
                speakers[m.author_id] = m.author_name
        for person_id, name in sorted(speakers.items()):
            if await self._write_profile(person_id, name=name):
                tally.profiles += 1
        # What tomo says quotes the chat it says it in, so each chat has its own
        # self-concept, fed by what tomo said there and shown only there.
        said = [m for m in batch if m.role == "assistant"]
        if said and await self._write_self(chat, said):
            tally.selves += 1

    async def _ask(self, turns: list[ChatTurn], *, max_tokens: int) -> str:
        text = await self.model.complete(
            turns, max_tokens=max_tokens, temperature=self.config.temperature
        )
        return truncate(text.strip(), limit=self.config.max_summary_chars)

    async def _extract(
        self, chat: ChatRef, batch: Sequence[StoredMessage], tally: _Tally
    ) -> list[Planned]:
        cfg = self.config
        if not any(m.role == "user" and m.author_id is not None for m in batch):
            return []
        turns = extraction_turns(
            chat=chat,
            batch=batch,
            persona_name=self.persona.name,
            max_message_chars=cfg.max_message_chars,
        )
        raw = await self.model.complete(
            turns,
            max_tokens=cfg.extract_tokens,
            temperature=cfg.temperature,
            json_schema=EXTRACT_SCHEMA,
        )
        candidates, bad = parse_candidates(
            raw, max_items=cfg.max_memories_per_batch, max_chars=cfg.max_memory_chars
        )
        planned, unplaced = plan_memories(
            candidates,
            chat=chat,
            batch=batch,
            persona_name=self.persona.name,
            max_sources=cfg.max_sources,
        )
        tally.skipped += bad + unplaced
        if bad or unplaced:
            log.info(
                "model memories skipped",
                extra={"chat": chat.key, "skipped": bad + unplaced, "kept": len(planned)},
            )
        return planned

    async def _store_memories(self, planned: Sequence[Planned], tally: _Tally) -> None:
        by_scope: dict[str, list[Planned]] = {}
        for p in planned:
            by_scope.setdefault(p.scope, []).append(p)
        for scope, items in by_scope.items():
            try:
                done = await store_deduplicated(
                    items,
                    scope=scope,
                    longterm=self.longterm,
                    embedder=self.embedder,
                    threshold=self.config.merge_threshold,
                    at=self.clock.now(),
                )
            finally:
                self.recall.invalidate(scope)
            tally.added += done.added
            tally.merged += done.merged

    # L2 ------------------------------------------------------------------------------

    async def _write_daily(
        self, chat: ChatRef, batch: Sequence[StoredMessage], tally: _Tally
    ) -> None:
        cfg = self.config
        days: dict[str, list[StoredMessage]] = {}
        for m in batch:
            days.setdefault(_day(m), []).append(m)
        for day, messages in days.items():
            previous = await self.longterm.latest_summary(kind="daily", subject=chat.key, day=day)
            turns = daily_turns(
                persona=self.persona,
                day=day,
                previous=previous.text if previous else None,
                messages=messages,
                max_message_chars=cfg.max_message_chars,
                max_summary_chars=cfg.max_summary_chars,
                max_prompt_chars=cfg.max_prompt_chars,
            )
            text = await self._ask(turns, max_tokens=cfg.summary_tokens)
            if text:
                await self.longterm.put_summary(
                    kind="daily", subject=chat.key, day=day, text=text, at=self.clock.now()
                )
                tally.summaries += 1

    async def _memories_about(self, person_id: int) -> list[Memory]:
        limit = self.config.profile_memories
        count = await self.longterm.count_memories_about(person_id)
        return await self.longterm.memories_about(
            person_id, offset=max(0, count - limit), limit=limit
        )

    async def _name_of(self, person_id: int, memories: Sequence[Memory]) -> str | None:
        sources = [i for m in memories for i in m.source_message_ids]
        for message in await self.longterm.messages(sources[-50:]):
            if message.author_id == person_id and message.author_name:
                return message.author_name
        return None

    async def _profile_text(
        self, *, name: str | None, previous: str | None, memories: Sequence[Memory]
    ) -> str:
        cfg = self.config
        turns = profile_turns(
            persona=self.persona,
            name=name,
            previous=previous,
            memories=memories,
            max_memory_chars=cfg.max_memory_chars,
            max_summary_chars=cfg.max_summary_chars,
            max_prompt_chars=cfg.max_prompt_chars,
        )
        return await self._ask(turns, max_tokens=cfg.profile_tokens)

    async def _write_profile(self, person_id: int, *, name: str) -> bool:
        """A new profile version from the person's memories and their last profile. A
        person with no memories gets none (there would be nothing to write from)."""
        memories = await self._memories_about(person_id)
        if not memories:
            return False
        subject = str(person_id)
        previous = await self.longterm.latest_summary(kind="profile", subject=subject)
        text = await self._profile_text(
            name=name, previous=previous.text if previous else None, memories=memories
        )
        if not text:
            return False
        await self.longterm.put_summary(
            kind="profile", subject=subject, text=text, at=self.clock.now()
        )
        return True

    async def _write_self(self, chat: ChatRef, said: Sequence[StoredMessage]) -> bool:
        cfg = self.config
        previous = await self.longterm.latest_summary(kind="self", subject=chat.key)
        turns = self_turns(
            persona=self.persona,
            previous=previous.text if previous else None,
            said=said,
            max_message_chars=cfg.max_message_chars,
            max_summary_chars=cfg.max_summary_chars,
            max_prompt_chars=cfg.max_prompt_chars,
        )
        text = await self._ask(turns, max_tokens=cfg.self_tokens)
        if not text:
            return False
        await self.longterm.put_summary(
            kind="self", subject=chat.key, text=text, at=self.clock.now()
        )
        return True
