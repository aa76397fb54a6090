"""QQAdapter: QQ over OneBot v11 (NapCat): message events in, the brain's replies out.

Messages are handled as they come, chats side by side and each chat's messages in order;
the connection keeps reading while the brain thinks (the answers to actions come on the
same socket). A message that arrives while tomo is disconnected is not redelivered by a
forward-WebSocket server: that is OneBot's design, not something a client can change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from functools import partial
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import aiohttp

from bots.answering import Answering
from bots.delivery import Delivery, apology, note
from bots.downloads import fetch_all
from bots.qq.logs import TokensMasked
from bots.qq.media import MAX_DOWNLOAD_BYTES, fetch
from bots.qq.onebot import JSON, ConnectPolicy, OneBotClient, OneBotError
from bots.qq.send import QQSender, RetryPolicy
from bots.qq.translate import Incoming, OwnMessages, read_event
from bots.settings import QQSettings
from brain.errors import ConfigError, TomoError
from brain.messages import Inbound, PersonRef, Reply, Segment
from brain.ports import BlobStore

log = logging.getLogger(__name__)

PRIVATE_NOTE = "I've answered you in our private chat."
PRIVATE_REFUSED_NOTE = (
    "I'd answer you privately, but QQ won't let me message you: add me as a friend, then ask again."
)


class Thinker(Protocol):
    """What the adapter needs of the brain (brain.mind.Brain is one)."""

    async def handle(self, inbound: Inbound) -> list[Reply]: ...


class QQAdapter(Answering[Incoming]):
    platform = "QQ"

    def __init__(
        self,
        settings: QQSettings,
        *,
        brain: Thinker,
        blobs: BlobStore,
        retry: RetryPolicy | None = None,
        connect: ConnectPolicy | None = None,
        max_download_bytes: int = MAX_DOWNLOAD_BYTES,
    ) -> None:
        url = (settings.onebot_url or "").strip()
        if not url:
            raise ConfigError(
                "TOMO_QQ__ONEBOT_URL is empty: set it to NapCat's forward WebSocket server, "
                "e.g. ws://127.0.0.1:3001."
            )
        token = settings.access_token.get_secret_value().strip() if settings.access_token else ""
        self.settings = settings
        self.brain = brain
        self.blobs = blobs
        self.max_download_bytes = min(max_download_bytes, MAX_DOWNLOAD_BYTES)
        self.client = OneBotClient(
            url,
            token=token or None,
            on_event=self._on_event,
            policy=connect
            or ConnectPolicy(
                first_delay_s=settings.reconnect_delay_s,
                max_delay_s=settings.reconnect_max_delay_s,
                action_timeout_s=settings.action_timeout_s,
                offline_wait_s=settings.offline_wait_s,
            ),
            self_id=settings.self_id,
        )
        in_url = parse_qs(urlsplit(url).query).get("access_token", [])
        self._redaction: TokensMasked | None = TokensMasked(token, *in_url)
        self.own = OwnMessages()
        self.sender = QQSender(self.client, blobs=blobs, own=self.own, policy=retry)
        self._http: aiohttp.ClientSession | None = None
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # lifecycle ------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the OneBot connection is up now."""
        return self.client.connected

    async def run(self) -> None:
        """Connect and handle messages until cancelled (reconnecting as needed); then
        close. A refused token or a server never reached is a ConfigError."""
        try:
            async with aiohttp.ClientSession() as http:
                self._http = http
                await self.client.run()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop the handlers still running, and take the log filter off."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._http = None
        if self._redaction is not None:
            self._redaction.remove()
            self._redaction = None

    # receiving ------------------------------------------------------------------------

    def _on_event(self, event: JSON) -> None:
        """Called by the connection for each event; the handling runs in its own task,
        after the chat's earlier messages."""
        post_type = event.get("post_type")
        if post_type == "message_sent" and event.get("message_id") is not None:
            self.own.add(event["message_id"])  # NapCat reports the bot's own messages
            return
        if post_type != "message":
            return
        lane = f"{event.get('message_type')}:{event.get('group_id') or event.get('user_id')}"
        task = asyncio.create_task(self._in_lane(self._lanes.get(lane), event))
        self._lanes[lane] = task
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._lanes.get(lane) is finished:
                del self._lanes[lane]

        task.add_done_callback(done)

    async def _in_lane(self, before: asyncio.Task[None] | None, event: JSON) -> None:
        if before is not None:
            await asyncio.wait([before])
        await self.process(event)

    async def process(self, event: JSON) -> None:
        """Handle one message event. Never raises: the brain's own errors (TomoError) are
        answered in the chat, anything else is logged."""
        try:
            await self._process(event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("QQ: could not handle message %s", event.get("message_id"))

    async def _process(self, event: JSON) -> None:
        self_id = await self.client.identified()
        incoming = read_event(event, self_id=self_id, own=self.own)
        if incoming is None:
            return
        if not incoming.to_bot and incoming.reply_to and await self._is_mine(incoming.reply_to):
            incoming = dataclasses.replace(incoming, to_bot=True)
        await self.answer(incoming)

    async def _on_private(self, inbound: Inbound, outcome: Delivery) -> None:
        private = outcome is Delivery.SENT_PRIVATELY
        await self._say(inbound, PRIVATE_NOTE if private else PRIVATE_REFUSED_NOTE)

    async def _is_mine(self, message_id: str) -> bool:
        """Whether a message this bot no longer remembers sending (it restarted) was its
        own: asked of the server (get_msg)."""
        self_id = self.client.self_id
        try:
            data = await self.client.call(
                "get_msg",
                {"message_id": int(message_id) if message_id.lstrip("-").isdigit() else message_id},
                timeout_s=5.0,
            )
        except OneBotError:
            return False
        if not isinstance(data, dict):
            return False
        sender = data.get("sender")
        author = data.get("user_id")
        if author is None and isinstance(sender, dict):
            author = sender.get("user_id")
        mine = author is not None and str(author) == str(self_id)
        if mine:
            self.own.add(message_id)
        return mine

    async def _fetch_media(self, incoming: Incoming) -> tuple[list[Segment], str | None]:
        http = self._http
        if http is None:  # not running: nothing can be fetched
            return [], "the connection is closed" if incoming.media else None
        get = partial(
            fetch,
            client=self.client,
            http=http,
            blobs=self.blobs,
            max_bytes=self.max_download_bytes,
        )
        return await fetch_all(incoming.media, get)

    async def _think(self, inbound: Inbound) -> list[Reply]:
        try:
            return await self.brain.handle(inbound)
        except TomoError as exc:
            log.warning("QQ: the brain could not answer a message: %s", exc)
            return apology(inbound, exc)

    async def _say(self, inbound: Inbound, text: str) -> None:
        await self.sender.deliver(note(inbound, text), asker=inbound.author)

    # sending --------------------------------------------------------------------------

    async def deliver(self, reply: Reply, *, asker: PersonRef | None = None) -> Delivery:
        """Send one Reply (the brain's, or any other outbound work)."""
        return await self.sender.deliver(reply, asker=asker)
