"""How a Reply went out, and what every adapter does with the brain's replies to a message.

Each platform's sender answers a Reply with a Delivery. A reply meant to be private (a
group asker's memories, say) goes to the person's own chat, which the platform may refuse;
the person is told once per message where the answer went, or why it did not go.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from brain.errors import TomoError
from brain.messages import Document, Inbound, PersonRef, Reply, Text
from brain.ports import BlobStore


class Delivery(enum.Enum):
    """How a Reply went out (each platform's sender answers with one)."""

    SENT = "sent"
    SENT_PRIVATELY = "sent privately"  # a group's private reply, in the person's own chat
    PRIVATE_REFUSED = "private refused"  # ...which the platform refused (closed DMs, say)
    FAILED = "failed"


class Sender(Protocol):
    """A platform's sender (TelegramSender, DiscordSender, QQSender)."""

    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery: ...


async def discard_documents(reply: Reply, blobs: BlobStore) -> None:
    """Delete the blobs of the Documents in `reply` (a memory export is made for one
    reply): called once it is sent, or has failed."""
    for segment in reply.segments:
        if isinstance(segment, Document):
            await blobs.delete(segment.blob_key)


def note(inbound: Inbound, text: str) -> Reply:
    """A short text answering `inbound`, in its chat."""
    return Reply(chat=inbound.chat, segments=(Text(text=text),), reply_to=inbound.id)


def apology(inbound: Inbound, exc: TomoError) -> list[Reply]:
    """What is said when the brain could not answer `inbound`: sorry, with the reason, to a
    message meant for the bot; nothing to one that was only overheard."""
    if not inbound.to_bot:
        return []
    return [note(inbound, f"Sorry, something went wrong on my side: {exc}")]


async def deliver_replies(
    sender: Sender,
    replies: Iterable[Reply],
    *,
    asker: PersonRef,
    on_private: Callable[[Delivery], Awaitable[None]],
) -> None:
    """Send `replies` in order; after the first that went privately (or that the platform
    would not send privately), `on_private(outcome)` once, so the asker knows where to look."""
    noted = False
    for reply in replies:
        outcome = await sender.deliver(reply, asker=asker)
        if noted or outcome not in (Delivery.SENT_PRIVATELY, Delivery.PRIVATE_REFUSED):
            continue
        noted = True
        await on_private(outcome)
