"""Brain.handle(Inbound) -> list[Reply]: the one pipeline every platform goes through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta

from brain.commands import parse_command, run_command
from brain.messages import ChatRef, Inbound, Reply, Text
from brain.persona.card import PersonaCard
from brain.ports import (
    ChatTurn,
    Clock,
    LanguageModel,
    MemoryStore,
    NewMessage,
    Person,
    StoredMessage,
    TokenSink,
)
from brain.prompt import TimeFacts, build_turns

log = logging.getLogger(__name__)

EMPTY_ANSWER = "Sorry, I lost my words there. Could you say that again?"


@dataclass(frozen=True, kw_only=True)
class BrainConfig:
    window_messages: int = 20
    max_message_chars: int = 2000
    max_prompt_chars: int = 6000
    max_reply_tokens: int = 200
    temperature: float = 0.7
    conversation_gap: timedelta = field(default_factory=lambda: timedelta(hours=8))


class ChatLocks:
    """One asyncio lock per chat, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, chat: ChatRef) -> AsyncIterator[None]:
        key = chat.key
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class Brain:
    """The shared brain. Knows no platform and no database, only its ports."""

    def __init__(
        self,
        *,
        store: MemoryStore,
        model: LanguageModel,
        persona: PersonaCard,
        clock: Clock,
        config: BrainConfig | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.persona = persona
        self.clock = clock
        self.config = config or BrainConfig()
        self.locks = ChatLocks()

    async def handle(self, inbound: Inbound, *, on_token: TokenSink | None = None) -> list[Reply]:
        """Take one inbound message; return what to send back (often nothing).

        Events of one chat are handled one at a time. The same Inbound twice gives one
        reply: a message already answered is not answered again, while one stored but
        never answered (a crash mid-reply) is answered on redelivery.
        """
        if inbound.is_blank:
            log.info("ignored blank message", extra={"chat": inbound.chat.key})
            return []
        async with self.locks.hold(inbound.chat):
            return await self._handle_locked(inbound, on_token=on_token)

    async def _handle_locked(self, inbound: Inbound, *, on_token: TokenSink | None) -> list[Reply]:
        now = self.clock.now()
        person = await self.store.resolve_person(inbound.author, seen_at=inbound.sent_at)
        stored, created = await self.store.add_message(
            NewMessage(
                chat=inbound.chat,
                author=person,
                role="user",
                platform_message_id=inbound.id,
                text=inbound.text,
                segments=inbound.segments,
                sent_at=inbound.sent_at,
            )
        )
        if not created and await self.store.answer_to(stored.id) is not None:
            log.info("duplicate message ignored", extra={"chat": inbound.chat.key})
            return []

        command = parse_command(inbound.text) if inbound.to_bot else None
        if command is not None:
            answer = run_command(command)
            return [await self._persist_reply(inbound, stored, answer, private=False)]

        if not inbound.to_bot:
            return []

        started = await self.store.conversation_start(
            inbound.chat, now=now, idle_gap=self.config.conversation_gap
        )
        window = await self.store.recent_messages(
            inbound.chat, limit=self.config.window_messages, since=started
        )
        turns = build_turns(
            persona=self.persona,
            chat=inbound.chat,
            window=window,
            facts=TimeFacts(
                now=now,
                conversation_started=started,
                first_met=person.first_seen_at,
            ),
            person_name=person.display_name,
            max_message_chars=self.config.max_message_chars,
            max_prompt_chars=self.config.max_prompt_chars,
        )
        answer = await self._generate(turns, on_token=on_token)
        return [await self._persist_reply(inbound, stored, answer, private=False)]

    async def _generate(self, turns: list[ChatTurn], *, on_token: TokenSink | None) -> str:
        cfg = self.config
        if on_token is None:
            text = await self.model.complete(
                turns, max_tokens=cfg.max_reply_tokens, temperature=cfg.temperature
            )
        else:
            pieces: list[str] = []
            async for piece in self.model.stream(
                turns, max_tokens=cfg.max_reply_tokens, temperature=cfg.temperature
            ):
                pieces.append(piece)
                await on_token(piece)
            text = "".join(pieces)
        return text.strip() or EMPTY_ANSWER

    async def _persist_reply(
        self, inbound: Inbound, stored: StoredMessage, answer: str, *, private: bool
    ) -> Reply:
        await self.store.add_message(
            NewMessage(
                chat=inbound.chat,
                author=None,
                role="assistant",
                platform_message_id=None,
                text=answer,
                segments=(Text(text=answer),),
                sent_at=self.clock.now(),
                answers_id=stored.id,
            )
        )
        return Reply(
            chat=inbound.chat,
            segments=(Text(text=answer),),
            reply_to=inbound.id,
            private=private,
        )


__all__ = ["Brain", "BrainConfig", "ChatLocks", "Person"]
