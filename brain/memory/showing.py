"""How /memory shows things to a person, and the lookups every subcommand shares.

A person sees only memories whose `about` names them: `own_memory` answers None both for
a memory that does not exist and for one about somebody else, so nobody can learn that
someone else's memory exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from brain.memory.types import Memory, scope_of
from brain.messages import ChatRef, Segment, Text, Voice
from brain.ports import StoredMessage
from brain.speech.pcm import clock_text

if TYPE_CHECKING:
    from brain.commands import CommandContext

Answer = tuple[Segment, ...]
"""The segments of one reply."""

SOURCES_SHOWN = 10
CLIP_CHARS = 300
# Memory ids are 32-bit in the database; a bigger number names no memory.
MAX_ID = 2**31 - 1

USAGE = (
    "/memory: what I remember about you (only you can see it).\n"
    "  /memory list [page]      everything I remember about you\n"
    "  /memory search <words>   memories that match\n"
    "  /memory show <id>        one memory and the messages it came from\n"
    "  /memory history <id>     how a memory changed over time\n"
    "  /memory forget <id>      forget one memory (asks you to confirm)\n"
    "  /memory forget all       forget everything about you (asks you to confirm)\n"
    "  /memory profile          what I have written about you\n"
    "  /memory export           everything I keep about you, as a JSON file\n"
    "  /memory consolidate      sort this chat into memories now\n"
    "/记忆 works the same."
)

NOTHING_YET = "I don't remember anything about you yet. Talk to me, and I will."


def say(text: str) -> Answer:
    return (Text(text=text),)


def no_memory(memory_id: int) -> str:
    return f"I have no memory #{memory_id} about you. See them all with /memory list"


def number(arg: str) -> int | None:
    """A positive whole number as a person types it (`12` or `#12`)."""
    digits = arg.removeprefix("#")
    if not digits.isascii() or not digits.isdigit() or len(digits) > 18:
        return None
    value = int(digits)
    return value if value > 0 else None


async def own_memory(ctx: CommandContext, memory_id: int) -> Memory | None:
    """The memory, if it exists and is about the person asking (else None: the same
    answer either way, so nobody learns that someone else's memory exists)."""
    if memory_id > MAX_ID:
        return None
    memory = await ctx.longterm.get_memory(memory_id)
    if memory is None or ctx.person.id not in memory.about:
        return None
    return memory


async def all_about(ctx: CommandContext) -> list[Memory]:
    total = await ctx.longterm.count_memories_about(ctx.person.id)
    if not total:
        return []
    return await ctx.longterm.memories_about(ctx.person.id, offset=0, limit=total)


def message_scope(message: StoredMessage, person_id: int) -> str:
    return scope_of(message.chat, person_id=message.author_id or person_id)


def provenance(
    sources: Sequence[StoredMessage], *, heading: str = "From these messages:"
) -> list[str]:
    if not sources:
        return ["The messages it came from are no longer kept."]
    lines = [heading]
    for m in sources[:SOURCES_SHOWN]:
        who = m.author_name or "me"
        said = f"{who} in {chat_text(m.chat)}"
        lines.append(f"  {when(m.sent_at)}, {said}: {voiced(m)}{clip(m.text)}")
    if len(sources) > SOURCES_SHOWN:
        lines.append(f"  ...and {count(len(sources) - SOURCES_SHOWN, 'more message')}.")
    return lines


def voiced(message: StoredMessage) -> str:
    """ "(voice note, 0:07) " before a transcript, so that it reads as heard, not typed."""
    for seg in message.segments:
        if isinstance(seg, Voice) and seg.transcript is not None and message.role == "user":
            return f"(voice note, {clock_text(round(seg.duration_s))}) "
    return ""


def chat_text(chat: ChatRef) -> str:
    return (
        f"our {chat.platform} DM" if chat.kind == "dm" else f"{chat.platform} group {chat.chat_id}"
    )


def scope_text(scope: str, person_id: int) -> str:
    if scope == f"dm:{person_id}":
        return "our direct messages"
    if scope.startswith("group:"):
        platform, _, chat_id = scope.removeprefix("group:").partition(":")
        return f"the {platform} group {chat_id}"
    return scope


def when(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {noun}"
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n} {plural}"
