"""A platform's message read into tomo's terms, before its files are downloaded.

Each adapter's translate module reads a message into an Incoming (with that platform's
kind of file reference); the adapter fetches the files and asks for the Inbound the brain
takes. The split keeps translation pure: no network there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from brain.messages import ChatRef, Inbound, PersonRef, Segment, Text

R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class Incoming(Generic[R]):
    """A message read into tomo's terms, its files (`media`) not yet fetched."""

    id: str
    chat: ChatRef
    author: PersonRef
    text: str
    media: tuple[R, ...]
    to_bot: bool
    reply_to: str | None
    sent_at: datetime

    def inbound(self, media: Sequence[Segment] = ()) -> Inbound:
        """The Inbound for the brain: the text (if any), then the fetched `media`."""
        segments: list[Segment] = [Text(text=self.text)] if self.text.strip() else []
        segments.extend(media)
        return Inbound(
            id=self.id,
            chat=self.chat,
            author=self.author,
            segments=tuple(segments),
            to_bot=self.to_bot,
            reply_to=self.reply_to,
            sent_at=self.sent_at,
        )
