"""Gateway and worker processes: RemoteBrain and Worker on the in-process bus and on a
real redis-server, and `tomo worker` as real subprocesses on Redis + Postgres."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from bots.gateway import NoAnswerError, RemoteBrain, run_gateway
from bots.scale import INBOUND_STREAM, WORKER_GROUP, Answer, Request, reply_stream
from bots.settings import Settings
from bots.worker import Worker, WorkerConfig, stored_answer
from brain.clock import ManualClock
from brain.errors import ConfigError
from brain.llm.stub import StubModel
from brain.messages import ChatRef, Inbound, PersonRef, Reply
from brain.mind import Brain
from brain.persona.card import PersonaCard
from brain.ports import Bus
from storage.crypto import Encryption, load_master_key
from storage.migrate import upgrade
from storage.redis_bus import RedisBus
from storage.sql import SqlMemoryStore
from tests.conftest import DM, GROUP, T0, RedisServer, inbound
from tests.fakes.telegram_api import FakeTelegram

REPO = Path(__file__).resolve().parents[2]
PERSONA = PersonaCard(name="Tomo", self_description="A friend.")
FAST = WorkerConfig(concurrency=2, claim_idle_ms=200, lock_ttl_ms=2_000, block_ms=50)


def make_brain(store: SqlMemoryStore, *, delay_s: float = 0.0) -> Brain:
    return Brain(
        store=store,
        model=StubModel(delay_s=delay_s),
        persona=PERSONA,
        clock=ManualClock(T0 + timedelta(seconds=1)),
    )


@pytest.fixture
async def other_store(tmp_path: Path) -> AsyncIterator[SqlMemoryStore]:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    await asyncio.to_thread(upgrade, url)
    s = SqlMemoryStore(url)
    try:
        yield s
    finally:
        await s.aclose()


@dataclass
class Late:
    """A gateway adapter's `deliver`, recording what it was given."""

    sent: list[tuple[Reply, PersonRef | None]] = field(default_factory=list)

    async def __call__(self, reply: Reply, *, asker: PersonRef | None = None) -> None:
        self.sent.append((reply, asker))


async def running(
    worker: Worker, stop: asyncio.Event
) -> tuple[asyncio.Task[None], Callable[[], Awaitable[None]]]:
    task = asyncio.create_task(worker.run(stop))

    async def finish() -> None:
        stop.set()
        await asyncio.wait_for(task, 10)

    return task, finish


