"""Build the model's prompt: persona, time facts and the short-term window."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from brain.messages import ChatRef
from brain.persona.card import PersonaCard
from brain.ports import ChatTurn, StoredMessage

TRUNCATION_MARK = " [...message truncated]"


@dataclass(frozen=True, kw_only=True)
class TimeFacts:
    now: datetime
    conversation_started: datetime
    first_met: datetime | None


def describe_time(value: datetime) -> str:
    return value.strftime("%A %d %B %Y, %H:%M UTC")


@dataclass(frozen=True, kw_only=True)
class MemoryContext:
    """What long-term memory adds to a prompt."""

    recalled: tuple[str, ...] = ()
    profile: str | None = None
    daily_summary: str | None = None
    self_concept: str | None = None


def memory_text(ctx: MemoryContext, *, person_name: str, limit: int) -> str:
    parts: list[str] = []
    if ctx.self_concept:
        parts.append(f"What you know about yourself: {truncate(ctx.self_concept, limit=limit)}")
    if ctx.profile:
        parts.append(f"What you know about {person_name}: {truncate(ctx.profile, limit=limit)}")
    if ctx.daily_summary:
        parts.append(f"Earlier today in this chat: {truncate(ctx.daily_summary, limit=limit)}")
    if ctx.recalled:
        lines = "\n".join(f"- {truncate(r, limit=limit // 2)}" for r in ctx.recalled)
        parts.append(f"Things you remember that may matter now:\n{lines}")
    return "\n".join(parts)


def time_facts_text(facts: TimeFacts, *, person_name: str) -> str:
    lines = [
        f"Now: {describe_time(facts.now)}.",
        f"This conversation started: {describe_time(facts.conversation_started)}.",
    ]
    if facts.first_met is not None:
        lines.append(f"You first met {person_name} on {facts.first_met.strftime('%d %B %Y')}.")
    return "\n".join(lines)


def truncate(text: str, *, limit: int) -> str:
    """Cut `text` to at most `limit` characters, marking the cut."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(TRUNCATION_MARK))
    return text[:keep] + TRUNCATION_MARK


def build_turns(
    *,
    persona: PersonaCard,
    chat: ChatRef,
    window: Sequence[StoredMessage],
    facts: TimeFacts,
    person_name: str,
    max_message_chars: int,
    max_prompt_chars: int,
    context: MemoryContext | None = None,
) -> list[ChatTurn]:
    """System prompt plus the newest messages that fit in `max_prompt_chars`.

    Every message is cut to `max_message_chars` for the model (it is stored whole).
    The newest message is always kept; older ones are dropped first.
    """
    system = persona.system_prompt() + "\n" + time_facts_text(facts, person_name=person_name)
    if context is not None:
        remembered = memory_text(context, person_name=person_name, limit=max_message_chars)
        if remembered:
            system += "\n" + remembered
    if chat.kind == "group":
        system += "\nThis is a group chat; each message starts with the speaker's name."
    budget = max(0, max_prompt_chars - len(system))
    picked: list[ChatTurn] = []
    for msg in reversed(window):
        body = truncate(msg.text, limit=max_message_chars)
        if msg.role == "user" and chat.kind == "group":
            body = f"{msg.author_name}: {body}"
        if picked and len(body) > budget:
            break
        picked.append(ChatTurn(role=msg.role, content=body))
        budget -= len(body)
    picked.reverse()
    # Chat templates want the conversation to start with a user turn.
    while picked and picked[0].role == "assistant":
        picked.pop(0)
    return [ChatTurn(role="system", content=system), *picked]
