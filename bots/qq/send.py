"""Replies out over OneBot: text (in groups answering the message and @-ing the asker),
voice as a SILK `record`, sticker renders as an `image`, exports as a private file.

Every send is retried with exponential backoff when it times out, when the connection
drops before the answer, or when the server reports a failure that is not a bad request;
while the connection is down a send waits for the next one (up to the client's
offline_wait_s), so replies are not lost to a reconnect. A send that timed out or lost its
connection may have reached QQ, so a retried message can (rarely) arrive twice; a message
is never dropped without an error in the log.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bots.delivery import Delivery, discard_documents
from bots.qq.media import png_of, silk_of
from bots.qq.onebot import (
    ActionFailedError,
    ActionTimeoutError,
    Caller,
    ConnectionLostError,
    OneBotError,
)
from bots.qq.translate import (
    JSON,
    OwnMessages,
    at_segment,
    file_pieces,
    image_segment,
    record_segment,
    text_messages,
    text_segment,
)
from bots.retry import Retry, Verdict, with_backoff
from brain.errors import TomoError
from brain.messages import (
    Document,
    Image,
    Mention,
    PersonRef,
    Reply,
    Segment,
    Sticker,
    Text,
    Voice,
)
from brain.ports import BlobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

# Retcodes that say the request itself is wrong: sending it again cannot help.
# (100: bad parameters in go-cqhttp and NapCat; 14xx: the HTTP-like codes some servers use.)
PERMANENT_RETCODES = frozenset({100, 1400, 1401, 1403, 1404})


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How sends are retried."""

    attempts: int = 5
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0


def retryable(exc: OneBotError) -> bool:
    if isinstance(exc, ConnectionLostError | ActionTimeoutError):
        return True
    return isinstance(exc, ActionFailedError) and exc.retcode not in PERMANENT_RETCODES


async def with_retries(call: Callable[[], Awaitable[T]], *, policy: RetryPolicy, what: str) -> T:
    """`call()`, retried with backoff while it fails in a way that may pass; the last
    failure, and any other, is raised."""

    def judge(exc: Exception) -> Verdict:
        return Retry.BACKOFF if isinstance(exc, OneBotError) and retryable(exc) else Retry.NO

    return await with_backoff(
        call, policy=policy, what=what, judge=judge, log=log, describe=str, label="QQ: "
    )


@dataclass(frozen=True, kw_only=True)
class _Target:
    private: bool  # send_private_msg (else send_group_msg)
    id: str  # user id or group id
    reply_to: str | None  # the message answered (groups only)
    at: str | None  # who to @ (groups only)


class QQSender:
    """Delivers Replies through one OneBot connection."""

    def __init__(
        self,
        client: Caller,
        *,
        blobs: BlobStore,
        own: OwnMessages,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.client = client
        self.blobs = blobs
        self.own = own
        self.policy = policy or RetryPolicy()

    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery:
        """Send every segment of `reply`. A private reply to a group message goes to the
        asker's private chat. Documents are sent only in a private chat, and their blobs
        are deleted afterwards either way."""
        privately = reply.private and reply.chat.kind == "group"
        try:
            if privately and asker is None:
                log.warning("QQ: a private reply without a person to send it to was dropped")
                return Delivery.FAILED
            target = self._target(reply, asker=asker, privately=privately)
            failed = False
            for segment in reply.segments:
                try:
                    await self._send(segment, target=target)
                except (OneBotError, TomoError) as exc:
                    if privately and isinstance(exc, ActionFailedError):
                        log.warning("QQ refused a private message to %s: %s", target.id, exc)
                        return Delivery.PRIVATE_REFUSED
                    failed = True
                    log.error(
                        "QQ: could not deliver a %s to %s %s: %s",
                        segment.kind,
                        "user" if target.private else "group",
                        target.id,
                        exc,
                    )
                target = _Target(private=target.private, id=target.id, reply_to=None, at=None)
            if failed:
                return Delivery.FAILED
            return Delivery.SENT_PRIVATELY if privately else Delivery.SENT
        finally:
            await discard_documents(reply, self.blobs)

    def _target(self, reply: Reply, *, asker: PersonRef | None, privately: bool) -> _Target:
        if privately and asker is not None:
            return _Target(private=True, id=asker.user_id, reply_to=None, at=None)
        if reply.chat.kind == "dm":
            return _Target(private=True, id=reply.chat.chat_id, reply_to=reply.reply_to, at=None)
        return _Target(
            private=False,
            id=reply.chat.chat_id,
            reply_to=reply.reply_to,
            at=asker.user_id if asker is not None else None,
        )

    async def send_message(self, message: list[JSON], *, target: _Target) -> str | None:
        """One message; its id (remembered as the bot's own)."""
        action = "send_private_msg" if target.private else "send_group_msg"
        key = "user_id" if target.private else "group_id"
        params: JSON = {key: _number(target.id), "message": message}
        data = await with_retries(
            lambda: self.client.call(action, params), policy=self.policy, what=action
        )
        message_id = data.get("message_id") if isinstance(data, dict) else None
        if message_id is None:
            return None
        self.own.add(message_id)
        return str(message_id)

    async def _send(self, segment: Segment, *, target: _Target) -> None:
        if isinstance(segment, Text):
            for message in text_messages(segment.text, reply_to=target.reply_to, at=target.at):
                await self.send_message(message, target=target)
            return
        if isinstance(segment, Voice):
            # QQ plays only SILK voice notes; a voice message holds nothing else.
            silk = await silk_of(await self.blobs.get(segment.blob_key))
            await self.send_message([record_segment(_b64(silk))], target=target)
            return
        if isinstance(segment, Sticker | Image):
            data = await self.blobs.get(segment.blob_key)
            sticker = isinstance(segment, Sticker)
            if sticker:
                data = await png_of(data)
            await self.send_message([image_segment(_b64(data), sticker=sticker)], target=target)
            return
        if isinstance(segment, Mention):
            if not target.private:
                await self.send_message([at_segment(segment.user_id)], target=target)
            return
        if isinstance(segment, Document):
            if not target.private:
                log.warning("QQ: a document for a group chat was not sent (only private chats)")
                return
            await self._send_file(segment, user_id=target.id)

    async def _send_file(self, document: Document, *, user_id: str) -> None:
        """NapCat's upload_private_file (not in OneBot v11 itself); where the server has
        no such action or it fails, a text file goes out as text messages instead."""
        data = await self.blobs.get(document.blob_key)
        params: JSON = {
            "user_id": _number(user_id),
            "file": f"base64://{_b64(data)}",
            "name": document.filename,
        }
        try:
            await with_retries(
                lambda: self.client.call("upload_private_file", params),
                policy=self.policy,
                what="upload_private_file",
            )
            return
        except ActionFailedError as exc:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise exc from None
            log.warning("QQ: upload_private_file failed (%s); sending the file as text", exc)
        target = _Target(private=True, id=user_id, reply_to=None, at=None)
        pieces = file_pieces(text)
        header = f"{document.filename} (as text, {len(pieces)} part{'s' * (len(pieces) > 1)}):"
        for piece in [header, *pieces]:
            await self.send_message([text_segment(piece)], target=target)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _number(value: str) -> int | str:
    """QQ numbers as numbers (what OneBot servers expect), anything else as it is."""
    return int(value) if value.isdigit() else value
