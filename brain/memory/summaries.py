"""The L2 prompts: a chat's recursive daily summary, a person's profile, the self-concept.

Short, explicit English prompts; every text sent is capped.
"""

from __future__ import annotations

from collections.abc import Sequence

from brain.memory.extract import speaker_label
from brain.memory.types import Memory
from brain.persona.card import PersonaCard
from brain.ports import ChatTurn, StoredMessage
from brain.prompt import truncate

NONE_YET = "(none yet)"


def _capped_lines(lines: Sequence[str], *, limit: int) -> str:
    """The last lines that fit in `limit` characters (the newest matter most)."""
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        if kept and used + len(line) + 1 > limit:
            break
        kept.append(line)
        used += len(line) + 1
    kept.reverse()
    return "\n".join(kept)


def daily_turns(
    *,
    persona: PersonaCard,
    day: str,
    previous: str | None,
    messages: Sequence[StoredMessage],
    max_message_chars: int,
    max_summary_chars: int,
    max_prompt_chars: int,
) -> list[ChatTurn]:
    system = (
        f"You keep the diary of a chat for {persona.name}, a chat companion.\n"
        f"Rewrite the summary of {day} so that it also covers the new messages: who said "
        "what, news, plans, feelings. Keep what the old summary says unless the new "
        "messages change it. Use only what is written; invent nothing.\n"
        "At most 150 words. Answer with the summary text only."
    )
    lines = [
        f"[{m.sent_at:%H:%M}] {speaker_label(m, persona_name=persona.name)}: "
        f"{truncate(m.text, limit=max_message_chars)}"
        for m in messages
    ]
    old = truncate(previous, limit=max_summary_chars) if previous else NONE_YET
    body = f"Summary of {day} so far:\n{old}\n\nNew messages:\n" + _capped_lines(
        lines, limit=max_prompt_chars
    )
    return [ChatTurn(role="system", content=system), ChatTurn(role="user", content=body)]


def profile_turns(
    *,
    persona: PersonaCard,
    name: str | None,
    previous: str | None,
    memories: Sequence[Memory],
    max_memory_chars: int,
    max_summary_chars: int,
    max_prompt_chars: int,
) -> list[ChatTurn]:
    who = name or "this person"
    system = (
        f"You keep a short profile of {who} for {persona.name}, a chat companion.\n"
        "Write the profile: who they are, the people and events in their life, what they "
        "like and dislike, how they like to be talked to. Use only the facts given; where "
        "the facts disagree with the old profile, the facts win. Invent nothing.\n"
        "At most 120 words. Answer with the profile text only."
    )
    facts = _capped_lines(
        [f"- {truncate(m.text, limit=max_memory_chars)}" for m in memories],
        limit=max_prompt_chars,
    )
    parts = []
    if previous is not None:
        parts.append(f"Old profile:\n{truncate(previous, limit=max_summary_chars)}")
    parts.append(f"What is remembered about {who}:\n{facts}")
    return [
        ChatTurn(role="system", content=system),
        ChatTurn(role="user", content="\n\n".join(parts)),
    ]


def self_turns(
    *,
    persona: PersonaCard,
    previous: str | None,
    said: Sequence[StoredMessage],
    max_message_chars: int,
    max_summary_chars: int,
    max_prompt_chars: int,
) -> list[ChatTurn]:
    system = (
        f"You are {persona.name}. {persona.self_description.strip()}\n"
        "Rewrite your self-concept in the first person from your old one and what you said "
        "lately: who you are, how you speak, what you care about, running jokes, promises "
        "you made. Say nothing private about the people you talk to.\n"
        "At most 120 words. Answer with the text only."
    )
    old = truncate(previous or persona.self_description.strip(), limit=max_summary_chars)
    lines = [f"- {truncate(m.text, limit=max_message_chars)}" for m in said]
    body = f"Your self-concept so far:\n{old}\n\nWhat you said lately:\n" + _capped_lines(
        lines, limit=max_prompt_chars
    )
    return [ChatTurn(role="system", content=system), ChatTurn(role="user", content=body)]
