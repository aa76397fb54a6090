"""The real bundled GGUF through LlamaCppModel: plumbing, formats, JSON output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from brain.llm.llamacpp import LlamaCppModel
from brain.ports import ChatTurn

pytestmark = pytest.mark.model

TURNS = [
    ChatTurn(role="system", content="You are a helpful assistant."),
    ChatTurn(role="user", content="Name a colour."),
]


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaCppModel]:
    m = LlamaCppModel(n_threads=1, n_ctx=1024)
    m.load()
    yield m
    asyncio.run(m.aclose())


async def test_uses_the_chat_template_from_the_gguf(model: LlamaCppModel) -> None:
    llama = model.load()
    assert "tokenizer.chat_template" in llama.metadata
    assert llama.chat_format == "chat_template.default"


async def test_stream_and_complete_agree_at_temperature_zero(model: LlamaCppModel) -> None:
    whole = await model.complete(TURNS, max_tokens=24, temperature=0.0)
    pieces = [p async for p in model.stream(TURNS, max_tokens=24, temperature=0.0)]
    assert whole
    assert len(pieces) > 1
    assert "".join(pieces) == whole


async def test_json_schema_output_is_valid_json(model: LlamaCppModel) -> None:
    schema = {
        "type": "object",
        "properties": {"reply": {"type": "string"}, "emotion": {"enum": ["happy", "sad"]}},
        "required": ["reply", "emotion"],
    }
    raw = await model.complete(TURNS, max_tokens=60, temperature=0.0, json_schema=schema)
    data = json.loads(raw)
    assert isinstance(data["reply"], str)
    assert data["emotion"] in {"happy", "sad"}


async def test_a_cancelled_stream_stops_and_frees_the_model(model: LlamaCppModel) -> None:
    stream = model.stream(TURNS, max_tokens=200, temperature=0.0)
    first = await anext(stream)
    assert first
    await stream.aclose()  # the worker stops at the next token and releases the lock
    assert await model.complete(TURNS, max_tokens=4, temperature=0.0)
