"""DiscordAdapter: the gateway connection, messages in, replies out, slash commands.

discord.py holds the connection: it heartbeats, reconnects after a drop and RESUMEs the
session (Discord then replays what was missed), or IDENTIFYs anew when the session is
gone; it waits out REST rate limits. tomo adds retries with backoff for what discord.py
gives up on (bots/discord/send.py), the typing indicator, and its own order: the
messages of one channel are handled one at a time, in the order they came.

Where Discord is: discord.py builds every REST URL from the class attribute
`discord.http.Route.BASE` and connects to `DiscordWebSocket.DEFAULT_GATEWAY`; both are
global, so one process talks to one Discord API. TOMO_DISCORD__API_BASE sets the first;
the gateway is TOMO_DISCORD__GATEWAY_URL if set, else what `GET /gateway/bot` names.

Intents: guilds, guild messages and DMs, plus the privileged Message Content intent
(TOMO_DISCORD__MESSAGE_CONTENT_INTENT, on by default; switch it on for the bot in the
Developer Portal too). Without it Discord sends the words of guild messages only when
they mention the bot or reply to it: tomo still answers those, and DMs, but remembers
nothing else said in guilds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any, Protocol

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.answering import Answering
from bots.delivery import Delivery, apology, note
from bots.discord.logs import mask_token
from bots.discord.media import MAX_DOWNLOAD_BYTES, fetch
from bots.discord.send import (
    TRANSIENT,
    DiscordSender,
    RetryPolicy,
    typing,
    with_retries,
)
from bots.discord.slash import ForgetButton, Interaction, SlashCommands
from bots.discord.translate import BotIdentity, Incoming, read_message
from bots.downloads import fetch_all
from bots.settings import DiscordSettings
from brain.errors import ConfigError, TomoError
from brain.messages import Inbound, PersonRef, Reply, Segment
from brain.mind import ChatLocks
from brain.ports import BlobStore

log = logging.getLogger(__name__)

BAD_TOKEN = "Discord refused the bot token: check TOMO_DISCORD__TOKEN."
NO_CONTENT_INTENT = (
    "Discord refused the Message Content intent: switch it on for the bot in the Developer "
    "Portal (Bot > Privileged Gateway Intents > Message Content Intent), or set "
    "TOMO_DISCORD__MESSAGE_CONTENT_INTENT=false (then tomo remembers only what is said to it "
    "in guilds)."
)


class Thinker(Protocol):
    """What the adapter needs of the brain (brain.mind.Brain is one)."""

    async def handle(self, inbound: Inbound) -> list[Reply]: ...


class EditSink(Protocol):
    """Takes an edited message (same id, new text) to update what was stored."""

    async def edit(self, inbound: Inbound) -> None: ...


# tomo never joins voice channels (voice messages are files): no PyNaCl/davey warning.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False


def intents_for(settings: DiscordSettings) -> discord.Intents:
    intents = discord.Intents.none()
    intents.guilds = True  # guilds, channels and roles: who a mention names
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = settings.message_content_intent
    return intents


class _Client(discord.Client):
    """discord.py's client, its events handed to the adapter."""

    def __init__(self, adapter: DiscordAdapter, **options: Any) -> None:
        super().__init__(**options)
        self.adapter = adapter

    async def setup_hook(self) -> None:
        await self.adapter._setup()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # Discord allows one IDENTIFY per 5 s per bot: a new session waits that long.
        if not initial:
            await asyncio.sleep(self.adapter.reidentify_delay_s)

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.process(message)

    async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
        if before.content != after.content:
            await self.adapter.process_edit(after)

    async def confirm_forget(self, interaction: Interaction, target: str) -> None:
        await self.adapter.slash.confirm_forget(interaction, target)


