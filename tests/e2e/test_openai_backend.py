"""The openai client against a fake OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest

from brain.errors import ModelError
from brain.llm.openai_compat import OpenAICompatModel
from brain.ports import ChatTurn
from tests.e2e.fake_openai import FakeOpenAI

TURNS = [ChatTurn(role="system", content="be nice"), ChatTurn(role="user", content="hi")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_complete(fake: FakeOpenAI) -> None:
    model = OpenAICompatModel(base_url=fake.base_url, model="fake", api_key="sk-test-key")
    assert await model.complete(TURNS, max_tokens=20) == "Hello from the fake server"
    sent = fake.requests[0]
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
    ]
    assert sent["body"]["max_tokens"] == 20
    assert sent["auth"] == "Bearer sk-test-key"
    await model.aclose()


async def test_stream(fake: FakeOpenAI) -> None:
    model = OpenAICompatModel(base_url=fake.base_url, model="fake")
    pieces = [p async for p in model.stream(TURNS, max_tokens=20)]
    assert len(pieces) == 5
    assert "".join(pieces).strip() == "Hello from the fake server"
    await model.aclose()


async def test_json_schema_is_sent_as_response_format(fake: FakeOpenAI) -> None:
    model = OpenAICompatModel(base_url=fake.base_url, model="fake")
    schema = {"type": "object", "properties": {"reply": {"type": "string"}}, "required": ["reply"]}
    out = json.loads(await model.complete(TURNS, max_tokens=20, json_schema=schema))
    assert out["reply"] == "Hello from the fake server"
    fmt = fake.requests[0]["body"]["response_format"]
    assert fmt == {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    await model.aclose()


async def test_rate_limit_is_retried(fake: FakeOpenAI) -> None:
    fake.fail_next = [429, 503]
    model = OpenAICompatModel(base_url=fake.base_url, model="fake")
    assert await model.complete(TURNS, max_tokens=5) == "Hello from the fake server"
    assert len(fake.requests) == 3
    await model.aclose()


async def test_unknown_model_is_a_clear_error(fake: FakeOpenAI) -> None:
    model = OpenAICompatModel(base_url=fake.base_url, model="missing")
    with pytest.raises(ModelError, match="TOMO_LLM__MODEL"):
        await model.complete(TURNS, max_tokens=5)
    await model.aclose()


async def test_server_down_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = OpenAICompatModel(
        base_url=f"http://127.0.0.1:{port}/v1", model="fake", api_key="sk-secret-xyz", max_retries=0
    )
    with pytest.raises(ModelError, match="Cannot reach") as info:
        await model.complete(TURNS, max_tokens=5)
    assert "sk-secret-xyz" not in str(info.value)
    with pytest.raises(ModelError, match="Cannot reach"):
        _ = [p async for p in model.stream(TURNS, max_tokens=5)]
    await model.aclose()
