"""The handling of a message once it is read, which is the same on every platform.

The message's files are fetched (one that cannot be had is reported, and the rest of the
message still goes on), the brain is asked, and its replies are sent, with one note when
an answer went to the person's own chat. Each adapter supplies the platform's parts.
"""

from __future__ import annotations

import abc
from functools import partial
from typing import Any, ClassVar, Generic, TypeVar

from bots.delivery import Delivery, deliver_replies
from bots.incoming import Incoming
from brain.messages import Inbound, PersonRef, Reply, Segment

M = TypeVar("M", bound=Incoming[Any])


class Answering(abc.ABC, Generic[M]):
    """An adapter's answering of the messages its translate module reads (as M)."""

    platform: ClassVar[str]  # as people know it ("Telegram"), for the notes in the chat

    async def answer(self, incoming: M) -> None:
        """Fetch the files of `incoming`, ask the brain, and send what it replies."""
        media, trouble = await self._fetch_media(incoming)
        inbound = incoming.inbound(media)
        if trouble and inbound.to_bot:
            await self._say(inbound, f"I couldn't get that from {self.platform}: {trouble}.")
        if inbound.is_blank:
            return
        replies = await self._think(inbound)
        on_private = partial(self._on_private, inbound)
        await deliver_replies(self, replies, asker=inbound.author, on_private=on_private)

    @abc.abstractmethod
    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery:
        """Send one Reply."""

    @abc.abstractmethod
    async def _fetch_media(self, incoming: M) -> tuple[list[Segment], str | None]:
        """The files of `incoming`, and why one could not be had (None: all came)."""

    @abc.abstractmethod
    async def _think(self, inbound: Inbound) -> list[Reply]:
        """The brain's replies to `inbound` (an apology when it failed)."""

    @abc.abstractmethod
    async def _say(self, inbound: Inbound, text: str) -> None:
        """A short note in the chat of `inbound`."""

    @abc.abstractmethod
    async def _on_private(self, inbound: Inbound, outcome: Delivery) -> None:
        """Tell the asker that an answer went to their own chat, or could not."""
