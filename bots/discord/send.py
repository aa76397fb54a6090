"""Replies out: text in pieces, voice messages, sticker renders, images and documents.

discord.py waits out rate limits itself (a 429's retry_after, the X-RateLimit buckets,
global limits) and retries 5xx answers a few times. What it gives up on (network
trouble, a server error that lasts, a rate limit longer than it may wait) is retried here
with exponential backoff (capped). Every message carries a nonce Discord enforces, so a
retry of a send that did reach Discord does not post it twice. A message is never
dropped without an error in the log.

Mentions never ping anyone (AllowedMentions.none()), except the person a guild reply
answers (replied_user), once per reply: nothing a model writes can ping @everyone.

Voice replies go out as real Discord voice messages, which discord.py has no call for:
the message flag IS_VOICE_MESSAGE, no content, and one OGG/Opus attachment whose
metadata carries duration_secs and the waveform (256 amplitude bytes, base64), sent as a
multipart request through discord.py's own HTTP client (its rate limits apply). Where a
voice message is refused (a guild channel without the Send Voice Messages permission),
the audio goes out as a plain attachment instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import discord
from discord.http import Route

from bots.delivery import Delivery, discard_documents
from bots.discord.translate import IS_VOICE_MESSAGE, pieces
from bots.downloads import is_ogg_opus
from bots.repeating import repeating
from bots.retry import Retry, Verdict, with_backoff
from brain.errors import TomoError
from brain.messages import Document, Image, PersonRef, Reply, Segment, Sticker, Text, Voice
from brain.ports import BlobStore

log = logging.getLogger(__name__)

T = TypeVar("T")

VOICE_FILENAME = "voice-message.ogg"


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How sends are retried (on top of discord.py's own rate-limit handling)."""

    attempts: int = 6
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    # Rate limits longer than this are cut short (Discord answers 429 again if early).
    max_rate_limit_wait_s: float = 300.0


# Failures worth another try: the network, a timeout, Discord's servers.
TRANSIENT = (discord.DiscordServerError, aiohttp.ClientError, OSError, TimeoutError)


async def with_retries(call: Callable[[], Awaitable[T]], *, policy: RetryPolicy, what: str) -> T:
    """`call()`, retried on rate limits discord.py gave up on and on transient failures;
    other errors (forbidden, not found, a bad request) and the last failure are raised."""

    def judge(exc: Exception) -> Verdict:
        if isinstance(exc, discord.RateLimited):
            return min(max(exc.retry_after, 0.0), policy.max_rate_limit_wait_s)
        return Retry.BACKOFF if isinstance(exc, TRANSIENT) else Retry.NO

    return await with_backoff(
        call, policy=policy, what=what, judge=judge, log=log, rate_limit="Discord rate limit"
    )


@contextlib.asynccontextmanager
async def typing(
    client: discord.Client, channel_id: int, *, every_s: float = 8.0
) -> AsyncIterator[None]:
    """Show "tomo is typing..." until the block ends; Discord clears it after about 10 s,
    so it is sent again every `every_s`. Cosmetic: a failure is logged, never raised."""

    async def show() -> None:
        try:
            await client.http.send_typing(channel_id)
        except (discord.HTTPException, *TRANSIENT) as exc:
            log.debug("typing not shown: %s", type(exc).__name__)

    async with repeating(show, every_s=every_s):
        yield


@dataclass(frozen=True, kw_only=True)
class _Target:
    channel_id: int
    reference: discord.MessageReference | None
    guild: bool  # a guild channel (a reply pings the person it answers, once)
    in_dm: bool


