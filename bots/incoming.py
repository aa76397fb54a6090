"""A platform's message read into tomo's terms, before its files are downloaded.

Each adapter's translate module reads a message into an Incoming (with that platform's
kind of file reference); the adapter fetches the files and asks for the Inbound the brain
takes. The split keeps translation pure: no network there.

A message whose fields are not of the kinds its platform documents (the client libraries
do not check) is refused with an InputError, never a stray TypeError or ValidationError.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import ValidationError

from brain.errors import InputError
from brain.messages import ChatRef, Inbound, PersonRef, Segment, Text

R = TypeVar("R")

# What reading a malformed message raises (pydantic's ValidationError is a ValueError).
MALFORMED = (AttributeError, IndexError, KeyError, OverflowError, TypeError, ValueError)

_BOTS = Path(__file__).resolve().parent

PLATFORM_NAMES = {"telegram": "Telegram", "discord": "Discord", "qq": "QQ"}


@contextmanager
def reading(platform: str) -> Iterator[None]:
    """Errors of reading a malformed message from `platform`, as one InputError.

    The error names the fields or the line of code that failed, never the message's
    words (they may be private, and errors are logged)."""
    try:
        yield
    except MALFORMED as exc:
        raise InputError(f"{platform} sent a message tomo cannot read ({_why(exc)})") from None


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
    # the last line of tomo's own code that ran (the library's lines say less)
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).is_relative_to(_BOTS)] or frames
    where = f" at {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""
    return f"{type(exc).__name__}{where}: a field is not of the documented kind"


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
        with reading(PLATFORM_NAMES.get(self.chat.platform, self.chat.platform)):
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
