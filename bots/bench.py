"""Benchmarks that print figures (`tomo bench ...`). Never timed assertions in tests."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bots.app import load_persona
from bots.settings import Settings
from brain.clock import ManualClock
from brain.llm.stub import StubModel
from brain.messages import ChatRef, Inbound, PersonRef, Text
from brain.mind import Brain
from brain.ports import ChatTurn, LanguageModel
from storage.crypto import Encryption
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore

BENCH_PROMPT = [
    ChatTurn(role="system", content="You are a friendly companion. Answer in a few sentences."),
    ChatTurn(role="user", content="Tell me a short story about a turtle who learns to swim."),
]


def percentile(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation (as shared/bench/locomo_score.py)."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


async def pipeline_overhead(
    *, stub_llm: bool, messages: int, repeats: int, encrypt: bool = True
) -> None:
    """Per-message time of Brain.handle on SQLite with an instant (or the real) model;
    encrypted at rest as tomo is by default (`encrypt`)."""
    model: LanguageModel
    if stub_llm:
        model = StubModel()
    else:
        from brain.llm.llamacpp import LlamaCppModel

        model = LlamaCppModel(n_threads=1)
    run_means: list[float] = []
    all_ms: list[float] = []
    for run in range(repeats):
        with tempfile.TemporaryDirectory(prefix="tomo-bench-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'tomo.db'}"
            await asyncio.to_thread(upgrade, url)
            encryption = Encryption(master_key=os.urandom(32)) if encrypt else None
            store = SqlMemoryStore(url, encryption=encryption)
            clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
            brain = Brain(store=store, model=model, persona=load_persona(None), clock=clock)
            chat = ChatRef(platform="console", chat_id="bench", kind="dm")
            author = PersonRef(platform="console", user_id="bench", display_name="Bench")
            times: list[float] = []
            for i in range(messages):
                clock.advance(timedelta(seconds=30))
                inbound = Inbound(
                    id=f"{run}-{i}",
                    chat=chat,
                    author=author,
                    segments=(Text(text=f"message number {i}: how was your day?"),),
                    to_bot=True,
                    sent_at=clock.now(),
                )
                t0 = time.perf_counter()
                await brain.handle(inbound)
                times.append((time.perf_counter() - t0) * 1000)
            await store.aclose()
        run_means.append(statistics.mean(times))
        all_ms.extend(times)
        print(f"run {run + 1}/{repeats}: mean {run_means[-1]:.2f} ms/message", flush=True)
    print(
        f"pipeline ({'stub' if stub_llm else 'real'} model, SQLite"
        f"{', encrypted' if encrypt else ''}, {messages} messages x "
        f"{repeats} runs): median of run means {statistics.median(run_means):.2f} ms/message; "
        f"per message p50 {percentile(all_ms, 0.5):.2f} ms, p95 {percentile(all_ms, 0.95):.2f} ms, "
        f"p99 {percentile(all_ms, 0.99):.2f} ms; load average {os.getloadavg()[0]:.2f}"
    )


async def model_throughput(*, tokens: int, repeats: int, threads: int) -> None:
    """Tokens/s through LlamaCppModel.stream vs llama_cpp.Llama directly, same prompt."""
    from brain.llm.llamacpp import LlamaCppModel

    ours = LlamaCppModel(n_threads=threads)
    direct = ours.load()  # the very same Llama object, called without tomo in between
    messages = [{"role": t.role, "content": t.content} for t in BENCH_PROMPT]

    def run_direct() -> tuple[int, float]:
        t0 = time.perf_counter()
        count = 0
        for chunk in direct.create_chat_completion(
            messages=messages, max_tokens=tokens, temperature=0.0, stream=True
        ):
            if chunk["choices"][0].get("delta", {}).get("content"):
                count += 1
        return count, time.perf_counter() - t0

    async def run_tomo() -> tuple[int, float]:
        t0 = time.perf_counter()
        count = 0
        async for _piece in ours.stream(BENCH_PROMPT, max_tokens=tokens, temperature=0.0):
            count += 1
        return count, time.perf_counter() - t0

    run_direct()  # warm-up
    direct_rates: list[float] = []
    tomo_rates: list[float] = []
    for i in range(repeats):
        n_d, s_d = await asyncio.to_thread(run_direct)
        n_t, s_t = await run_tomo()
        direct_rates.append(n_d / s_d)
        tomo_rates.append(n_t / s_t)
        print(
            f"run {i + 1}/{repeats}: direct {n_d} tok in {s_d:.2f} s = "
            f"{direct_rates[-1]:.1f} tok/s; tomo {n_t} tok in {s_t:.2f} s = "
            f"{tomo_rates[-1]:.1f} tok/s",
            flush=True,
        )
    d, t = statistics.median(direct_rates), statistics.median(tomo_rates)
    print(
        f"model {ours.name}, {threads} thread(s): median direct {d:.1f} tok/s, through tomo "
        f"{t:.1f} tok/s, ratio {t / d:.3f}; load average {os.getloadavg()[0]:.2f}"
    )
    await ours.aclose()


def startup_time(*, repeats: int) -> None:
    """Seconds from spawning `tomo chat` until its banner (the first prompt) is printed."""
    settings = Settings()
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="tomo-bench-") as tmp:
        env = {**os.environ, "TOMO_DATA_DIR": tmp}
        env.pop("TOMO_DATABASE_URL", None)
        for i in range(repeats):
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "bots", "chat", "--name", "bench"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            assert proc.stdout is not None
            assert proc.stdin is not None
            proc.stdout.readline()
            times.append(time.perf_counter() - t0)
            proc.stdin.write(b"/quit\n")
            proc.stdin.close()
            proc.wait(timeout=60)
            print(f"run {i + 1}/{repeats}: {times[-1]:.2f} s to the first prompt", flush=True)
    print(
        f"startup of `tomo chat` to first prompt: median {statistics.median(times):.2f} s over "
        f"{repeats} runs (first run includes creating the database; llm backend "
        f"{settings.llm.backend}); load average {os.getloadavg()[0]:.2f}"
    )
