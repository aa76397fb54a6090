"""Health and readiness endpoints: the server itself, and a real `tomo worker` process
whose readiness follows its Redis and which drains on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.gateway import RemoteBrain, run_gateway
from bots.health import HealthServer
from bots.settings import Settings
from brain.errors import ConfigError, StorageError
from brain.messages import ChatRef
from storage.migrate import upgrade
from storage.redis_bus import RedisBus
from tests.conftest import RedisServer, inbound
from tests.e2e.test_scale_out import REPO, start_worker, wait_until, worker_env
from tests.fakes.onebot import FakeOneBot
from tests.fakes.telegram_api import FakeTelegram


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as r,
    ):
        return r.status, await r.json()


async def test_readiness_reports_each_check_and_never_a_secret() -> None:
    state = {"db_up": True, "draining": False}

    async def redis_ok() -> None:
        return None

    async def database() -> None:
        if not state["db_up"]:
            raise StorageError("The database is not answering.")

    async def leaky() -> None:
        raise RuntimeError("cannot connect to postgresql://tomo:hunter2@db/tomo")

    async def slow() -> None:
        await asyncio.sleep(10)

    server = HealthServer(
        listen="127.0.0.1",
        port=0,
        checks={"redis": redis_ok, "database": database},
        draining=lambda: state["draining"],
        timeout_s=0.2,
    )
    await server.start()
    try:
        port = server.bound_port
        assert await get(port, "/healthz") == (200, {"status": "ok"})
        assert await get(port, "/readyz") == (
            200,
            {"status": "ready", "checks": {"redis": "ok", "database": "ok"}},
        )
        state["db_up"] = False
        status, body = await get(port, "/readyz")
        assert status == 503
        assert body["checks"] == {"redis": "ok", "database": "The database is not answering."}
        server.checks = {"leaky": leaky, "slow": slow}
        status, body = await get(port, "/readyz")
        assert status == 503
        assert body["checks"] == {"leaky": "RuntimeError", "slow": "no answer within 0.2 s"}
        state["draining"] = True
        assert await get(port, "/readyz") == (503, {"status": "draining"})
        assert (await get(port, "/healthz"))[0] == 200  # alive while draining
    finally:
        await server.aclose()


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(listen="127.0.0.1", port=port, checks={})
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}.*TOMO_HTTP__PORT"):
            await server.start()


@pytest.mark.postgres
async def test_a_worker_is_ready_with_redis_unready_without_and_drains_on_sigterm(
    tmp_path: Path, pg_url: str
) -> None:
    redis = RedisServer(tmp_path, aof=True)
    redis.start()
    await asyncio.to_thread(upgrade, pg_url)
    port = free_port()
    env = worker_env(tmp_path, redis_url=redis.url, pg_url=pg_url, delay_s=1.5)
    env["TOMO_HTTP__PORT"] = str(port)
    proc = await start_worker(env, REPO)
    bus = RedisBus(redis.url)
    remote = RemoteBrain(bus, gateway_id="gw-health", timeout_s=30)

    async def readiness() -> tuple[int, dict[str, Any]] | None:
        assert proc.returncode is None, "the worker died"
        try:
            return await get(port, "/readyz")
        except aiohttp.ClientConnectionError:
            return None  # not listening yet

    async def ready() -> bool:
        got = await readiness()
        return got is not None and got[0] == 200

    try:
        await wait_until(ready, within=60, what="the worker to be ready")
        assert await readiness() == (
            200,
            {"status": "ready", "checks": {"redis": "ok", "database": "ok"}},
        )
        redis.stop()

        async def unready() -> bool:
            got = await readiness()
            return got is not None and got[0] == 503

        await wait_until(unready, within=10, what="readiness to fail without Redis")
        got = await readiness()
        assert got is not None
        assert got[1]["checks"]["database"] == "ok"
        assert got[1]["checks"]["redis"] != "ok"
        redis.start()
        await wait_until(ready, within=20, what="readiness back with Redis")

        # SIGTERM with a message in hand: not ready any more, the message still answered.
        remote.start()
        chat = ChatRef(platform="telegram", chat_id="880", kind="dm")
        asking = asyncio.create_task(remote.handle(inbound("finish me", msg_id="d1", chat=chat)))

        async def in_hand() -> bool:
            assert proc.returncode is None
            return await bus.length("inbound") >= 1 and not asking.done()

        await wait_until(in_hand, within=10, what="the message to be sent")
        await asyncio.sleep(0.5)  # the worker has taken it; the slow model is thinking
        proc.send_signal(signal.SIGTERM)

        async def draining() -> bool:
            got = await readiness()
            return got == (503, {"status": "draining"}) or asking.done()

        await wait_until(draining, within=5, what="the worker to report draining")
        assert not asking.done(), "the model is slow: the answer cannot be back already"
        replies = await asyncio.wait_for(asking, 30)
        assert [r.text for r in replies] == ["You said: finish me"]
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await remote.aclose()
        await bus.aclose()
        redis.stop()


@contextlib.asynccontextmanager
async def gateway_serving(
    tmp_path: Path, redis_url: str, gateway_id: str, **platforms: Any
) -> AsyncIterator[tuple[int, Callable[[], Awaitable[tuple[int, dict[str, Any]] | None]]]]:
    """`tomo gateway` with health on a free port, for the block; yields the port and a
    function that reads /readyz (None while nothing listens yet)."""
    port = free_port()
    settings = Settings(
        data_dir=tmp_path / "gateway",
        redis_url=redis_url,
        scale={"gateway_id": gateway_id},
        http={"port": port},
        **platforms,
    )
    stop = asyncio.Event()
    gateway = asyncio.create_task(run_gateway(settings, stop=stop))

    async def readiness() -> tuple[int, dict[str, Any]] | None:
        assert not gateway.done(), "the gateway stopped"
        try:
            return await get(port, "/readyz")
        except aiohttp.ClientConnectionError:
            return None

    try:
        yield port, readiness
    finally:
        stop.set()
        await asyncio.wait_for(gateway, 15)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(port, "/healthz")  # closed with the gateway


async def test_the_gateway_is_ready_with_redis_and_its_platforms(
    tmp_path: Path, redis_url: str
) -> None:
    fake = FakeTelegram()
    await fake.start()
    telegram = {"token": fake.token, "api_base": fake.base, "poll_timeout": 1}
    try:
        async with gateway_serving(tmp_path, redis_url, "gw-ready", telegram=telegram) as (
            port,
            ready,
        ):

            async def up() -> bool:
                return await ready() == (
                    200,
                    {"status": "ready", "checks": {"redis": "ok", "platforms": "ok"}},
                )

            async def down() -> bool:  # Redis fine, Telegram not
                return await ready() == (
                    503,
                    {
                        "status": "not ready",
                        "checks": {"redis": "ok", "platforms": "not connected: telegram"},
                    },
                )

            await wait_until(up, within=20, what="the gateway to be ready")
            assert fake.token not in await fake_token_free(port)
            # The Bot API fails for a while: not ready while polls fail, then ready again.
            fake.fail_next("getUpdates", times=3, code=502)
            await wait_until(down, within=10, what="readiness to see Telegram down")
            await wait_until(up, within=20, what="readiness to see Telegram back")
    finally:
        await fake.stop()


async def fake_token_free(port: int) -> str:
    async with aiohttp.ClientSession() as http:
        texts = []
        for path in ("/healthz", "/readyz"):
            async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                texts.append(await r.text())
    return "".join(texts)


async def test_readiness_follows_the_qq_connection(tmp_path: Path, redis_url: str) -> None:
    fake = FakeOneBot()
    await fake.start()
    qq = {"onebot_url": fake.url, "access_token": fake.token, "reconnect_delay_s": 0.2}
    try:
        async with gateway_serving(tmp_path, redis_url, "gw-qq", qq=qq) as (_port, ready):

            def platforms(expected: str) -> Callable[[], Awaitable[bool]]:
                async def check() -> bool:
                    answer = await ready()
                    return answer is not None and answer[1]["checks"]["platforms"] == expected

                return check

            await wait_until(platforms("ok"), within=20, what="QQ connected")
            fake.refuse_with = 503  # NapCat restarting: the connection drops, reconnects fail
            await fake.drop()
            await wait_until(
                platforms("not connected: qq"), within=10, what="readiness to see QQ down"
            )
            fake.refuse_with = None
            await wait_until(platforms("ok"), within=20, what="QQ back")
    finally:
        await fake.stop()
