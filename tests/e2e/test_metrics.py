"""Prometheus metrics at /metrics: messages through the app's brain move the counters,
and no label names a chat, a person or any words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bots.app import build_app
from bots.health import serving
from bots.settings import Settings
from brain.errors import ModelError
from brain.llm.stub import StubModel
from brain.messages import ChatRef, PersonRef
from brain.ports import ChatTurn
from tests.conftest import inbound

CHAT = ChatRef(platform="telegram", chat_id="987654321", kind="dm")
PERSON = PersonRef(platform="telegram", user_id="24680", display_name="Quentin")


class Moody(StubModel):
    """Answers like the stub, but fails on a message that asks it to."""

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        if json_schema is None and "please fail" in turns[-1].content:
            raise ModelError("The model server is down.")
        return await super().complete(
            turns, max_tokens=max_tokens, temperature=temperature, json_schema=json_schema
        )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition as (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_messages_stages_model_calls_and_errors(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        llm={"backend": "stub"},
        embed={"backend": "hash"},
        stt={"enabled": False},
        tts={"backend": "off"},
        stickers={"enabled": False},
        limits={"person_burst": 3, "person_per_minute": 0.1},
    )
    app = await build_app(settings, model=Moody())
    try:
        async with serving("127.0.0.1", 0, {}, metrics=app.telemetry) as server:
            assert server is not None
            for text in ("my dog is called Biscuit", "what is my dog called?"):
                await app.brain.handle(inbound(text, chat=CHAT, author=PERSON))
            await app.brain.handle(
                inbound("the group chatter", chat=CHAT, author=PERSON, to_bot=False)
            )
            try:
                await app.brain.handle(inbound("please fail now", chat=CHAT, author=PERSON))
            except ModelError:
                pass
            else:
                raise AssertionError("the model was to fail")
            # the burst of 3 is spent: refused with a note, then silently
            for text in ("one more", "and another"):
                await app.brain.handle(inbound(text, chat=CHAT, author=PERSON))
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{server.bound_port}/metrics") as response,
            ):
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/plain")
                text = await response.text()
    finally:
        await app.aclose()
    got = samples(text)
    tg = (("platform", "telegram"),)
    assert got[("tomo_messages_in_total", (("addressed", "true"), *tg))] == 5
    assert got[("tomo_messages_in_total", (("addressed", "false"), *tg))] == 1
    assert got[("tomo_messages_out_total", tg)] == 3  # two answers and one rate note
    assert got[("tomo_stage_seconds_count", (("stage", "handle"),))] == 6
    assert got[("tomo_stage_seconds_count", (("stage", "recall"),))] == 3
    assert got[("tomo_stage_seconds_count", (("stage", "generate"),))] == 3
    assert got[("tomo_recall_hits_count", ())] == 3
    assert got[("tomo_model_calls_total", (("call", "complete"),))] == 3  # the failed one too
    assert got[("tomo_model_calls_total", (("call", "json"),))] == 3  # recall queries
    assert got[("tomo_errors_total", (("kind", "ModelError"),))] == 1
    assert got[("tomo_limited_total", (("platform", "telegram"), ("reason", "person")))] == 2
    assert any(name == "process_resident_memory_bytes" for name, _ in got)
    # labels name platforms, stages and kinds: never a chat, a person or words
    for private in ("987654321", "24680", "Quentin", "Biscuit", "dog"):
        assert private not in text
