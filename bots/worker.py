"""The worker process: the brain, fed by the gateways over the bus.

A `Worker` reads Requests from the inbound stream in the `workers` group (entries a
dead worker left pending for `claim_idle_ms` first, then new ones), a few at once. For
each it holds the chat's lock on the bus (a chat's messages never run at once, on any
worker), asks the brain, sends the Answer to the gateway's reply stream and only then
acknowledges the entry: a worker killed mid-message loses nothing, another one takes
the message over. The brain de-duplicates by platform message id, so a message answered
twice is stored once; when the dead worker had already stored its answer, that stored
answer is sent (the gateway drops a second copy of one answer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from pydantic import ValidationError

from bots.app import build_app, build_bus
from bots.health import serving
from bots.runner import consolidate_when_idle, stop_on_signals
from bots.scale import INBOUND_STREAM, WORKER_GROUP, Answer, Request, require_redis
from bots.settings import Settings
from brain.commands import parse_command
from brain.errors import ConfigError, StorageError, TomoError
from brain.messages import Inbound, Reply
from brain.ports import Bus, Delivery, MemoryStore

log = logging.getLogger(__name__)

# What a redelivered message that the brain says was answered already is answered with.
Replay = Callable[[Inbound], Awaitable[list[Reply]]]


class Handler(Protocol):
    """What a worker needs of the brain (brain.mind.Brain is one)."""

    async def handle(self, inbound: Inbound) -> list[Reply]: ...

    async def edit(self, inbound: Inbound) -> None: ...


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    concurrency: int = 4  # entries in hand at once (of different chats, or waiting)
    claim_idle_ms: int = 30_000  # an entry pending this long with a dead worker is taken
    lock_ttl_ms: int = 30_000  # a dead worker's chat lock lapses after this
    block_ms: int = 1_000  # how long one read waits (and how soon a stop is noticed)
    max_deliveries: int = 5  # a message that failed on storage this often is given up
    # Consumer names (one per worker process) idle this long with nothing pending are
    # forgotten when a worker starts: the group does not grow with every restart.
    forget_consumers_after_ms: int = 3_600_000


def stored_answer(store: MemoryStore) -> Replay:
    """The answer stored for a message (a worker died after storing it, before sending)."""

    async def replay(inbound: Inbound) -> list[Reply]:
        if not inbound.to_bot or inbound.is_blank or parse_command(inbound.text) is not None:
            return []
        recent = await store.recent_messages(inbound.chat, limit=200, since=inbound.sent_at)
        mine = next(
            (m for m in recent if m.role == "user" and m.platform_message_id == inbound.id), None
        )
        answer = await store.answer_to(mine.id) if mine is not None else None
        if answer is None:
            return []
        return [Reply(chat=inbound.chat, segments=answer.segments, reply_to=inbound.id)]

    return replay


class Worker:
    """Takes Requests off the inbound stream and answers them with `brain`."""

    def __init__(
        self,
        bus: Bus,
        brain: Handler,
        *,
        consumer: str,
        config: WorkerConfig | None = None,
        replay: Replay | None = None,
    ) -> None:
        self.bus = bus
        self.brain = brain
        self.consumer = consumer
        self.config = config or WorkerConfig()
        self.replay = replay
        self.handled = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; then take nothing new, finish (and acknowledge) the
        entries in hand, and return."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        in_hand: set[asyncio.Task[None]] = set()
        stopping = asyncio.ensure_future(stop.wait())
        next_claim = 0.0
        backoff = 0.05
        await self._forget_dead_consumers()
        try:
            while not stop.is_set():
                free = cfg.concurrency - len(in_hand)
                if free <= 0:
                    await asyncio.wait([stopping, *in_hand], return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    batch: list[Delivery] = []
                    if loop.time() >= next_claim:
                        next_claim = loop.time() + cfg.claim_idle_ms / 2000
                        batch = await self.bus.claim_stale(
                            INBOUND_STREAM,
                            group=WORKER_GROUP,
                            consumer=self.consumer,
                            min_idle_ms=cfg.claim_idle_ms,
                            count=free,
                        )
                        if batch:
                            log.info("%s took over %d messages", self.consumer, len(batch))
                    if not batch:
                        batch = await self.bus.consume(
                            INBOUND_STREAM,
                            group=WORKER_GROUP,
                            consumer=self.consumer,
                            count=free,
                            block_ms=cfg.block_ms,
                        )
                except StorageError as exc:
                    log.warning("the bus is unavailable (%s); retrying in %.2f s", exc, backoff)
                    await asyncio.wait([stopping], timeout=backoff)
                    backoff = min(backoff * 2, 5.0)
                    next_claim = 0.0
                    continue
                backoff = 0.05
                for delivery in batch:
                    task = asyncio.create_task(self.process(delivery))
                    in_hand.add(task)
                    task.add_done_callback(in_hand.discard)
        finally:
            stopping.cancel()
            if in_hand:
                log.info("%s: finishing %d messages in hand", self.consumer, len(in_hand))
                await asyncio.gather(*in_hand, return_exceptions=True)

    async def _forget_dead_consumers(self) -> None:
        try:
            gone = await self.bus.prune_consumers(
                INBOUND_STREAM, group=WORKER_GROUP, idle_ms=self.config.forget_consumers_after_ms
            )
        except StorageError as exc:
            log.warning("could not tidy the workers' group: %s", exc)
            return
        if gone:
            log.info("forgot %d workers long gone: %s", len(gone), ", ".join(gone))

    async def process(self, delivery: Delivery) -> None:
        """Answer one entry and acknowledge it (left pending when storage failed, to be
        taken over later; a payload that is not a Request is acknowledged and logged)."""
        try:
            request = Request.model_validate_json(delivery.payload)
        except ValidationError as exc:
            log.error(
                "dropped an unreadable message %s: %s",
                delivery.entry_id,
                str(exc).splitlines()[0],
            )
            await self._ack(delivery)
            return
        chat = request.inbound.chat.key
        try:
            async with self.bus.lock(f"chat:{chat}", ttl_ms=self.config.lock_ttl_ms):
                answer = await self._answer(request, delivery)
                if answer is None:
                    return  # left pending: another try after claim_idle_ms
                await self.bus.publish(request.reply_stream, answer.model_dump_json().encode())
        except StorageError as exc:
            log.warning("message %s left for another try: %s", delivery.entry_id, exc)
            return
        self.handled += 1
        await self._ack(delivery)

    async def _answer(self, request: Request, delivery: Delivery) -> Answer | None:
        inbound = request.inbound
        try:
            if request.kind == "edit":
                await self.brain.edit(inbound)
                return Answer(id=request.id, asker=inbound.author)
            replies = await self.brain.handle(inbound)
            if not replies and delivery.deliveries > 1 and self.replay is not None:
                replies = await self.replay(inbound)
            return Answer(id=request.id, replies=tuple(replies), asker=inbound.author)
        except StorageError as exc:
            if delivery.deliveries < self.config.max_deliveries:
                log.warning("storage failed on message %s: %s", delivery.entry_id, exc)
                return None
            return Answer(id=request.id, asker=inbound.author, error=str(exc))
        except TomoError as exc:
            log.warning("the brain could not answer message %s: %s", delivery.entry_id, exc)
            return Answer(id=request.id, asker=inbound.author, error=str(exc))
        except Exception:
            log.exception("the brain failed on message %s", delivery.entry_id)
            return Answer(id=request.id, asker=inbound.author, error="an unexpected error")

    async def _ack(self, delivery: Delivery) -> None:
        try:
            await self.bus.ack(INBOUND_STREAM, delivery.entry_id, group=WORKER_GROUP)
        except StorageError as exc:  # redelivered later; the brain de-duplicates it
            log.warning("could not acknowledge message %s: %s", delivery.entry_id, exc)


def worker_name() -> str:
    """This process's consumer name: host and process id."""
    return f"{socket.gethostname() or 'worker'}-{os.getpid()}"