class DiscordSender:
    """Delivers Replies with one discord.py Client (its HTTP session, its rate limits)."""

    def __init__(
        self, client: discord.Client, *, blobs: BlobStore, policy: RetryPolicy | None = None
    ) -> None:
        self.client = client
        self.blobs = blobs
        self.policy = policy or RetryPolicy()

    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery:
        """Send every segment of `reply`. A private reply to a guild message goes to the
        asker's DM. Documents are sent only in a DM, and their blobs are deleted
        afterwards either way."""
        privately = reply.private and reply.chat.kind == "group"
        try:
            if privately:
                if asker is None:
                    log.warning("a private reply without a person to send it to was dropped")
                    return Delivery.FAILED
                try:
                    channel_id = await self._dm_channel(int(asker.user_id))
                except discord.HTTPException as exc:
                    log.info("could not open a DM with %s: %s", asker.user_id, exc.status)
                    return Delivery.PRIVATE_REFUSED
            else:
                channel_id = int(reply.chat.chat_id)
            reference = None
            if not privately and reply.reply_to and reply.reply_to.isdigit():
                reference = discord.MessageReference(
                    message_id=int(reply.reply_to),
                    channel_id=channel_id,
                    fail_if_not_exists=False,
                )
            target = _Target(
                channel_id=channel_id,
                reference=reference,
                guild=reply.chat.kind == "group" and not privately,
                in_dm=privately or reply.chat.kind == "dm",
            )
            failed = False
            pinged = False
            for segment in reply.segments:
                try:
                    await self._send(segment, target=target, ping=not pinged)
                    pinged = pinged or isinstance(segment, Text | Voice | Sticker | Image)
                except discord.Forbidden as exc:
                    if privately:
                        return Delivery.PRIVATE_REFUSED
                    log.warning(
                        "Discord refused a message to channel %s (%s: missing access?)",
                        channel_id,
                        exc.code,
                    )
                    return Delivery.FAILED
                except (discord.HTTPException, TomoError, *TRANSIENT) as exc:
                    failed = True
                    log.error(
                        "could not deliver a %s to channel %s: %s: %s",
                        segment.kind,
                        channel_id,
                        type(exc).__name__,
                        exc,
                    )
            if failed:
                return Delivery.FAILED
            return Delivery.SENT_PRIVATELY if privately else Delivery.SENT
        finally:
            await discard_documents(reply, self.blobs)

    async def _dm_channel(self, user_id: int) -> int:
        data = await with_retries(
            lambda: self.client.http.start_private_message(user_id),
            policy=self.policy,
            what="open a DM",
        )
        return int(data["id"])

    def _mentions(self, target: _Target, *, ping: bool) -> discord.AllowedMentions:
        allowed = discord.AllowedMentions.none()
        allowed.replied_user = ping and target.guild and target.reference is not None
        return allowed

    async def _send(self, segment: Segment, *, target: _Target, ping: bool) -> None:
        if isinstance(segment, Text):
            for index, piece in enumerate(pieces(segment.text)):
                await self._post(target, content=piece, ping=ping and index == 0)
            return
        if isinstance(segment, Voice):
            data = await self.blobs.get(segment.blob_key)
            if is_ogg_opus(data) and segment.waveform:
                try:
                    await self._post_voice(target, data, segment=segment, ping=ping)
                    return
                except discord.Forbidden as exc:  # no Send Voice Messages permission here
                    log.info("voice message refused (%s); sending the audio as a file", exc.code)
            name = "voice.ogg" if is_ogg_opus(data) else "voice-reply.audio"
            await self._post(target, files=[(name, data)], ping=ping)
            return
        if isinstance(segment, Sticker):
            data = await self.blobs.get(segment.blob_key)
            await self._post(target, files=[("sticker.webp", data)], ping=ping)
            return
        if isinstance(segment, Image):
            data = await self.blobs.get(segment.blob_key)
            ext = segment.mime.rsplit("/", 1)[-1].replace("jpeg", "jpg") or "png"
            await self._post(target, files=[(f"image.{ext}", data)], ping=ping)
            return
        if isinstance(segment, Document):
            if not target.in_dm:
                log.warning("a document for a guild channel was not sent (only DMs)")
                return
            data = await self.blobs.get(segment.blob_key)
            await self._post(target, files=[(segment.filename, data)], ping=ping)
            return
        # Mentions stand inside the text already.

    async def _post(
        self,
        target: _Target,
        *,
        content: str | None = None,
        files: list[tuple[str, bytes]] | None = None,
        ping: bool,
    ) -> None:
        channel = self.client.get_partial_messageable(target.channel_id)
        nonce = secrets.token_hex(8)  # the same for every retry: Discord posts it once
        mentions = self._mentions(target, ping=ping)

        async def send() -> None:
            attached = [discord.File(io.BytesIO(data), filename=name) for name, data in files or []]
            kwargs: dict[str, Any] = {}
            if target.reference is not None:
                kwargs["reference"] = target.reference
            if attached:
                kwargs["files"] = attached
            await channel.send(
                content,
                allowed_mentions=mentions,
                nonce=nonce,
                **kwargs,
            )

        await with_retries(send, policy=self.policy, what="send a message")

    async def _post_voice(
        self, target: _Target, data: bytes, *, segment: Voice, ping: bool
    ) -> None:
        payload: dict[str, Any] = {
            "flags": IS_VOICE_MESSAGE,
            "attachments": [
                {
                    "id": "0",
                    "filename": VOICE_FILENAME,
                    "duration_secs": round(max(segment.duration_s, 0.1), 2),
                    "waveform": segment.waveform,
                }
            ],
            "allowed_mentions": self._mentions(target, ping=ping).to_dict(),
            "nonce": secrets.token_hex(8),
            "enforce_nonce": True,
        }
        if target.reference is not None:
            payload["message_reference"] = target.reference.to_message_reference_dict()
        route = Route("POST", "/channels/{channel_id}/messages", channel_id=target.channel_id)
        body = json.dumps(payload)

        async def send() -> None:
            file = discord.File(io.BytesIO(data), filename=VOICE_FILENAME)
            form: list[dict[str, Any]] = [
                {"name": "payload_json", "value": body},
                {
                    "name": "files[0]",
                    "value": file.fp,
                    "filename": VOICE_FILENAME,
                    "content_type": "audio/ogg",
                },
            ]
            try:
                await self.client.http.request(route, form=form, files=[file])
            finally:
                file.close()

        await with_retries(send, policy=self.policy, what="send a voice message")
