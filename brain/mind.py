"""Brain.handle(Inbound) -> list[Reply]: the one pipeline every platform goes through."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel, ValidationError

from brain.commands import (
    Command,
    CommandContext,
    parse_command,
    plain_answer,
    run_command,
    voice_command,
)
from brain.errors import InputError, ModelError, TomoError
from brain.limits import Limits, Refusal
from brain.memory.consolidate import Consolidator
from brain.memory.recall import EntryId, Recall, Recalled
from brain.memory.types import scope_of
from brain.messages import ChatRef, Inbound, Reply, Segment, Sticker, Text, Voice
from brain.persona.card import PersonaCard
from brain.ports import (
    BlobStore,
    ChatTurn,
    Clock,
    LanguageModel,
    LongTermStore,
    MemoryStore,
    ModelChooser,
    NewMessage,
    Person,
    StoredMessage,
    Telemetry,
    TokenSink,
)
from brain.prompt import MemoryContext, TimeFacts, build_turns
from brain.speech.pcm import clock_text
from brain.speech.service import Speech, VoiceStream, asks_for_voice
from brain.stickers import Stickers, sticker_command
from brain.telemetry import NoTelemetry, timed

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
    recall_k: int = 6
    model_recall: bool = True
    # Voice notes longer than this are refused (without being decoded).
    max_voice_seconds: float = 300.0


class RecallRequest(BaseModel):
    """What the model may ask of its memory (structured output)."""

    recall: bool = False
    query: str = ""
    count: int = 3


RECALL_REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "recall": {"type": "boolean"},
        "query": {"type": "string"},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["recall", "query", "count"],
}


@dataclass(frozen=True, kw_only=True)
class LongTermMemory:
    """The long-term memory parts the brain uses (absent: short-term window only)."""

    longterm: LongTermStore
    recall: Recall
    blobs: BlobStore
    consolidator: Consolidator | None = None


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


class OneModel:
    """The ModelChooser that answers everyone with the same (persona) model."""

    def __init__(self, model: LanguageModel) -> None:
        self.model = model

    def for_person(self, person_id: int) -> AbstractAsyncContextManager[LanguageModel]:
        return nullcontext(self.model)

    def describe(self) -> str:
        return "per-person adapters: none (the persona model answers everyone)"

    async def aclose(self) -> None:
        """Nothing of its own to close (the persona model is closed by its owner)."""


class Brain:
    """The shared brain. Knows no platform and no database, only its ports.

    `model` is the persona model: it writes replies and answers the structured side
    calls (recall query, sticker emotion, consolidation). `models`, when given, chooses
    the model that writes the reply to each person (a per-person adapter); unset, the
    persona model answers everyone.
    """

    def __init__(
        self,
        *,
        store: MemoryStore,
        model: LanguageModel,
        persona: PersonaCard,
        clock: Clock,
        config: BrainConfig | None = None,
        memory: LongTermMemory | None = None,
        speech: Speech | None = None,
        blobs: BlobStore | None = None,
        stickers: Stickers | None = None,
        models: ModelChooser | None = None,
        limits: Limits | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.store = store
        self.model = model
        self.models: ModelChooser = models if models is not None else OneModel(model)
        self.persona = persona
        self.clock = clock
        self.config = config or BrainConfig()
        self.locks = ChatLocks()
        self.memory = memory
        self.speech = speech
        self.stickers = stickers
        self.limits = limits  # rate and size limits (brain/limits.py); None: none
        self.telemetry: Telemetry = telemetry or NoTelemetry()
        # Voice notes and voice replies live in the blob store.
        self.blobs = blobs if blobs is not None else (memory.blobs if memory else None)
        # Per chat: the conversation start and what was recalled in it (not repeated).
        self._recalled: dict[str, tuple[datetime, set[EntryId]]] = {}

    async def handle(self, inbound: Inbound, *, on_token: TokenSink | None = None) -> list[Reply]:
        """Take one inbound message; return what to send back (often nothing).

        Events of one chat are handled one at a time. The same Inbound twice gives one
        reply: a message already answered is not answered again, while one stored but
        never answered (a crash mid-reply) is answered on redelivery. A message over a
        rate or size limit (`limits`) gets one short note or nothing (brain/limits.py).
        """
        if inbound.is_blank:
            log.info("ignored blank message", extra={"chat": inbound.chat.key})
            return []
        platform = inbound.chat.platform
        self.telemetry.message_in(platform=platform, addressed=inbound.to_bot)
        started = time.perf_counter()
        try:
            refusal = await self.limits.screen(inbound) if self.limits is not None else None
            if refusal is not None:
                replies = await self._refuse(inbound, refusal)
            else:
                async with self.locks.hold(inbound.chat):
                    replies = await self._handle_locked(inbound, on_token=on_token)
        except Exception as exc:
            self.telemetry.error(kind=type(exc).__name__)
            raise
        finally:
            self.telemetry.stage("handle", time.perf_counter() - started)
        self.telemetry.message_out(platform=platform, count=len(replies))
        return replies

    async def _refuse(self, inbound: Inbound, refusal: Refusal) -> list[Reply]:
        """A message a limit refused: kept as overheard (stored, not answered) when the
        refusal says so, and answered with its one note, if any."""
        self.telemetry.limited(platform=inbound.chat.platform, reason=refusal.reason)
        if refusal.keep:
            overheard = inbound.model_copy(update={"to_bot": False})
            async with self.locks.hold(inbound.chat):
                await self._handle_locked(overheard, on_token=None)
        if refusal.say is None:
            return []
        return [Reply(chat=inbound.chat, segments=(Text(text=refusal.say),), reply_to=inbound.id)]

    async def edit(self, inbound: Inbound) -> None:
        """A message edited on its platform (same id, new words): the stored message takes
        the new words (its old ones are kept as an edit) and is indexed anew. Not
        answered again; an edit of a message never stored is ignored."""
        async with self.locks.hold(inbound.chat):
            person = await self.store.resolve_person(inbound.author, seen_at=inbound.sent_at)
            edited = await self.store.edit_message(
                inbound.chat,
                platform_message_id=inbound.id,
                text=inbound.text,
                segments=inbound.segments,
                edited_at=self.clock.now(),
            )
            if edited is None:
                log.info("edit of an unknown message ignored", extra={"chat": inbound.chat.key})
                return
            if self.memory is not None and edited.text.strip():
                scope = scope_of(inbound.chat, person_id=person.id)
                await self.memory.recall.reindex_message(edited, scope=scope)

    async def _handle_locked(self, inbound: Inbound, *, on_token: TokenSink | None) -> list[Reply]:
        now = self.clock.now()
        person = await self.store.resolve_person(inbound.author, seen_at=inbound.sent_at)
        scope = scope_of(inbound.chat, person_id=person.id)
        spoke = any(isinstance(s, Voice) for s in inbound.segments)
        trouble: str | None = None
        if spoke and inbound.to_bot:
            inbound, trouble = await self._hear(inbound)
        command = parse_command(inbound.text) if inbound.to_bot else None
        if command is not None:
            # Commands and their answers are not conversation: they are not stored (a
            # /memory answer quotes memories, which must not outlive a forget).
            return await self._command(command, inbound, person=person, scope=scope)
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

        if created and self.memory is not None and stored.text.strip():
            await self.memory.recall.index_message(stored, scope=scope)

        if not inbound.to_bot:
            return []
        if trouble is not None:
            return [await self._persist_reply(inbound, stored, trouble)]

        # The conversation is the one this message belongs to (platforms may deliver
        # late; the clock and sent_at need not agree).
        started = await self.store.conversation_start(
            inbound.chat, now=inbound.sent_at, idle_gap=self.config.conversation_gap
        )
        window = await self.store.recent_messages(
            inbound.chat, limit=self.config.window_messages, since=started
        )
        with timed(self.telemetry, "recall"):
            context = await self._long_term_context(
                inbound, person_id=person.id, scope=scope, started=started, window=window
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
            context=context,
        )
        voice = self._voice_stream(person, inbound, spoke=spoke)
        try:
            async with self.models.for_person(person.id) as model:
                with timed(self.telemetry, "generate"):
                    answer = await self._generate(
                        turns, model=model, on_token=on_token, voice=voice
                    )
        except BaseException:
            if voice is not None:
                await voice.cancel()
            raise
        spoken = await self._speak(voice) if voice is not None else ()
        sticker = await self._sticker(person, inbound, window=window, answer=answer)
        return [await self._persist_reply(inbound, stored, answer, extra=(*spoken, *sticker))]

    async def _command(
        self, command: Command, inbound: Inbound, *, person: Person, scope: str
    ) -> list[Reply]:
        if command.name == "sticker":
            text = await sticker_command(
                command.args,
                person=person,
                store=self.store,
                available=self.stickers is not None and self.blobs is not None,
            )
            return [Reply(chat=inbound.chat, segments=(Text(text=text),), reply_to=inbound.id)]
        if command.name == "voice":
            text = await voice_command(
                command.args, person=person, store=self.store, speech=self.speech
            )
            return [Reply(chat=inbound.chat, segments=(Text(text=text),), reply_to=inbound.id)]
        memory = self.memory
        if memory is None:
            text = plain_answer(command) or "Long-term memory is switched off here."
            return [Reply(chat=inbound.chat, segments=(Text(text=text),), reply_to=inbound.id)]
        consolidator = memory.consolidator

        async def consolidate(chat: ChatRef) -> str:
            if consolidator is None:
                return "Consolidation is switched off here."
            return (await consolidator.consolidate_chat(chat)).summary_line

        async def rewrite_profile(person_id: int) -> None:
            if consolidator is not None:
                await consolidator.rewrite_profile(person_id)

        ctx = CommandContext(
            inbound=inbound,
            person=person,
            scope=scope,
            store=self.store,
            longterm=memory.longterm,
            recall=memory.recall,
            blobs=memory.blobs,
            clock=self.clock,
            consolidate=consolidate,
            rewrite_profile=rewrite_profile,
        )
        return await run_command(command, ctx)

    # long-term memory ---------------------------------------------------------------

    async def recall(
        self,
        query: str,
        *,
        scopes: Sequence[str],
        k: int,
        exclude: Collection[EntryId] = (),
    ) -> list[Recalled]:
        """Hybrid recall over `scopes` (the same code for chat and benchmarks)."""
        if self.memory is None:
            return []
        return await self.memory.recall.search(query, scopes=scopes, k=k, exclude=exclude)

    async def _long_term_context(
        self,
        inbound: Inbound,
        *,
        person_id: int,
        scope: str,
        started: datetime,
        window: Sequence[StoredMessage],
    ) -> MemoryContext:
        if self.memory is None:
            return MemoryContext()
        lt = self.memory.longterm
        seen_start, already = self._recalled.get(inbound.chat.key, (started, set()))
        if seen_start != started:  # a new conversation: everything may be recalled again
            already = set()
        exclude = already | {("message", m.id) for m in window}
        searches = [(inbound.text, self.config.recall_k)]
        searches += await self._model_recall_query(inbound, window=window)
        found: list[Recalled] = []
        for query, k in searches:
            for item in await self.recall(query, scopes=[scope], k=k, exclude=exclude):
                found.append(item)
                exclude.add(item.entry_id)
        self._recalled[inbound.chat.key] = (started, already | {r.entry_id for r in found})
        self.telemetry.recall_hits(len(found))
        memory_ids = [r.entry.id for r in found if r.entry.kind == "memory"]
        await lt.mark_recalled(memory_ids, at=self.clock.now())
        # A profile is built from everything known about the person, DMs included, so
        # it is shown only in a DM with that person.
        today = self.clock.now().strftime("%Y-%m-%d")
        profile_key = ("profile", str(person_id), "")
        daily_key = ("daily", inbound.chat.key, today)
        # Per chat: it is written from what tomo said in this chat alone.
        self_key = ("self", inbound.chat.key, "")
        keys = [daily_key, self_key] + ([profile_key] if inbound.chat.kind == "dm" else [])
        summaries = await lt.latest_summaries(keys)
        profile = summaries.get(profile_key) if inbound.chat.kind == "dm" else None
        daily = summaries.get(daily_key)
        self_concept = summaries.get(self_key)
        return MemoryContext(
            recalled=tuple(r.shown for r in found),
            profile=profile.text if profile else None,
            daily_summary=daily.text if daily else None,
            self_concept=self_concept.text if self_concept else None,
        )

    async def _model_recall_query(
        self, inbound: Inbound, *, window: Sequence[StoredMessage]
    ) -> list[tuple[str, int]]:
        """DigitalLife's model-decided recall: the model may ask for a search.

        Never relied upon alone (recall on the message itself always runs); anything
        malformed is ignored.
        """
        if not self.config.model_recall:
            return []
        recent = "\n".join(
            f"{m.author_name or self.persona.name}: {m.text[:300]}" for m in window[-4:]
        )
        turns = [
            ChatTurn(
                role="system",
                content=(
                    "You decide whether to search your long-term memory before answering. "
                    'Answer JSON: {"recall": true|false, "query": "what to search", '
                    '"count": 1-10}.'
                ),
            ),
            ChatTurn(role="user", content=f"Conversation:\n{recent}\n\nSearch memory?"),
        ]
        try:
            raw = await self.model.complete(
                turns, max_tokens=64, temperature=0.0, json_schema=RECALL_REQUEST_SCHEMA
            )
            request = RecallRequest.model_validate_json(raw)
        except (ValidationError, ModelError):
            return []
        if not request.recall or not request.query.strip():
            return []
        return [(request.query.strip()[:300], max(1, min(10, request.count)))]

    async def _generate(
        self,
        turns: list[ChatTurn],
        *,
        model: LanguageModel,
        on_token: TokenSink | None,
        voice: VoiceStream | None = None,
    ) -> str:
        cfg = self.config
        if voice is not None:
            on_token = _feeding(voice, on_token)
        if on_token is None:
            text = await model.complete(
                turns, max_tokens=cfg.max_reply_tokens, temperature=cfg.temperature
            )
        else:
            pieces: list[str] = []
            async for piece in model.stream(
                turns, max_tokens=cfg.max_reply_tokens, temperature=cfg.temperature
            ):
                pieces.append(piece)
                await on_token(piece)
            text = "".join(pieces)
        return text.strip() or EMPTY_ANSWER

    # voice --------------------------------------------------------------------------

    async def _hear(self, inbound: Inbound) -> tuple[Inbound, str | None]:
        """Transcribe the voice notes of `inbound`. Returns the message with its
        transcripts, and what to tell the person when a note could not be heard (the
        message is stored either way)."""
        segments: list[Segment] = []
        trouble: str | None = None
        limit = self.config.max_voice_seconds
        for seg in inbound.segments:
            if not isinstance(seg, Voice) or seg.transcript is not None:
                segments.append(seg)
                continue
            segments.append(seg)
            if self.speech is None or not self.speech.can_listen or self.blobs is None:
                trouble = "I can't listen to voice notes here; please write to me instead."
                continue
            if seg.duration_s > limit:
                trouble = (
                    f"That voice note is {clock_text(seg.duration_s)} long; I can listen to "
                    f"voice notes up to {clock_text(limit)}. Could you send a shorter one?"
                )
                continue
            try:
                audio = await self.blobs.get(seg.blob_key)
                words = await self.speech.transcribe(audio, mime=seg.mime)
            except (InputError, ModelError, KeyError) as exc:
                log.warning("voice note not heard", extra={"chat": inbound.chat.key})
                reason = str(exc) if not isinstance(exc, KeyError) else "the audio is missing"
                trouble = f"I couldn't listen to that voice note: {reason}"
                continue
            if not words:
                trouble = "I couldn't hear any words in that voice note."
                continue
            segments[-1] = seg.model_copy(update={"transcript": words})
        return inbound.model_copy(update={"segments": tuple(segments)}), trouble

    def _voice_stream(self, person: Person, inbound: Inbound, *, spoke: bool) -> VoiceStream | None:
        """A voice for this reply when the person spoke, asked for voice, or turned it on."""
        speech = self.speech
        if speech is None or not speech.can_speak or self.blobs is None:
            return None
        if spoke or person.voice_replies or asks_for_voice(inbound.text):
            return speech.stream()
        return None

    async def _speak(self, voice: VoiceStream) -> tuple[Segment, ...]:
        """The reply's voice note as a segment; a short note instead if it failed."""
        assert self.blobs is not None
        try:
            note = await voice.finish()
        except TomoError as exc:
            log.warning("voice reply failed", extra={"error": str(exc)})
            return (Text(text=f"(I couldn't say this out loud: {exc})"),)
        if note is None:
            return ()
        key = await self.blobs.put(note.data, mime=note.mime)
        return (
            Voice(
                blob_key=key,
                mime=note.mime,
                duration_s=round(note.duration_s, 3),
                waveform=note.waveform,
            ),
        )

    # stickers -----------------------------------------------------------------------

    async def _sticker(
        self,
        person: Person,
        inbound: Inbound,
        *,
        window: Sequence[StoredMessage],
        answer: str,
    ) -> tuple[Segment, ...]:
        """A sticker render of the avatar to go with `answer`, or nothing."""
        stickers = self.stickers
        if stickers is None or self.blobs is None:
            return ()
        last = next((m for m in reversed(window) if m.role == "assistant"), None)
        sent_last = last is not None and any(isinstance(s, Sticker) for s in last.segments)
        if not stickers.may_send(person=person, chat=inbound.chat, sent_last=sent_last):
            return ()
        chosen = await stickers.decide(
            reply=answer, person=person, persona=self.persona, context=f"{inbound.text}\n{answer}"
        )
        if chosen is None:
            return ()
        sticker = await stickers.render(chosen, self.blobs)
        return (sticker,) if sticker is not None else ()

    async def _persist_reply(
        self,
        inbound: Inbound,
        stored: StoredMessage,
        answer: str,
        *,
        extra: tuple[Segment, ...] = (),
    ) -> Reply:
        segments: tuple[Segment, ...] = (
            Text(text=answer),
            *(
                seg.model_copy(update={"transcript": answer}) if isinstance(seg, Voice) else seg
                for seg in extra
            ),
        )
        await self.store.add_message(
            NewMessage(
                chat=inbound.chat,
                author=None,
                role="assistant",
                platform_message_id=None,
                text=answer,
                segments=segments,
                sent_at=self.clock.now(),
                answers_id=stored.id,
            )
        )
        return Reply(chat=inbound.chat, segments=segments, reply_to=inbound.id)


def _feeding(voice: VoiceStream, sink: TokenSink | None) -> TokenSink:
    """A token sink that also hands each piece to the voice (spoken while written)."""

    async def feed(piece: str) -> None:
        voice.feed(piece)
        if sink is not None:
            await sink(piece)

    return feed


__all__ = ["Brain", "BrainConfig", "ChatLocks", "LongTermMemory", "OneModel"]
