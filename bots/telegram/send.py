"""Replies out: text in pieces, voice notes, sticker renders, photos and documents.

Every call is retried: flood control (429, RetryAfter) waits as long as Telegram says,
network trouble and timeouts back off exponentially (capped). A request that timed out
may have reached Telegram, so a retried message can (rarely) arrive twice; a message is
never dropped without an error in the log. Text goes out as plain text (no parse_mode):
nothing a model writes can break Telegram's markup parser.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from telegram import Bot, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bots.delivery import Delivery, discard_documents
from bots.downloads import is_ogg_opus
from bots.repeating import repeating
from bots.retry import Retry, Verdict, with_backoff
from bots.telegram.translate import seconds, split_text
from brain.errors import TomoError
from brain.messages import Document, Image, PersonRef, Reply, Segment, Sticker, Text, Voice
from brain.ports import BlobStore

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How Bot API calls are retried."""

    attempts: int = 8
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    # Flood waits longer than this are cut short (Telegram answers 429 again if early).
    max_flood_wait_s: float = 300.0


async def with_retries(call: Callable[[], Awaitable[T]], *, policy: RetryPolicy, what: str) -> T:
    """`call()`, retried on flood control and network trouble; other errors (a bad
    request, a forbidden chat) and the last failure are raised."""

    def judge(exc: Exception) -> Verdict:
        if isinstance(exc, BadRequest):
            return Retry.NO  # a NetworkError subclass in PTB, but retrying cannot fix it
        if isinstance(exc, RetryAfter):
            return min(max(seconds(exc.retry_after), 0.0), policy.max_flood_wait_s)
        return Retry.BACKOFF if isinstance(exc, NetworkError) else Retry.NO  # TimedOut too

    def describe(exc: Exception) -> str:
        return f"{type(exc).__name__}: {exc.message if isinstance(exc, TelegramError) else exc}"

    return await with_backoff(
        call,
        policy=policy,
        what=what,
        judge=judge,
        log=log,
        describe=describe,
        rate_limit="Telegram flood control",
    )


@contextlib.asynccontextmanager
async def chat_action(
    bot: Bot, chat_id: int | str, *, action: str = ChatAction.TYPING, every_s: float = 4.0
) -> AsyncIterator[None]:
    """Show `action` ("typing...", "recording a voice message...") until the block ends;
    Telegram clears it after about 5 s, so it is sent again every `every_s`."""

    async def show() -> None:
        try:
            await bot.send_chat_action(chat_id, action)
        except TelegramError as exc:  # cosmetic: never retried, never fatal
            log.debug("chat action not shown: %s", type(exc).__name__)

    async with repeating(show, every_s=every_s):
        yield


class TelegramSender:
    """Delivers Replies with one Bot."""

    def __init__(self, bot: Bot, *, blobs: BlobStore, policy: RetryPolicy | None = None) -> None:
        self.bot = bot
        self.blobs = blobs
        self.policy = policy or RetryPolicy()

    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery:
        """Send every segment of `reply`. A private reply to a group message goes to the
        asker's private chat (their user id is its chat id). Documents are sent only in a
        private chat, and their blobs are deleted afterwards either way."""
        privately = reply.private and reply.chat.kind == "group"
        try:
            if privately and asker is None:
                log.warning("a private reply without a person to send it to was dropped")
                return Delivery.FAILED
            chat_id = int(asker.user_id if privately and asker else reply.chat.chat_id)
            in_dm = privately or reply.chat.kind == "dm"
            thread = None
            if not privately and reply.reply_to and reply.reply_to.isdigit():
                thread = ReplyParameters(
                    message_id=int(reply.reply_to), allow_sending_without_reply=True
                )
            failed = False
            for segment in reply.segments:
                try:
                    await self._send(segment, chat_id=chat_id, thread=thread, in_dm=in_dm)
                except Forbidden:
                    if privately:
                        return Delivery.PRIVATE_REFUSED
                    log.warning("Telegram refused a message to chat %s (blocked, or left)", chat_id)
                    return Delivery.FAILED
                except (TelegramError, TomoError) as exc:
                    failed = True
                    log.error(
                        "could not deliver a %s to chat %s: %s: %s",
                        segment.kind,
                        chat_id,
                        type(exc).__name__,
                        exc.message if isinstance(exc, TelegramError) else exc,
                    )
            if failed:
                return Delivery.FAILED
            return Delivery.SENT_PRIVATELY if privately else Delivery.SENT
        finally:
            await discard_documents(reply, self.blobs)

    async def send_text(
        self, chat_id: int, text: str, *, thread: ReplyParameters | None = None
    ) -> None:
        for piece in split_text(text):
            await self._call(
                partial(self.bot.send_message, chat_id, piece, reply_parameters=thread),
                what="sendMessage",
            )

    async def _send(
        self, segment: Segment, *, chat_id: int, thread: ReplyParameters | None, in_dm: bool
    ) -> None:
        bot = self.bot
        if isinstance(segment, Text):
            await self.send_text(chat_id, segment.text, thread=thread)
            return
        if isinstance(segment, Voice):
            data = await self.blobs.get(segment.blob_key)
            duration = max(1, round(segment.duration_s))
            if is_ogg_opus(data):
                await self._call(
                    partial(
                        bot.send_voice,
                        chat_id,
                        data,
                        duration=duration,
                        filename="voice.ogg",
                        reply_parameters=thread,
                    ),
                    what="sendVoice",
                )
            else:  # not a Telegram voice note: still audible, as an audio file
                await self._call(
                    partial(
                        bot.send_audio, chat_id, data, duration=duration, reply_parameters=thread
                    ),
                    what="sendAudio",
                )
            return
        if isinstance(segment, Sticker):
            data = await self.blobs.get(segment.blob_key)
            await self._call(
                partial(bot.send_sticker, chat_id, data, reply_parameters=thread),
                what="sendSticker",
            )
            return
        if isinstance(segment, Image):
            data = await self.blobs.get(segment.blob_key)
            await self._call(
                partial(bot.send_photo, chat_id, data, reply_parameters=thread),
                what="sendPhoto",
            )
            return
        if isinstance(segment, Document):
            if not in_dm:
                log.warning("a document for a group chat was not sent (only private chats)")
                return
            data = await self.blobs.get(segment.blob_key)
            await self._call(
                partial(
                    bot.send_document,
                    chat_id,
                    data,
                    filename=segment.filename,
                    reply_parameters=thread,
                ),
                what="sendDocument",
            )
            return
        # Mentions stand inside the text already.

    async def _call(self, call: Callable[[], Awaitable[object]], *, what: str) -> None:
        await with_retries(call, policy=self.policy, what=what)
