"""Context keys: what the recall index sees for an L0 message.

A turn alone is often unsearchable ("Yes, last Saturday!"). Its key adds the date, the
speaker and the neighbouring turns; the recalled item still shows and cites only the
turn itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Turn(Protocol):
    """A neighbouring turn: who spoke and what (a StoredMessage or an IndexEntry)."""

    @property
    def author_name(self) -> str: ...

    @property
    def text(self) -> str: ...


NEIGHBOUR_CHARS = 300
# e5 reads at most 512 tokens; the lexical key of a huge message is cut too.
DENSE_CHARS = 1500
KEY_CHARS = 4000


def day_text(at: datetime) -> str:
    return f"{at.day} {at:%B %Y}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def message_key(
    message: Turn,
    *,
    at: datetime,
    previous: Turn | None,
    following: Turn | None = None,
) -> str:
    """The lexical key of `message`, said at `at`, between its neighbouring turns."""
    parts = [f"{day_text(at)}."]
    if previous is not None:
        parts.append(f"{previous.author_name or 'Tomo'}: {_clip(previous.text, NEIGHBOUR_CHARS)}")
    parts.append(f"{message.author_name or 'Tomo'}: {_clip(message.text, KEY_CHARS)}")
    if following is not None:
        parts.append(f"{following.author_name or 'Tomo'}: {_clip(following.text, NEIGHBOUR_CHARS)}")
    return "\n".join(parts)


def shown_text(author_name: str, text: str, at: datetime) -> str:
    """How a recalled message is shown to the model: date, speaker, words."""
    return f"[{day_text(at)}] {author_name or 'Tomo'}: {text}"


def dense_text(author_name: str, text: str) -> str:
    """What is embedded for a message: the speaker and the words (e5 wants the speaker)."""
    return f"{author_name or 'Tomo'}: {_clip(text, DENSE_CHARS)}"
