"""The ports: small Protocols the brain needs from the outside world.

Each port has an in-memory and a real implementation, and one contract suite in
tests/contract runs against every implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from brain.memory.types import IndexEntry, Memory, MemoryVersion, NewMemory, Summary
from brain.messages import ChatRef, PersonRef, Segment

if TYPE_CHECKING:
    from brain.speech.codecs import VoiceNote

Role = Literal["system", "user", "assistant"]
TokenSink = Callable[[str], Awaitable[None]]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatTurn(_Frozen):
    """One message of a prompt, in chat-template form."""

    role: Role
    content: str


class Person(_Frozen):
    """A tomo person: one human, possibly with accounts on several platforms."""

    id: int
    display_name: str
    first_seen_at: datetime
    voice_replies: bool = False  # /voice on: answer with voice as well as text
    stickers: bool = True  # /sticker off: never send this person stickers
    sticker_accessory: str | None = None  # /sticker accessory <name> ("none" counts)


class NewMessage(_Frozen):
    """An L0 message about to be stored. `author` is None for the bot's own messages."""

    chat: ChatRef
    author: Person | None
    role: Literal["user", "assistant"]
    platform_message_id: str | None
    text: str
    segments: tuple[Segment, ...] = ()
    sent_at: datetime
    answers_id: int | None = None


class StoredMessage(_Frozen):
    """An L0 message as stored: never edited, with who said it, where and when."""

    id: int
    chat: ChatRef
    author_id: int | None
    author_name: str
    role: Literal["user", "assistant"]
    platform_message_id: str | None
    text: str
    segments: tuple[Segment, ...] = ()
    sent_at: datetime
    answers_id: int | None = None


class ReplyInContext(_Frozen):
    """One of the bot's stored replies with the messages of its chat just before it
    (oldest first): what the persona said and what it had in front of it."""

    reply: StoredMessage
    before: tuple[StoredMessage, ...]


@runtime_checkable
class LanguageModel(Protocol):
    """A chat model. `complete` may be asked for JSON that follows a schema."""

    @property
    def name(self) -> str: ...

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str: ...

    def stream(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
    ) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ModelChooser(Protocol):
    """Which model writes the reply to a person: their own adapter (HiveMind) when they
    have one, else the persona model.

    `async with chooser.for_person(person_id) as model:` - the model stays in use (it is
    not closed or evicted) until the block ends.
    """

    def for_person(self, person_id: int) -> AbstractAsyncContextManager[LanguageModel]: ...


@runtime_checkable
class Embedder(Protocol):
    dims: int

    async def embed(
        self, texts: Sequence[str], *, kind: Literal["query", "passage"]
    ) -> npt.NDArray[np.float32]: ...


@runtime_checkable
class SpeechToText(Protocol):
    async def transcribe(self, audio: bytes, *, mime: str, language: str | None = None) -> str: ...


@runtime_checkable
class TextToSpeech(Protocol):
    async def synthesize(self, text: str) -> VoiceNote:
        """Speak `text`: an OGG/Opus voice note with its duration and waveform."""
        ...


