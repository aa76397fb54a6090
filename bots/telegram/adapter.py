"""TelegramAdapter: the connection to the Bot API, the update loop, and replies.

Long polling by default: tomo drives getUpdates itself and asks for the next updates
(which confirms the earlier ones to Telegram) only after the brain has handled, stored
and answered the batch, so a restart neither loses an update nor sees an answered one
again (and one redelivered after a crash is not answered twice: the brain keys
messages by their id). Webhook mode when TOMO_TELEGRAM__WEBHOOK_URL is set.

Within a batch, chats are handled side by side and each chat's messages in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

from telegram import Bot, BotCommand, Update
from telegram.constants import ChatAction
from telegram.error import (
    BadRequest,
    Conflict,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from bots.answering import Answering
from bots.delivery import Delivery, apology, note
from bots.downloads import fetch_all
from bots.settings import TelegramSettings
from bots.telegram.logs import mask_token
from bots.telegram.media import MAX_DOWNLOAD_BYTES, fetch
from bots.telegram.send import RetryPolicy, TelegramSender, chat_action, with_retries
from bots.telegram.translate import (
    ALLOWED_UPDATES,
    BOT_COMMANDS,
    BotIdentity,
    Incoming,
    read_message,
    seconds,
)
from brain.errors import ConfigError, TomoError
from brain.messages import Inbound, PersonRef, Reply, Segment, Voice
from brain.ports import BlobStore
from brain.speech.service import asks_for_voice

log = logging.getLogger(__name__)

BAD_TOKEN = "Telegram refused the bot token: check TOMO_TELEGRAM__TOKEN."


class Thinker(Protocol):
    """What the adapter needs of the brain (brain.mind.Brain is one)."""

    async def handle(self, inbound: Inbound) -> list[Reply]: ...


class EditSink(Protocol):
    """Takes an edited message (same id, new text) to update what was stored."""

    async def edit(self, inbound: Inbound) -> None: ...


class TelegramAdapter(Answering[Incoming]):
    platform = "Telegram"

    def __init__(
        self,
        settings: TelegramSettings,
        *,
        brain: Thinker,
        blobs: BlobStore,
        edits: EditSink | None = None,
        retry: RetryPolicy | None = None,
        chat_action_every_s: float = 4.0,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> None:
        token = settings.token.get_secret_value().strip() if settings.token else ""
        if not token:
            raise ConfigError("TOMO_TELEGRAM__TOKEN is empty: set the token BotFather gave you.")
        self.settings = settings
        self.brain = brain
        self.blobs = blobs
        self.edits = edits
        self.retry = retry or RetryPolicy()
        self.chat_action_every_s = chat_action_every_s
        # files over this are not downloaded (Telegram hands bots at most 20 MB anyway)
        self.max_download_bytes = min(max_download_bytes, MAX_DOWNLOAD_BYTES)
        self._redaction = mask_token(token)
        api = settings.api_base.rstrip("/")
        self._requests = (
            HTTPXRequest(connection_pool_size=32, read_timeout=15.0, pool_timeout=10.0),
            HTTPXRequest(connection_pool_size=2, read_timeout=10.0),
        )
        self.bot = Bot(
            token,
            base_url=f"{api}/bot",
            base_file_url=f"{api}/file/bot",
            request=self._requests[0],
            get_updates_request=self._requests[1],
        )
        self.sender = TelegramSender(self.bot, blobs=blobs, policy=self.retry)
        self.me: BotIdentity | None = None
        self._offset: int | None = None
        self._polled = False
        self._connected = False

    @property
    def connected(self) -> bool:
        """Whether the last call that receives updates went through (the webhook set, or
        the last getUpdates answered); False until then and while polls fail."""
        return self._connected

    # lifecycle ------------------------------------------------------------------------

    async def start(self) -> BotIdentity:
        """Check the token (getMe) and publish the command menu."""
        if self.me is not None:
            return self.me
        startup = RetryPolicy(attempts=4, first_delay_s=self.retry.first_delay_s)
        try:
            await with_retries(self.bot.initialize, policy=startup, what="getMe")
        except InvalidToken:
            raise ConfigError(BAD_TOKEN) from None
        except TelegramError as exc:
            raise ConfigError(
                f"Cannot reach the Telegram Bot API at {self.settings.api_base} "
                f"({type(exc).__name__}): check TOMO_TELEGRAM__API_BASE and the network."
            ) from None
        self.me = BotIdentity(id=self.bot.id, username=self.bot.username)
        try:
            commands = [BotCommand(name, about) for name, about in BOT_COMMANDS]
            await with_retries(
                partial(self.bot.set_my_commands, commands),
                policy=self.retry,
                what="setMyCommands",
            )
        except TelegramError as exc:  # the menu is a convenience: commands work without it
            log.warning("could not set the Telegram command menu: %s", type(exc).__name__)
        log.info("Telegram bot @%s is up", self.me.username)
        return self.me

    async def run(self) -> None:
        """Start and handle updates until cancelled; then close."""
        try:
            await self.start()
            if self.settings.webhook_url:
                await self._serve_webhook(self.settings.webhook_url)
            else:
                await self._poll()
        finally:
            await self.close()

    async def close(self) -> None:
        """Confirm the updates already handled, and close the HTTP clients."""
        try:
            if self._polled and self._offset is not None:
                with contextlib.suppress(TelegramError, TimeoutError):
                    await asyncio.wait_for(
                        self.bot.get_updates(offset=self._offset, timeout=0, limit=1), 5.0
                    )
        finally:
            for request in self._requests:
                await request.shutdown()
            self._redaction.remove()

    # receiving ------------------------------------------------------------------------

    async def _poll(self) -> None:
        bot = self.bot
        try:
            await with_retries(
                partial(bot.delete_webhook, drop_pending_updates=False),
                policy=self.retry,
                what="deleteWebhook",
            )
        except InvalidToken:
            raise ConfigError(BAD_TOKEN) from None
        self._polled = True
        self._connected = True  # the Bot API answered deleteWebhook
        delay = self.retry.first_delay_s
        while True:
            try:
                updates = await bot.get_updates(
                    offset=self._offset,
                    timeout=self.settings.poll_timeout,
                    allowed_updates=ALLOWED_UPDATES,
                )
            except InvalidToken:
                raise ConfigError(BAD_TOKEN) from None
            except RetryAfter as exc:
                await asyncio.sleep(max(seconds(exc.retry_after), 0.0))
                continue
            except (NetworkError, Conflict) as exc:  # Conflict: another tomo polls this bot
                self._connected = False
                log.warning(
                    "getUpdates failed (%s: %s); again in %.1f s",
                    type(exc).__name__,
                    exc.message,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry.max_delay_s)
                continue
            self._connected = True
            delay = self.retry.first_delay_s
            if updates:
                await self.handle_batch(updates)

    async def handle_batch(self, updates: Sequence[Update]) -> None:
        """Handle updates: chats side by side, each chat's messages in order. The offset
        to confirm moves past each update once it and every earlier one are handled (a
        stop in the middle of a batch confirms what is done, and no more)."""
        ordered = sorted(updates, key=lambda u: u.update_id)
        done: set[int] = set()
        lanes: dict[int | None, list[Update]] = {}
        for update in ordered:
            chat = update.effective_chat
            lanes.setdefault(chat.id if chat else None, []).append(update)

        def advance() -> None:
            for update in ordered:
                if update.update_id not in done:
                    return
                self._offset = update.update_id + 1

        async def lane(items: list[Update]) -> None:
            for update in items:
                await self.process(update)
                done.add(update.update_id)
                advance()

        async with asyncio.TaskGroup() as group:
            for items in lanes.values():
                group.create_task(lane(items))

    async def _serve_webhook(self, url: str) -> None:
        try:
            from bots.telegram.webhook import WebhookServer
        except ImportError:
            raise ConfigError(
                "Telegram webhook mode needs aiohttp (pip install aiohttp), or unset "
                "TOMO_TELEGRAM__WEBHOOK_URL to use long polling."
            ) from None
        settings = self.settings
        secret = (
            settings.webhook_secret.get_secret_value()
            if settings.webhook_secret
            else secrets.token_urlsafe(32)
        )
        server = WebhookServer(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            path=urlsplit(url).path or "/",
            secret=secret,
            on_update=self._receive_json,
        )
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(
                f"Cannot listen on {settings.webhook_listen}:{settings.webhook_port} for the "
                f"Telegram webhook ({exc.strerror}): set TOMO_TELEGRAM__WEBHOOK_LISTEN and "
                "TOMO_TELEGRAM__WEBHOOK_PORT."
            ) from None
        try:
            await with_retries(
                partial(
                    self.bot.set_webhook,
                    url,
                    secret_token=secret,
                    allowed_updates=ALLOWED_UPDATES,
                    drop_pending_updates=False,
                ),
                policy=self.retry,
                what="setWebhook",
            )
            self._connected = True
            await asyncio.Event().wait()  # until cancelled
        except InvalidToken:
            raise ConfigError(BAD_TOKEN) from None
        except BadRequest as exc:
            raise ConfigError(
                f"Telegram refused the webhook URL {url} ({exc.message}): check "
                "TOMO_TELEGRAM__WEBHOOK_URL (a public https URL)."
            ) from None
        finally:
            await server.stop()

    async def _receive_json(self, data: dict[str, Any]) -> None:
        try:
            update = Update.de_json(data, self.bot)
        except Exception:  # acknowledged anyway: Telegram would only send it again
            log.exception("a webhook update could not be read")
            return
        await self.process(update)

    # handling -------------------------------------------------------------------------

    async def process(self, update: Update) -> None:
        """Handle one update. Never raises: the brain's own errors (TomoError) are answered
        in the chat, anything else is logged."""
        try:
            await self._process(update)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not handle Telegram update %d", update.update_id)

    async def _process(self, update: Update) -> None:
        me = self.me or await self.start()
        message = update.message or update.edited_message
        if message is None:
            return
        incoming = read_message(message, me=me, edited=update.message is None)
        if incoming is None:
            return
        if incoming.edited:
            await self._edit(incoming)
            return
        await self.answer(incoming)

    async def _on_private(self, inbound: Inbound, outcome: Delivery) -> None:
        if outcome is Delivery.SENT_PRIVATELY:
            await self._say(inbound, "I've answered you in our private chat.")
        else:
            await self._say(inbound, self._start_me_first())

    async def _fetch_media(self, incoming: Incoming) -> tuple[list[Segment], str | None]:
        get = partial(fetch, self.bot, blobs=self.blobs, max_bytes=self.max_download_bytes)
        return await fetch_all(incoming.media, get)

    async def _think(self, inbound: Inbound) -> list[Reply]:
        try:
            if not inbound.to_bot:
                return await self.brain.handle(inbound)
            spoken = any(isinstance(s, Voice) for s in inbound.segments)
            action = (
                ChatAction.RECORD_VOICE
                if spoken or asks_for_voice(inbound.text)
                else ChatAction.TYPING
            )
            async with chat_action(
                self.bot,
                int(inbound.chat.chat_id),
                action=action,
                every_s=self.chat_action_every_s,
            ):
                return await self.brain.handle(inbound)
        except TomoError as exc:
            log.warning("the brain could not answer a Telegram message: %s", exc)
            return apology(inbound, exc)

    async def _edit(self, incoming: Incoming) -> None:
        if self.edits is None:
            log.debug("an edited Telegram message was not applied (no edit support)")
            return
        await self.edits.edit(incoming.inbound())

    async def _say(self, inbound: Inbound, text: str) -> None:
        await self.sender.deliver(note(inbound, text))

    def _start_me_first(self) -> str:
        handle = f"@{self.me.username}" if self.me else "me"
        return (
            f"I'd answer you privately, but you haven't started a chat with me yet: open "
            f"{handle}, press Start, then ask again."
        )

    # sending --------------------------------------------------------------------------

    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery:
        """Send one Reply (the brain's, or any other outbound work)."""
        return await self.sender.deliver(reply, asker=asker)
