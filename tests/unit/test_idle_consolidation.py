"""The idle scheduler of `tomo run` / `tomo chat` consolidates quiet chats on its own."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from bots.runner import consolidate_when_idle
from brain.clock import ManualClock
from brain.llm.stub import StubModel
from brain.memory.consolidate import ConsolidationConfig, Consolidator
from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall
from brain.messages import Text
from brain.persona.card import PersonaCard
from brain.ports import NewMessage
from storage.longterm import SqlLongTermStore
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, DM, T0


async def test_a_quiet_chat_is_consolidated_by_the_scheduler(
    sqlite_store: SqlMemoryStore,
) -> None:
    lt = SqlLongTermStore(sqlite_store.db)
    clock = ManualClock(T0)
    alice = await sqlite_store.resolve_person(ALICE, seen_at=T0)
    said, _ = await sqlite_store.add_message(
        NewMessage(
            chat=DM,
            author=alice,
            role="user",
            platform_message_id="m1",
            text="My sister May lives in Osaka",
            segments=(Text(text="My sister May lives in Osaka"),),
            sent_at=T0,
        )
    )
    model = StubModel(
        json_answers=[
            {
                "memories": [
                    {
                        "text": "Alice's sister May lives in Osaka",
                        "about": ["Alice"],
                        "importance": 0.7,
                    }
                ]
            }
        ]
    )
    consolidator = Consolidator(
        store=sqlite_store,
        longterm=lt,
        model=model,
        embedder=HashEmbedder(),
        recall=Recall(store=lt, embedder=HashEmbedder()),
        persona=PersonaCard(name="Tomo", self_description="A friend."),
        clock=clock,
        config=ConsolidationConfig(idle=timedelta(hours=8)),
    )
    task = asyncio.ensure_future(consolidate_when_idle(consolidator, every_s=0.01))
    try:
        await asyncio.sleep(0.1)
        assert await lt.consolidation_cursor(DM) == 0  # not quiet long enough yet
        clock.advance(timedelta(hours=9))
        for _ in range(200):
            if await lt.consolidation_cursor(DM) == said.id:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await lt.consolidation_cursor(DM) == said.id
    [memory] = await lt.memories_about(alice.id, offset=0, limit=10)
    assert memory.text == "Alice's sister May lives in Osaka"
    assert memory.source_message_ids == (said.id,)