@runtime_checkable
class StickerRenderer(Protocol):
    async def render(
        self,
        emotion: str,
        *,
        accessories: Sequence[str] = (),
        caption: str | None = None,
        size: int = 512,
    ) -> bytes:
        """A size x size transparent WEBP of the avatar showing `emotion`."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    async def put(self, data: bytes, *, mime: str) -> str: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None: ...


class Delivery(_Frozen):
    """One stream entry handed to a consumer; it stays pending until acked."""

    stream: str
    entry_id: str  # opaque, increasing within a stream
    payload: bytes
    deliveries: int  # 1 when first read; +1 each time claim_stale hands it on


@runtime_checkable
class Bus(Protocol):
    """At-least-once work queues (streams read by consumer groups) and per-key locks.

    In process (asyncio) when TOMO_REDIS_URL is unset; Redis Streams otherwise. A
    gateway publishes each Inbound (JSON bytes) to one inbound stream; N workers share
    one group on it; a worker takes `lock(chat key)` so a chat's events never run
    concurrently, handles the entry, publishes the replies to the reply stream of the
    gateway that owns the connection, and acks only then. Entries a dead consumer left
    pending are taken over with `claim_stale`, so handling must be idempotent (the
    platform message id de-duplicates). Failures raise StorageError, without secrets.
    """

    async def publish(self, stream: str, payload: bytes, *, maxlen: int | None = None) -> str:
        """Append an entry; returns its id. The stream keeps about `maxlen` entries
        (approximate trimming; None: the bus's default)."""
        ...

    async def consume(
        self, stream: str, *, group: str, consumer: str, count: int = 1, block_ms: int = 0
    ) -> list[Delivery]:
        """Up to `count` entries no consumer of `group` has had yet, oldest first;
        waits up to `block_ms` (0: not at all) when there are none. The group is
        created on first use and starts from the oldest entry the stream still holds."""
        ...

    async def ack(self, stream: str, *entry_ids: str, group: str) -> int:
        """Mark entries done for `group`; returns how many were pending."""
        ...

    async def claim_stale(
        self, stream: str, *, group: str, consumer: str, min_idle_ms: int, count: int = 16
    ) -> list[Delivery]:
        """Take over entries pending longer than `min_idle_ms` with any consumer
        (XAUTOCLAIM); their delivery count rises. Trimmed-away entries are dropped."""
        ...

    async def length(self, stream: str) -> int:
        """Entries the stream holds now (acked or not)."""
        ...

    async def prune_consumers(self, stream: str, *, group: str, idle_ms: int) -> list[str]:
        """Forget the consumers of `group` idle for `idle_ms` or longer with nothing
        pending (the names of workers long gone); returns their names."""
        ...

    def lock(
        self, key: str, *, ttl_ms: int = 30_000, wait_ms: int | None = None, renew: bool = True
    ) -> AbstractAsyncContextManager[None]:
        """Hold `key` exclusively: `async with bus.lock(...)`. The lock lapses `ttl_ms`
        after its holder dies; while held it is renewed (unless renew=False, a lease
        that lapses after ttl_ms regardless), and only its owner can release it.
        Raises TimeoutError after `wait_ms` (None: wait as long as it takes)."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True, kw_only=True)
class Rate:
    """A token bucket: up to `burst` messages at once, refilled at `per_second`."""

    burst: int
    per_second: float

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_second <= 0:
            raise ValueError("a rate needs a burst of at least 1 and a positive refill")


@dataclass(frozen=True, kw_only=True)
class Admission:
    """What a RateLimiter decided for one message."""

    allowed: bool
    # Refused, and the first refusal of a bucket since it last let a message through:
    # say so once; later refusals in the same stretch stay silent.
    warn: bool = False
    limited_by: str | None = None  # the key of the (first) bucket that refused
    retry_after_s: float = 0.0  # until that bucket holds a token again


@runtime_checkable
class RateLimiter(Protocol):
    """Token buckets by key (in process, or in Redis shared by every worker)."""

    async def take(self, buckets: Mapping[str, Rate]) -> Admission:
        """One token from each of `buckets` (key -> its rate), all or none, atomically.
        A bucket never seen (or expired) starts full. Failures raise StorageError."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Telemetry(Protocol):
    """Counters and timings for operators (bots/metrics.py: Prometheus). Labels stay
    low-cardinality: a platform, a stage, a kind of error; never a chat or a person."""

    def message_in(self, *, platform: str, addressed: bool) -> None: ...

    def message_out(self, *, platform: str, count: int) -> None: ...

    def stage(self, name: str, seconds: float) -> None:
        """One pass through a pipeline stage ("handle", "recall", "generate") took this."""
        ...

    def recall_hits(self, count: int) -> None:
        """Items recalled from long-term memory into one prompt."""
        ...

    def model_call(self, *, call: str, seconds: float, tokens: int) -> None:
        """One model call ("complete", "json", "stream"); `tokens`: streamed pieces
        (0 for calls that do not stream)."""
        ...

    def limited(self, *, platform: str, reason: str) -> None:
        """A message refused by a limit ("person", "chat", "length")."""
        ...

    def error(self, *, kind: str) -> None:
        """A message the brain failed on, by exception type."""
        ...


@runtime_checkable
class MemoryStore(Protocol):
    """Where L0 messages, people and chats live (SQLite or Postgres)."""

    async def resolve_person(self, ref: PersonRef, *, seen_at: datetime) -> Person: ...

    async def set_voice_replies(self, person_id: int, *, on: bool) -> Person:
        """Turn voice replies for a person on or off (/voice on|off)."""
        ...

    async def set_sticker_prefs(
        self, person_id: int, *, on: bool | None = None, accessory: str | None = None
    ) -> Person:
        """Sticker replies on/off and the accessory the person chose (None: unchanged)."""
        ...

    async def add_message(self, message: NewMessage) -> tuple[StoredMessage, bool]:
        """Store a message; returns it and whether it was new.

        A user message is keyed by (chat, platform message id): storing it twice
        returns the first copy and False.
        """
        ...

    async def edit_message(
        self,
        chat: ChatRef,
        *,
        platform_message_id: str,
        text: str,
        segments: tuple[Segment, ...],
        edited_at: datetime,
    ) -> StoredMessage | None:
        """A person edited a message on their platform: store its new wording (the old
        one is kept as an edit). None when no such message is stored."""
        ...

    async def answer_to(self, message_id: int) -> StoredMessage | None:
        """The bot's stored reply to message `message_id`, if there is one."""
        ...

    async def recent_messages(
        self, chat: ChatRef, *, limit: int, since: datetime | None = None
    ) -> list[StoredMessage]:
        """The last `limit` messages of a chat (oldest first), optionally after `since`."""
        ...

    async def conversation_start(
        self, chat: ChatRef, *, now: datetime, idle_gap: timedelta
    ) -> datetime:
        """When the current conversation in `chat` began: the first message after the
        last silence longer than `idle_gap` (or `now` if the chat is new)."""
        ...

    async def count_messages(self, chat: ChatRef | None = None) -> int: ...

    async def bot_replies(
        self, *, before_id: int | None = None, limit: int, context: int
    ) -> list[ReplyInContext]:
        """The bot's own stored replies, newest first, with ids below `before_id` (None:
        from the newest), each with up to `context` earlier messages of its chat. Pages
        through everything the persona said (the training data of its LoRA)."""
        ...

    async def aclose(self) -> None: ...


class ForgetReport(_Frozen):
    """What a forget removed: memory ids and L0 message ids."""

    memory_ids: tuple[int, ...] = ()
    message_ids: tuple[int, ...] = ()


@runtime_checkable
class LongTermStore(Protocol):
    """L1 memories, the recall index and L2 summaries (SQLite or Postgres)."""

    # the recall index ------------------------------------------------------------
    async def put_message_key(
        self,
        message_id: int,
        *,
        scope: str,
        key: str,
        embedding: bytes | None,
        keep_embedding: bool = False,
    ) -> None:
        """Set (or replace) the recall key of an L0 message and its embedding
        (`keep_embedding`: change only the key text)."""
        ...

    async def index_entries(self, scope: str) -> list[IndexEntry]:
        """Every recallable item of one scope: keyed messages and L1 memories."""
        ...

    async def put_embeddings(self, items: Sequence[tuple[str, int, bytes]]) -> None:
        """Store new embeddings, (kind, id, float32 bytes), of entries whose text stays."""
        ...

    # Stores that search vectors themselves (Postgres + pgvector) say so here; recall
    # then asks them instead of holding the scope's vectors in memory.
    native_vectors: bool

    async def dense_search(
        self, scope: str, query: Sequence[float], *, limit: int
    ) -> list[tuple[str, int, float]]:
        """The `limit` entries of `scope` nearest to `query`: (kind, id, cosine)."""
        ...

    async def ensure_vector_index(self, scope: str, *, dims: int) -> None:
        """Give a large scope an approximate-nearest-neighbour index (if supported)."""
        ...

    # L1 memories -----------------------------------------------------------------
    async def add_memory(self, memory: NewMemory) -> Memory: ...

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
        """Change a memory; its previous text is kept in its history."""
        ...

    async def get_memory(self, memory_id: int) -> Memory | None: ...

    async def memories_in_scope(self, scope: str) -> list[Memory]: ...

    async def memory_embeddings(self, scope: str) -> list[tuple[Memory, bytes | None]]:
        """The memories of one scope with their stored embeddings (None: not embedded)."""
        ...

    async def memories_about(self, person_id: int, *, offset: int, limit: int) -> list[Memory]: ...

    async def count_memories_about(self, person_id: int) -> int: ...

    async def memory_history(self, memory_id: int) -> list[MemoryVersion]: ...

    async def mark_recalled(self, memory_ids: Sequence[int], *, at: datetime) -> None: ...

    async def messages(self, message_ids: Sequence[int]) -> list[StoredMessage]:
        """L0 messages by id (provenance), oldest first."""
        ...

    async def messages_after(
        self, chat: ChatRef, *, after_id: int, limit: int
    ) -> list[StoredMessage]: ...

    async def messages_by(self, person_id: int) -> list[StoredMessage]:
        """Everything a person said, anywhere (for their export)."""
        ...

    async def forget_memory(self, memory_id: int) -> ForgetReport:
        """Delete a memory, its history, embedding and provenance links, and the L0
        messages it came from (with their keys and the bot's replies to them)."""
        ...

    async def forget_person(self, person_id: int) -> ForgetReport:
        """Delete everything said by or remembered about a person, and their profiles."""
        ...

    async def scrub_deleted(self) -> None:
        """After a forget: make deleted rows unrecoverable from the database files as
        far as the engine allows (SQLite: empty the write-ahead log)."""
        ...

    # L2 summaries ----------------------------------------------------------------
    async def put_summary(
        self, *, kind: str, subject: str, day: str = "", text: str, at: datetime
    ) -> Summary:
        """Add a new version of a summary (daily / profile / self)."""
        ...

    async def latest_summary(self, *, kind: str, subject: str, day: str = "") -> Summary | None: ...

    async def latest_summaries(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], Summary]:
        """The latest version of each (kind, subject, day) that has one, in one read."""
        ...

    async def summary_versions(self, *, kind: str, subject: str) -> list[Summary]: ...

    async def delete_summaries(self, *, kind: str, subject: str) -> None: ...

    # consolidation bookkeeping ----------------------------------------------------
    async def consolidation_cursor(self, chat: ChatRef) -> int:
        """The last message id consolidation took in for `chat` (0: none yet)."""
        ...

    async def set_consolidation_cursor(
        self, chat: ChatRef, *, message_id: int, at: datetime
    ) -> None: ...

    async def chats_to_consolidate(self, *, quiet_since: datetime) -> list[ChatRef]:
        """Chats with messages not yet consolidated whose last message is older than
        `quiet_since`."""
        ...
