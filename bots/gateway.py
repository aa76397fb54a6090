"""The gateway process: the platform adapters with the brain on other processes.

`RemoteBrain` is the brain the adapters of `tomo gateway` talk to: each message goes to
the inbound stream as a Request, and the worker's Answer comes back on this gateway's
reply stream, read by one background task that hands it to the waiting message. An
answer that comes after its message stopped waiting (the timeout) is still sent,
through the adapter of its platform; one that comes twice (a worker died after sending
it, and another answered the message again) is sent once.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from bots.app import (
    build_blobs,
    build_bus,
    discord_adapter,
    hold_data_dir,
    qq_adapter,
    telegram_adapter,
)
from bots.health import Platform, platforms_ready, serving
from bots.metrics import PrometheusTelemetry
from bots.runner import check_platforms_built, stop_on_signals
from bots.scale import GATEWAY_GROUP, INBOUND_STREAM, Answer, Request, reply_stream, require_redis
from bots.settings import Settings
from brain.errors import ConfigError, StorageError, TomoError
from brain.messages import Inbound, Reply
from brain.ports import Bus, Delivery
from storage.bus import deliveries

log = logging.getLogger(__name__)

# An adapter's `deliver(reply, asker=...)`.
LateSink = Callable[..., Awaitable[Any]]


class NoAnswerError(TomoError):
    """No worker answered a message in time."""


class RemoteBrain:
    """A Thinker (and EditSink) whose brain runs in `tomo worker` processes."""

    def __init__(
        self,
        bus: Bus,
        *,
        gateway_id: str,
        timeout_s: float = 120.0,
        claim_idle_ms: int = 30_000,
        remember: int = 10_000,
    ) -> None:
        self.bus = bus
        self.gateway_id = gateway_id
        self.stream = reply_stream(gateway_id)
        self.timeout_s = timeout_s
        self.claim_idle_ms = claim_idle_ms
        self._remember = remember
        self._waiting: dict[str, asyncio.Future[Answer]] = {}
        self._answered: OrderedDict[str, None] = OrderedDict()  # request ids, oldest first
        self._late: dict[str, LateSink] = {}
        self._reader: asyncio.Task[None] | None = None

    def send_late_with(self, platform: str, deliver: LateSink) -> None:
        """Where answers that come after their message stopped waiting are sent."""
        self._late[platform] = deliver

    def start(self) -> None:
        """Start reading this gateway's reply stream (done by the first message too)."""
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read(), name=f"replies {self.gateway_id}")

    async def aclose(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def handle(self, inbound: Inbound) -> list[Reply]:
        answer = await self._ask("handle", inbound)
        return list(answer.replies)

    async def edit(self, inbound: Inbound) -> None:
        await self._ask("edit", inbound)

    async def _ask(self, kind: str, inbound: Inbound) -> Answer:
        self.start()
        request = Request(
            id=uuid.uuid4().hex,
            reply_stream=self.stream,
            kind="edit" if kind == "edit" else "handle",
            inbound=inbound,
        )
        waiter: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = waiter
        try:
            await self.bus.publish(INBOUND_STREAM, request.model_dump_json().encode())
            async with asyncio.timeout(self.timeout_s):
                answer = await waiter
        except TimeoutError:
            log.warning(
                "no worker answered in time", extra={"chat": inbound.chat.key, "id": request.id}
            )
            raise NoAnswerError(
                f"I could not think of an answer within {self.timeout_s:g} seconds; "
                "it will follow if it comes."
            ) from None
        finally:
            self._waiting.pop(request.id, None)
        if answer.error is not None:
            raise TomoError(answer.error)
        return answer

    async def _read(self) -> None:
        async for delivery in deliveries(
            self.bus,
            self.stream,
            group=GATEWAY_GROUP,
            consumer=self.gateway_id,
            count=64,
            claim_idle_ms=self.claim_idle_ms,
        ):
            try:
                await self._take(delivery)
            except Exception:  # one answer must not stop the reading of the others
                log.exception("an answer from a worker could not be handled")
            try:
                await self.bus.ack(self.stream, delivery.entry_id, group=GATEWAY_GROUP)
            except StorageError as exc:
                log.warning("could not acknowledge an answer: %s", exc)

    async def _take(self, delivery: Delivery) -> None:
        try:
            answer = Answer.model_validate_json(delivery.payload)
        except ValidationError as exc:
            log.error("dropped an unreadable answer %s: %s", delivery.entry_id, exc)
            return
        if answer.id in self._answered:
            log.info("dropped a second answer to one message", extra={"id": answer.id})
            return
        self._answered[answer.id] = None
        while len(self._answered) > self._remember:
            self._answered.popitem(last=False)
        waiter = self._waiting.get(answer.id)
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)
            return
        await self._send_late(answer)

    async def _send_late(self, answer: Answer) -> None:
        if answer.error is not None:
            log.warning("a late answer was an error: %s", answer.error)
        for reply in answer.replies:
            deliver = self._late.get(reply.chat.platform)
            if deliver is None:
                log.warning("dropped a late reply for %s (no adapter)", reply.chat.platform)
                continue
            try:
                await deliver(reply, asker=answer.asker)
            except TomoError as exc:
                log.warning("a late reply could not be sent: %s", exc)