async def in_one_worker(
    bus: Bus, job: Callable[[], Awaitable[None]], *, name: str, every_s: float = 60.0
) -> None:
    """Run `job` (which runs forever: idle consolidation) in one worker at a time: the
    one holding the bus lock `jobs:<name>`; the others try again every `every_s`, and
    one of them takes over within about `every_s` + 30 s of the holder's death."""
    while True:
        try:
            async with bus.lock(f"jobs:{name}", ttl_ms=30_000, wait_ms=0):
                log.info("this worker runs %s", name)
                await job()
        except TimeoutError:
            pass  # another worker runs it
        except StorageError as exc:
            log.warning("the lock of %s is unavailable: %s", name, exc)
        await asyncio.sleep(every_s)


async def run_worker(
    settings: Settings, *, concurrency: int | None = None, stop: asyncio.Event | None = None
) -> None:
    """Answer the gateways' messages until `stop` is set, Ctrl-C or SIGTERM; then finish
    the messages in hand."""
    require_redis(settings.redis_url, "worker")
    stop = stop or asyncio.Event()
    scale = settings.scale
    config = WorkerConfig(
        concurrency=concurrency or scale.concurrency,
        claim_idle_ms=scale.claim_idle_ms,
        lock_ttl_ms=scale.lock_ttl_ms,
    )
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)  # blobs (shared with gateways)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the data folder {settings.data_dir} ({exc.strerror}): set "
            "TOMO_DATA_DIR."
        ) from None
    if settings.effective_database_url.startswith("sqlite"):
        log.warning(
            "workers share a SQLite file: fine on one host; for several, set "
            "TOMO_DATABASE_URL to Postgres"
        )
    with stop_on_signals(stop):
        app = await build_app(settings)
        bus = build_bus(settings)
        warm = asyncio.ensure_future(app.warm())
        worker = Worker(
            bus, app.brain, consumer=worker_name(), config=config, replay=stored_answer(app.store)
        )
        idle = asyncio.ensure_future(
            in_one_worker(bus, lambda: consolidate_when_idle(app.consolidator), name="consolidate")
        )
        log.info("worker %s: %d at once", worker.consumer, config.concurrency)
        checks = {"redis": lambda: bus.length(INBOUND_STREAM), "database": app.store.db.ping}
        http = settings.http
        try:
            async with serving(
                http.listen, http.port, checks, draining=stop.is_set, metrics=app.telemetry
            ):
                await worker.run(stop)
        finally:
            idle.cancel()
            await asyncio.gather(idle, return_exceptions=True)
            if not warm.done():
                warm.cancel()
                await asyncio.gather(warm, return_exceptions=True)
            else:
                warm.exception()  # a model that failed to load shows in replies
            await bus.aclose()
            await app.aclose()
            log.info("worker %s stopped after %d messages", worker.consumer, worker.handled)