async def wait_until(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# (a) a message through gateway and worker is answered as the brain answers it -----------


async def test_remote_brain_answers_as_the_brain_itself(
    bus: Bus, sqlite_store: SqlMemoryStore, other_store: SqlMemoryStore
) -> None:
    direct = make_brain(other_store)
    worker = Worker(bus, make_brain(sqlite_store), consumer="w1", config=FAST)
    remote = RemoteBrain(bus, gateway_id="gw1", timeout_s=10)
    _, finish = await running(worker, asyncio.Event())
    try:
        for i, text in enumerate(["hello there", "/memory", "how are you?"]):
            msg = inbound(text, msg_id=f"m{i}", sent_at=T0 + timedelta(seconds=i))
            got = await remote.handle(msg)
            assert got == await direct.handle(msg)
            assert got, text
        overheard = inbound("not for you", msg_id="m9", to_bot=False)
        assert await remote.handle(overheard) == []
        await remote.edit(inbound("hello again", msg_id="m0"))
    finally:
        await finish()
        await remote.aclose()
    stored = await sqlite_store.recent_messages(DM, limit=10)
    assert next(m.text for m in stored if m.role == "user") == "hello again"
    assert await sqlite_store.count_messages(DM) == 5  # 2 asked + 2 answers + 1 overheard
    assert worker.handled == 5


async def test_a_late_answer_is_still_sent_through_the_adapter(
    bus: Bus, sqlite_store: SqlMemoryStore
) -> None:
    remote = RemoteBrain(bus, gateway_id="gw-late", timeout_s=0.3)
    late = Late()
    remote.send_late_with("telegram", late)
    msg = inbound("are you there?", msg_id="late1")
    try:
        with pytest.raises(NoAnswerError, match=r"within 0\.3 seconds"):
            await remote.handle(msg)  # no worker yet
        worker = Worker(bus, make_brain(sqlite_store), consumer="w1", config=FAST)
        _, finish = await running(worker, asyncio.Event())
        try:

            async def sent() -> bool:
                return bool(late.sent)

            await wait_until(sent, within=10, what="the late answer")
        finally:
            await finish()
    finally:
        await remote.aclose()
    [(reply, asker)] = late.sent
    assert reply.text == "You said: are you there?"
    assert asker == msg.author


# (b) a chat's messages never run at once; different chats do -----------------------------


@dataclass
class Recording:
    """A brain that records when each chat's messages were being handled."""

    brain: Brain
    spans: list[tuple[str, float, float]]

    async def handle(self, inbound: Inbound) -> list[Reply]:
        start = time.monotonic()
        try:
            return await self.brain.handle(inbound)
        finally:
            self.spans.append((inbound.chat.key, start, time.monotonic()))

    async def edit(self, inbound: Inbound) -> None:
        await self.brain.edit(inbound)


def overlaps(spans: list[tuple[str, float, float]], *, same_chat: bool) -> int:
    found = 0
    for i, (chat_a, start_a, end_a) in enumerate(spans):
        for chat_b, start_b, end_b in spans[i + 1 :]:
            if (chat_a == chat_b) == same_chat and start_a < end_b and start_b < end_a:
                found += 1
    return found


async def test_two_workers_never_handle_one_chat_at_once(
    redis_bus: Bus, sqlite_store: SqlMemoryStore
) -> None:
    spans: list[tuple[str, float, float]] = []
    config = WorkerConfig(concurrency=3, claim_idle_ms=5_000, lock_ttl_ms=5_000, block_ms=50)
    workers = [
        Worker(
            redis_bus,
            Recording(make_brain(sqlite_store, delay_s=0.3), spans),
            consumer=f"w{i}",
            config=config,
        )
        for i in (1, 2)
    ]
    remote = RemoteBrain(redis_bus, gateway_id="gw1", timeout_s=15)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        messages = [
            inbound(f"{chat.chat_id} message {i}", chat=chat, msg_id=f"{chat.chat_id}-{i}")
            for i in range(3)
            for chat in (DM, GROUP)
        ]
        started = time.monotonic()
        answers = await asyncio.gather(*(remote.handle(m) for m in messages))
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        await remote.aclose()
    assert [len(a) for a in answers] == [1] * 6
    assert len(spans) == 6
    assert overlaps(spans, same_chat=True) == 0
    assert overlaps(spans, same_chat=False) > 0
    assert elapsed < 6 * 0.3  # the two chats ran side by side
    assert sum(w.handled for w in workers) == 6


# a worker that died after storing its answer: the stored answer is sent, once ------------


async def test_a_redelivered_message_already_answered_is_answered_once(
    bus: Bus, sqlite_store: SqlMemoryStore
) -> None:
    brain = make_brain(sqlite_store)
    remote = RemoteBrain(bus, gateway_id="gw1", timeout_s=10)
    late = Late()
    remote.send_late_with("telegram", late)
    msg = inbound("remember me", msg_id="r1")
    asking = asyncio.create_task(remote.handle(msg))
    # A worker takes the message, stores its answer, and dies before sending it.
    taken: list[Request] = []

    async def take() -> bool:
        got = await bus.consume(INBOUND_STREAM, group=WORKER_GROUP, consumer="dead", count=1)
        taken.extend(Request.model_validate_json(d.payload) for d in got)
        return bool(got)

    await wait_until(take, within=5, what="the message on the bus")
    [first] = await brain.handle(taken[0].inbound)
    worker = Worker(bus, make_brain(sqlite_store), consumer="w2", config=FAST)
    worker.replay = stored_answer(sqlite_store)
    _, finish = await running(worker, asyncio.Event())
    try:
        assert await asyncio.wait_for(asking, 10) == [first]
        # The dead worker's answer turns up after all: it is not sent again.
        dup = Answer(id=taken[0].id, replies=(first,), asker=msg.author)
        await bus.publish(reply_stream("gw1"), dup.model_dump_json().encode())
        await bus.publish(reply_stream("gw1"), b"{broken")
        await asyncio.sleep(0.5)
    finally:
        await finish()
        await remote.aclose()
    assert late.sent == []
    assert await sqlite_store.count_messages(DM) == 2


# (d) a payload that is not a request is acknowledged and logged --------------------------


async def test_a_poison_message_is_acknowledged_and_logged(
    bus: Bus, sqlite_store: SqlMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="bots.worker")
    await bus.publish(INBOUND_STREAM, b"\xff not json")
    await bus.publish(INBOUND_STREAM, b'{"v": 1, "id": "x", "kind": "handle"}')
    worker = Worker(bus, make_brain(sqlite_store), consumer="w1", config=FAST)
    remote = RemoteBrain(bus, gateway_id="gw1", timeout_s=10)
    _, finish = await running(worker, asyncio.Event())
    try:
        assert len(await remote.handle(inbound("still there?"))) == 1
    finally:
        await finish()
        await remote.aclose()
    assert caplog.text.count("dropped an unreadable message") == 2
    # nothing is left pending to come back
    stale = await bus.claim_stale(INBOUND_STREAM, group=WORKER_GROUP, consumer="w9", min_idle_ms=0)
    assert stale == []


# (c) `tomo worker` killed mid-message: another takes it over; one reply, stored once ----


def worker_env(tmp_path: Path, *, redis_url: str, pg_url: str, delay_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update(
        PYTHONPATH=str(REPO),
        TOMO_DATA_DIR=str(tmp_path / "data"),
        TOMO_REDIS_URL=redis_url,
        TOMO_DATABASE_URL=pg_url,
        TOMO_LLM__BACKEND="stub",
        TOMO_LLM__STUB_DELAY_S=str(delay_s),
        TOMO_MEMORY__MODEL_RECALL="false",
        TOMO_EMBED__BACKEND="hash",
        TOMO_TTS__BACKEND="off",
        TOMO_STT__ENABLED="false",
        TOMO_STICKERS__ENABLED="false",
        TOMO_SCALE__CLAIM_IDLE_MS="1000",
        TOMO_SCALE__LOCK_TTL_MS="1500",
        TOMO_LOG_LEVEL="INFO",
    )
    return env


async def start_worker(env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots",
        "worker",
        "--concurrency",
        "2",
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.postgres
async def test_a_worker_killed_mid_message_loses_nothing(
    tmp_path: Path, redis_url: str, pg_url: str
) -> None:
    await asyncio.to_thread(upgrade, pg_url)
    # the workers' master key (made here first, in their data folder): they encrypt
    master = load_master_key(None, data_dir=tmp_path / "data")
    assert master is not None
    store = SqlMemoryStore(pg_url, encryption=Encryption(master_key=master))
    bus = RedisBus(redis_url)
    remote = RemoteBrain(bus, gateway_id="gw1", timeout_s=60)
    late = Late()
    remote.send_late_with("telegram", late)
    chat = ChatRef(platform="telegram", chat_id="777", kind="dm")
    msg = inbound("do not lose me", msg_id="k1", chat=chat)
    procs: list[asyncio.subprocess.Process] = []
    doomed = await start_worker(
        worker_env(tmp_path, redis_url=redis_url, pg_url=pg_url, delay_s=30), tmp_path
    )
    procs.append(doomed)
    try:
        asking = asyncio.create_task(remote.handle(msg))

        async def stored() -> bool:
            assert doomed.returncode is None, "the worker died by itself"
            return await store.count_messages(chat) == 1

        await wait_until(stored, within=40, what="the first worker to store the message")
        doomed.send_signal(signal.SIGKILL)  # mid-message: the slow model is thinking
        await doomed.wait()
        heir = await start_worker(
            worker_env(tmp_path, redis_url=redis_url, pg_url=pg_url, delay_s=0), tmp_path
        )
        procs.append(heir)
        replies = await asyncio.wait_for(asking, 60)
        assert [r.text for r in replies] == ["You said: do not lose me"]
        await asyncio.sleep(0.5)
        assert late.sent == []  # no second answer
        messages = await store.recent_messages(chat, limit=10)
        assert [(m.role, m.platform_message_id) for m in messages] == [
            ("user", "k1"),
            ("assistant", None),
        ]
        heir.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(heir.communicate(), 15)
        assert heir.returncode == 0, err.decode()[-2000:]
        assert "took over 1 messages" in err.decode()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await remote.aclose()
        await bus.aclose()
        await store.aclose()


# (e) `tomo worker` without Redis says what to do ------------------------------------------


async def test_tomo_worker_without_redis_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update(PYTHONPATH=str(REPO), TOMO_DATA_DIR=str(tmp_path / "data"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots",
        "worker",
        env=env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    text = err.decode()
    assert "TOMO_REDIS_URL" in text
    assert "`tomo run` is the embedded default" in text
    assert "Traceback" not in text


async def test_tomo_gateway_without_redis_says_so(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, telegram={"token": "123:abc"})
    with pytest.raises(ConfigError, match="TOMO_REDIS_URL"):
        await run_gateway(settings)
    with pytest.raises(ConfigError, match="none is configured"):
        await run_gateway(Settings(data_dir=tmp_path, redis_url="redis://127.0.0.1:1/0"))


# `tomo gateway`: the Telegram adapter with the brain in a worker -------------------------


async def test_the_gateway_serves_telegram_with_a_worker_brain(
    tmp_path: Path, redis_url: str, sqlite_store: SqlMemoryStore
) -> None:
    fake = FakeTelegram()
    await fake.start()
    settings = Settings(
        data_dir=tmp_path / "gateway",
        redis_url=redis_url,
        telegram={"token": fake.token, "api_base": fake.base, "poll_timeout": 1},
        scale={"gateway_id": "gw-telegram", "reply_timeout_s": 10},
    )
    bus = RedisBus(redis_url)
    stop = asyncio.Event()
    gateway = asyncio.create_task(run_gateway(settings, stop=stop))
    worker = Worker(bus, make_brain(sqlite_store), consumer="w1", config=FAST)
    _, finish = await running(worker, asyncio.Event())
    try:
        alice = fake.user(4101, "Alice")
        message = fake.message(fake.private_chat(alice), alice, "hello gateway")
        await fake.enqueue(message)
        await fake.wait_for(
            lambda: bool(fake.sent("sendMessage")) or gateway.done(), what="the reply"
        )
        stop.set()
        await asyncio.wait_for(gateway, 15)
    finally:
        stop.set()
        await finish()
        if not gateway.done():
            gateway.cancel()
        await asyncio.gather(gateway, return_exceptions=True)
        await bus.aclose()
        await fake.stop()
    [sent] = fake.sent("sendMessage")
    assert (sent.text, sent.reply_to) == ("You said: hello gateway", message["message_id"])
    assert await sqlite_store.count_messages() == 2


async def test_gateway_and_worker_survive_a_redis_restart(
    tmp_path: Path, sqlite_store: SqlMemoryStore
) -> None:
    server = RedisServer(tmp_path, aof=True)
    server.start()
    bus = RedisBus(server.url)
    worker = Worker(bus, make_brain(sqlite_store), consumer="w1", config=FAST)
    remote = RemoteBrain(bus, gateway_id="gw1", timeout_s=15)
    _, finish = await running(worker, asyncio.Event())
    try:
        assert len(await remote.handle(inbound("before", msg_id="b1"))) == 1
        server.stop()
        await asyncio.sleep(0.3)
        server.start()
        replies = await remote.handle(inbound("after", msg_id="a1"))
        assert [r.text for r in replies] == ["You said: after"]
    finally:
        await finish()
        await remote.aclose()
        await bus.aclose()
        server.stop()


async def test_the_workers_bench_prints_throughput_and_latency(
    redis_url: str, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bots.bench_workers import workers_bench

    figures = await workers_bench(
        redis_url=redis_url, database_url=pg_url, workers=[1], messages=12, chats=3, in_flight=4
    )
    assert set(figures) == {1}
    assert figures[1]["per_second"] > 0
    assert 0 < figures[1]["p50_ms"] <= figures[1]["p99_ms"]
    out = capsys.readouterr().out
    assert "workers 1:" in out
    assert "messages/s" in out


async def test_a_starting_worker_forgets_the_names_of_workers_long_gone(
    bus: Bus, sqlite_store: SqlMemoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    await bus.publish(INBOUND_STREAM, b"not a request")  # acked and dropped as poison
    [entry] = await bus.consume(INBOUND_STREAM, group=WORKER_GROUP, consumer="old-1", count=1)
    await bus.ack(INBOUND_STREAM, entry.entry_id, group=WORKER_GROUP)
    await asyncio.sleep(0.3)
    config = WorkerConfig(
        concurrency=1,
        claim_idle_ms=200,
        lock_ttl_ms=2_000,
        block_ms=50,
        forget_consumers_after_ms=200,
    )
    worker = Worker(bus, make_brain(sqlite_store), consumer="new-1", config=config)
    caplog.set_level(logging.INFO, logger="bots.worker")
    _, finish = await running(worker, asyncio.Event())
    await asyncio.sleep(0.2)
    await finish()
    assert "forgot 1 workers long gone: old-1" in caplog.text
    assert await bus.prune_consumers(INBOUND_STREAM, group=WORKER_GROUP, idle_ms=10**9) == []