class DiscordAdapter(Answering[Incoming]):
    platform = "Discord"

    def __init__(
        self,
        settings: DiscordSettings,
        *,
        brain: Thinker,
        blobs: BlobStore,
        edits: EditSink | None = None,
        retry: RetryPolicy | None = None,
        typing_every_s: float = 8.0,
        guild_ready_timeout_s: float = 2.0,
        answer_within_s: float = 2.0,
        reidentify_delay_s: float = 5.0,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> None:
        token = settings.token.get_secret_value().strip() if settings.token else ""
        if not token:
            raise ConfigError(
                "TOMO_DISCORD__TOKEN is empty: set the bot token from the Developer Portal."
            )
        self.settings = settings
        self.brain = brain
        self.blobs = blobs
        self.edits = edits
        self.retry = retry or RetryPolicy()
        self.typing_every_s = typing_every_s
        self.reidentify_delay_s = reidentify_delay_s
        self.max_download_bytes = min(max_download_bytes, MAX_DOWNLOAD_BYTES)
        self._token = token
        self._masked = mask_token(token)
        self.client = _Client(
            self,
            intents=intents_for(settings),
            allowed_mentions=discord.AllowedMentions.none(),
            chunk_guilds_at_startup=False,
            guild_ready_timeout=guild_ready_timeout_s,
            max_messages=1000,
        )
        self.slash = SlashCommands(
            brain=brain,
            blobs=blobs,
            retry=self.retry,
            answer_within_s=answer_within_s,
            track=self.handling,
        )
        self.tree = self.slash.tree(self.client)
        self.sender = DiscordSender(self.client, blobs=blobs, policy=self.retry)
        self.me: BotIdentity | None = None
        self.ready = asyncio.Event()
        self._lanes = ChatLocks()
        self._handling: set[asyncio.Task[Any]] = set()  # event handlers under way
        self.close_grace_s = 5.0
        self._ready_watch: asyncio.Task[None] | None = None
        self._saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)

    # lifecycle ------------------------------------------------------------------------

    async def start(self) -> BotIdentity:
        """Point discord.py at the configured Discord, check the token (logging in) and
        sync the slash commands."""
        if self.me is not None:
            return self.me
        Route.BASE = self.settings.api_base.rstrip("/")
        if self.settings.gateway_url:
            DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.settings.gateway_url)
        startup = RetryPolicy(attempts=4, first_delay_s=self.retry.first_delay_s)

        async def login() -> None:
            try:
                await self.client.login(self._token)
            except (discord.HTTPException, *TRANSIENT):
                # Each login opens a new HTTP session (and, unset, a new connector).
                await self.client.http.close()
                self.client.http.connector = discord.utils.MISSING
                raise

        try:
            await with_retries(login, policy=startup, what="log in")
        except discord.LoginFailure:
            raise ConfigError(BAD_TOKEN) from None
        except (discord.HTTPException, *TRANSIENT) as exc:
            raise ConfigError(
                f"Cannot reach the Discord API at {self.settings.api_base} "
                f"({type(exc).__name__}): check TOMO_DISCORD__API_BASE and the network."
            ) from None
        user = self.client.user
        assert user is not None  # set by login
        self.me = BotIdentity(id=user.id, name=user.display_name)
        log.info("Discord bot %s logged in", user)
        return self.me

    async def _setup(self) -> None:
        """After login, before the gateway: find the gateway, register the buttons,
        publish the slash commands."""
        self.client.add_dynamic_items(ForgetButton)
        # (No on_ready handler: discord.py may dispatch "ready" late, after a close.)
        self._ready_watch = asyncio.create_task(self._watch_ready())
        if not self.settings.gateway_url:
            try:
                _, url, _ = await self.client.http.get_bot_gateway()
                DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
            except (discord.GatewayNotFound, *TRANSIENT) as exc:
                log.warning("GET /gateway/bot failed (%s); using the default", type(exc).__name__)
        try:
            if self.settings.guild_ids:  # guild commands show up at once
                for guild_id in self.settings.guild_ids:
                    guild = discord.Object(id=guild_id)
                    self.tree.copy_global_to(guild=guild)
                    await self.tree.sync(guild=guild)
            else:  # global commands: everywhere (Discord may take a while to show them)
                await self.tree.sync()
        except (discord.HTTPException, *TRANSIENT) as exc:  # commands are a convenience
            log.warning("could not sync the Discord slash commands: %s", exc)

    @property
    def connected(self) -> bool:
        """Whether the gateway connection is up (ready, and its socket open now)."""
        ws = self.client.ws
        return self.ready.is_set() and not self.client.is_closed() and ws is not None and ws.open

    async def _watch_ready(self) -> None:
        await self.client.wait_until_ready()
        self.ready.set()
        log.info("Discord bot %s is connected", self.client.user)

    async def run(self) -> None:
        """Start and handle events until cancelled; then close."""
        try:
            await self.start()
            try:
                await self.client.connect(reconnect=True)
            except discord.PrivilegedIntentsRequired:
                raise ConfigError(NO_CONTENT_INTENT) from None
            except discord.ConnectionClosed as exc:
                if exc.code == 4004:
                    raise ConfigError(BAD_TOKEN) from None
                raise ConfigError(
                    f"Discord closed the gateway connection ({exc.code}: {exc.reason}) and "
                    "it cannot be resumed."
                ) from None
        finally:
            await self.close()

    async def close(self) -> None:
        """Let the messages under way be answered (for `close_grace_s` at most), then
        close the gateway and the HTTP session."""
        try:
            pending = {t for t in self._handling if not t.done()}
            if pending:
                _, late = await asyncio.wait(pending, timeout=self.close_grace_s)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            if self._ready_watch is not None:
                self._ready_watch.cancel()
            if not self.client.is_closed():
                await self.client.close()
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved
            self._masked.remove()

    # handling -------------------------------------------------------------------------

    @contextlib.contextmanager
    def handling(self) -> Iterator[None]:
        """Marks the current task as an event handler under way (awaited by close)."""
        task = asyncio.current_task()
        if task is not None:
            self._handling.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._handling.discard(task)

    async def process(self, message: discord.Message) -> None:
        """Handle one message. Never raises: the brain's own errors (TomoError) are
        answered in the channel, anything else is logged."""
        with self.handling():
            await self._process_message(message)

    async def _process_message(self, message: discord.Message) -> None:
        try:
            me = self.me
            if me is None:
                return
            incoming = read_message(message, me=me)
            if incoming is None:
                return
            # Taken before any await: the channel's messages are handled in order.
            async with self._lanes.hold(incoming.chat):
                await self.answer(incoming)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not handle Discord message %s", message.id)

    async def _on_private(self, inbound: Inbound, outcome: Delivery) -> None:
        if outcome is Delivery.SENT_PRIVATELY:
            await self._say(inbound, "I've answered you in a DM.")
        else:
            await self._say(
                inbound,
                "I'd answer you privately, but Discord won't let me DM you (your DMs "
                "may be closed to this server). Use the /memory slash command instead: "
                "only you will see its answers.",
            )

    async def process_edit(self, message: discord.Message) -> None:
        with self.handling():
            await self._process_edit(message)

    async def _process_edit(self, message: discord.Message) -> None:
        try:
            if self.edits is None or self.me is None:
                return
            incoming = read_message(message, me=self.me)
            if incoming is None:
                return
            when = message.edited_at or message.created_at
            async with self._lanes.hold(incoming.chat):
                await self.edits.edit(dataclasses.replace(incoming, sent_at=when).inbound())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not apply the edit of Discord message %s", message.id)

    async def _fetch_media(self, incoming: Incoming) -> tuple[list[Segment], str | None]:
        get = partial(fetch, blobs=self.blobs, max_bytes=self.max_download_bytes)
        return await fetch_all(incoming.media, get)

    async def _think(self, inbound: Inbound) -> list[Reply]:
        try:
            if not inbound.to_bot:
                return await self.brain.handle(inbound)
            channel_id = int(inbound.chat.chat_id)
            async with typing(self.client, channel_id, every_s=self.typing_every_s):
                return await self.brain.handle(inbound)
        except TomoError as exc:
            log.warning("the brain could not answer a Discord message: %s", exc)
            return apology(inbound, exc)

    async def _say(self, inbound: Inbound, text: str) -> None:
        await self.sender.deliver(note(inbound, text))

    # sending --------------------------------------------------------------------------

    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery:
        """Send one Reply (the brain's, or any other outbound work)."""
        return await self.sender.deliver(reply, asker=asker)


__all__ = ["BAD_TOKEN", "NO_CONTENT_INTENT", "DiscordAdapter", "intents_for"]
