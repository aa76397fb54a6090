"""`tomo bench pipeline --workers N`: messages a second end to end through Redis and
Postgres, with N real `tomo worker` processes and an instant stub model.

For each N (each run with its own ids; use a Redis database of its own): N worker
processes start (stub model,
hashing embedder, so this measures tomo's own path: bus, locks, store, recall), a warm-up
message per chat is answered, then `messages` messages spread over `chats` chats are sent
through the gateway's RemoteBrain with `in_flight` at a time. Throughput is messages over
wall time; latency is from publish to the answer back at the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bots.bench import percentile
from bots.gateway import RemoteBrain
from brain.messages import ChatRef, Inbound, PersonRef, Text
from storage.redis_bus import RedisBus


def _worker_env(redis_url: str, database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update(
        TOMO_REDIS_URL=redis_url,
        TOMO_DATABASE_URL=database_url,
        TOMO_DATA_DIR=str(data_dir),
        TOMO_LLM__BACKEND="stub",
        TOMO_EMBED__BACKEND="hash",
        TOMO_STT__ENABLED="false",
        TOMO_TTS__BACKEND="off",
        TOMO_STICKERS__ENABLED="false",
        TOMO_LOG_LEVEL="ERROR",
        # Telegram chats, as in production: the rate limiter runs (one Redis call a
        # message) with limits no sender here reaches; encryption at rest is on.
        TOMO_LIMITS__PERSON_PER_MINUTE="1000000",
        TOMO_LIMITS__PERSON_BURST="1000000",
        TOMO_LIMITS__CHAT_PER_MINUTE="1000000",
        TOMO_LIMITS__CHAT_BURST="1000000",
    )
    return env


def _inbound(run: str, chat: int, n: int) -> Inbound:
    return Inbound(
        id=f"{run}-{chat}-{n}",
        chat=ChatRef(platform="telegram", chat_id=f"{run}-c{chat}", kind="dm"),
        author=PersonRef(platform="telegram", user_id=f"{run}-u{chat}", display_name=f"P{chat}"),
        segments=(Text(text=f"message {n}: how was your day?"),),
        to_bot=True,
        sent_at=datetime.now(UTC),
    )


async def _one_setting(
    *,
    workers: int,
    redis_url: str,
    database_url: str,
    messages: int,
    chats: int,
    in_flight: int,
    concurrency: int,
) -> dict[str, float]:
    bus = RedisBus(redis_url)
    run = uuid.uuid4().hex[:8]
    remote = RemoteBrain(bus, gateway_id=f"bench-{run}", timeout_s=60.0)
    remote.start()
    procs: list[asyncio.subprocess.Process] = []
    with tempfile.TemporaryDirectory(prefix="tomo-bench-workers-") as tmp:
        env = _worker_env(redis_url, database_url, Path(tmp))
        try:
            for _ in range(workers):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        *("-m", "bots", "worker", "--concurrency", str(concurrency)),
                        env=env,
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                )
            # warm-up: every chat once (creates the people and chats), every worker started
            await asyncio.gather(*(remote.handle(_inbound(run, c, 0)) for c in range(chats)))
            gate = asyncio.Semaphore(in_flight)
            latencies: list[float] = []

            async def send(i: int) -> None:
                async with gate:
                    started = time.perf_counter()
                    await remote.handle(_inbound(run, i % chats, 1 + i // chats))
                    latencies.append((time.perf_counter() - started) * 1000)

            began = time.perf_counter()
            await asyncio.gather(*(send(i) for i in range(messages)))
            wall = time.perf_counter() - began
        finally:
            for proc in procs:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 15)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            await remote.aclose()
            await bus.aclose()
    return {
        "per_second": messages / wall,
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
    }


async def workers_bench(
    *,
    redis_url: str,
    database_url: str,
    workers: Sequence[int] = (1, 2, 4),
    messages: int = 600,
    chats: int = 50,
    in_flight: int = 16,
    concurrency: int = 4,
) -> dict[int, dict[str, float]]:
    """Run every worker count; print a table and return the figures."""
    figures: dict[int, dict[str, float]] = {}
    print(
        f"{messages} messages over {chats} chats, {in_flight} in flight; stub model, hashing "
        f"embedder; each worker holds {concurrency} at once"
    )
    from storage.migrate import upgrade

    await asyncio.to_thread(upgrade, database_url)  # once, before the workers start
    for n in workers:
        figures[n] = await _one_setting(
            workers=n,
            redis_url=redis_url,
            database_url=database_url,
            messages=messages,
            chats=chats,
            in_flight=in_flight,
            concurrency=concurrency,
        )
        f = figures[n]
        print(
            f"workers {n}: {f['per_second']:.0f} messages/s, latency p50 {f['p50_ms']:.1f} ms, "
            f"p99 {f['p99_ms']:.1f} ms; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    return figures
