"""L1 extraction: the prompt, the JSON schema, and turning a (possibly weak) model's
answer into checked memories with honest provenance.

Nothing the model says is trusted: the answer is parsed leniently (code fences, text
around the JSON), then every item is checked, and whatever is malformed is skipped.
Provenance and `about` are decided here by plain rules, never by the model alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from brain.memory.lexical import tokenize
from brain.memory.types import scope_of
from brain.messages import ChatRef
from brain.ports import ChatTurn, StoredMessage
from brain.prompt import truncate

EXTRACT_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "properties": {
        "memories": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "about": {"type": "array", "items": {"type": "string"}},
                    "importance": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "required": ["text", "about", "importance"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["memories"],
    "additionalProperties": False,
}

DEFAULT_IMPORTANCE = 0.5


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """One memory as the model proposed it, after shape checks."""

    text: str
    names: tuple[str, ...]
    importance: float


@dataclass(frozen=True, kw_only=True)
class Planned:
    """A checked memory, ready to be deduplicated and stored."""

    scope: str
    text: str
    about: tuple[int, ...]
    source_message_ids: tuple[int, ...]
    importance: float


def speaker_label(message: StoredMessage, *, persona_name: str) -> str:
    return persona_name if message.role == "assistant" else (message.author_name or "someone")


def extraction_turns(
    *,
    chat: ChatRef,
    batch: Sequence[StoredMessage],
    persona_name: str,
    max_message_chars: int,
) -> list[ChatTurn]:
    where = "a group chat" if chat.kind == "group" else "a private chat"
    system = (
        f"You pick long-term memories out of {where} for {persona_name}, a chat companion.\n"
        "A memory is one short, self-contained sentence about a person who spoke: facts "
        "about their life, the people in it, plans, preferences, events.\n"
        "Rules:\n"
        "- Name the person in every memory (never 'I' or 'you').\n"
        "- Write absolute dates (the messages show when they were sent), not 'today'.\n"
        f"- Skip greetings, small talk, and what {persona_name} says.\n"
        "- 'about': the names of the speakers the memory is about, spelled as in the chat.\n"
        "- 'importance': 0 (trivial) to 1 (life-changing).\n"
        '- Nothing worth remembering: answer {"memories": []}.\n'
        "Answer with JSON only."
    )
    lines = [
        f"[{i}] {m.sent_at:%Y-%m-%d %H:%M} "
        f"{speaker_label(m, persona_name=persona_name)}: "
        f"{truncate(m.text, limit=max_message_chars)}"
        for i, m in enumerate(batch, start=1)
    ]
    return [
        ChatTurn(role="system", content=system),
        ChatTurn(role="user", content="Messages:\n" + "\n".join(lines)),
    ]


def _loads(raw: str) -> object:
    """JSON from a model's answer: as it is, inside a code fence, or the outer {...}."""
    text = raw.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\s*|\s*```$", "", text)
    try:
        return json.loads(text)
    except ValueError:
        pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            return json.loads(text[start : end + 1])
        except ValueError:
            return None
    return None


def _importance(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return DEFAULT_IMPORTANCE
    number = float(value)
    if not math.isfinite(number):
        return DEFAULT_IMPORTANCE
    return min(1.0, max(0.0, number))


def parse_candidates(raw: str, *, max_items: int, max_chars: int) -> tuple[list[Candidate], int]:
    """The well-formed memories of a model's answer, and how many items were skipped.

    An answer that is not JSON or not `{"memories": [...]}` gives nothing (one skip).
    An item needs a non-empty string `text`; `about` must be a list of strings (a lone
    string is taken as a list of one; other entries are dropped); a missing or bad
    `importance` becomes 0.5, and any number is clamped to 0..1.
    """
    data = _loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("memories"), list):
        return [], 1
    found: list[Candidate] = []
    skipped = 0
    for item in data["memories"]:
        if len(found) >= max_items:
            skipped += 1
            continue
        text = item.get("text") if isinstance(item, dict) else None
        if not isinstance(text, str) or not " ".join(text.split()):
            skipped += 1
            continue
        assert isinstance(item, dict)
        about = item.get("about", [])
        if isinstance(about, str):
            about = [about]
        if not isinstance(about, list):
            skipped += 1
            continue
        names = tuple(n.strip() for n in about if isinstance(n, str) and n.strip())
        found.append(
            Candidate(
                text=truncate(" ".join(text.split()), limit=max_chars),
                names=names,
                importance=_importance(item.get("importance")),
            )
        )
    return found, skipped


def pick_sources(
    text: str, messages: Sequence[StoredMessage], *, prefer: set[int], limit: int
) -> list[StoredMessage]:
    """The provenance of a memory: the user messages whose words overlap it most.

    Words are compared as stems without stopwords. All messages tied at the best overlap
    count (messages by the people the memory is about first, then the newest), at most
    `limit`. With no overlap at all, the last message by a person the memory is about
    (or else the batch's last user message) is cited, so a memory always has a source.
    """
    words = set(tokenize(text))
    scored = [(len(words & set(tokenize(m.text))), m) for m in messages]
    best = max((score for score, _ in scored), default=0)
    if best == 0:
        pool = [m for m in messages if m.author_id in prefer] or list(messages)
        return pool[-1:]
    tied = [m for score, m in scored if score == best]
    tied.sort(key=lambda m: (m.author_id in prefer, m.id), reverse=True)
    return sorted(tied[: max(1, limit)], key=lambda m: m.id)


def attributed(text: str, speakers: Sequence[str]) -> str:
    """`text`, prefixed with "<Name> said: " for each speaker it does not name."""
    folded = text.casefold()
    missing = [n for n in dict.fromkeys(speakers) if n and n.casefold() not in folded]
    if not missing:
        return text
    return f"{' and '.join(missing)} said: {text}"


def plan_memories(
    candidates: Sequence[Candidate],
    *,
    chat: ChatRef,
    batch: Sequence[StoredMessage],
    persona_name: str,
    max_sources: int,
) -> tuple[list[Planned], int]:
    """Checked memories for `candidates`, and how many were skipped.

    `about` holds the people named by the model who spoke (as users) in the batch; a
    candidate naming only people who did not speak is skipped, one naming nobody is
    about the authors of its sources. In a group the text must name who said it.
    """
    said = [m for m in batch if m.role == "user" and m.author_id is not None]
    if not said:
        return [], len(candidates)
    speakers: dict[str, set[int]] = {}
    for m in said:
        assert m.author_id is not None
        speakers.setdefault(m.author_name.casefold(), set()).add(m.author_id)
    bot = persona_name.casefold()
    planned: list[Planned] = []
    skipped = 0
    for cand in candidates:
        folded = [n.casefold() for n in cand.names]
        resolved = {pid for n in folded for pid in speakers.get(n, ())}
        unknown = [n for n in folded if n not in speakers and n != bot]
        if unknown and not resolved:
            skipped += 1
            continue
        sources = pick_sources(cand.text, said, prefer=resolved, limit=max_sources)
        about = resolved or {m.author_id for m in sources if m.author_id is not None}
        text = cand.text
        if chat.kind == "group":
            text = attributed(text, [m.author_name for m in sources])
        owner = sources[0].author_id
        assert owner is not None
        planned.append(
            Planned(
                scope=scope_of(chat, person_id=owner),
                text=text,
                about=tuple(sorted(about)),
                source_message_ids=tuple(m.id for m in sources),
                importance=cand.importance,
            )
        )
    return planned, skipped