async def run_gateway(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run every configured platform, with the brain in `tomo worker` processes, until
    `stop` is set, Ctrl-C or SIGTERM."""
    require_redis(settings.redis_url, "gateway")
    platforms = settings.configured_platforms()
    if not platforms:
        raise ConfigError(
            "`tomo gateway` runs the platforms, and none is configured: set "
            "TOMO_TELEGRAM__TOKEN, TOMO_DISCORD__TOKEN or TOMO_QQ__ONEBOT_URL."
        )
    check_platforms_built(settings)
    stop = stop or asyncio.Event()
    with hold_data_dir(settings.data_dir), stop_on_signals(stop):
        bus = build_bus(settings)
        blobs = build_blobs(settings)
        scale = settings.scale
        remote = RemoteBrain(
            bus,
            gateway_id=scale.gateway_id,
            timeout_s=scale.reply_timeout_s,
            claim_idle_ms=scale.claim_idle_ms,
        )
        log.info("gateway %s: replies on %s", scale.gateway_id, remote.stream)
        running: dict[str, tuple[asyncio.Task[None], Platform]] = {}
        stopping = asyncio.ensure_future(stop.wait())
        checks = {
            "redis": lambda: bus.length(INBOUND_STREAM),
            "platforms": platforms_ready(running),
        }
        http = settings.http
        try:
            # The brain's metrics are the workers'; a gateway serves its process's.
            metrics = PrometheusTelemetry()
            async with serving(
                http.listen, http.port, checks, draining=stop.is_set, metrics=metrics
            ):
                remote.start()
                if settings.telegram.token is not None:
                    telegram = telegram_adapter(settings, brain=remote, blobs=blobs, edits=remote)
                    remote.send_late_with("telegram", telegram.deliver)
                    running["telegram"] = (
                        asyncio.create_task(telegram.run(), name="telegram"),
                        telegram,
                    )
                if settings.qq.onebot_url:
                    qq = qq_adapter(settings, brain=remote, blobs=blobs)
                    remote.send_late_with("qq", qq.deliver)
                    running["qq"] = (asyncio.create_task(qq.run(), name="qq"), qq)
                if settings.discord.token is not None:
                    discord = discord_adapter(settings, brain=remote, blobs=blobs, edits=remote)
                    remote.send_late_with("discord", discord.deliver)
                    running["discord"] = (
                        asyncio.create_task(discord.run(), name="discord"),
                        discord,
                    )
                adapters = [task for task, _ in running.values()]
                await asyncio.wait([stopping, *adapters], return_when=asyncio.FIRST_COMPLETED)
                for task in adapters:
                    if task.done():
                        task.result()  # an adapter that gave up: its error (e.g. a bad token)
        finally:
            background: list[asyncio.Future[Any]] = [
                *(task for task, _ in running.values()),
                stopping,
            ]
            for future in background:
                future.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await remote.aclose()
            await bus.aclose()
