"""Serving LoRA adapters: the persona's and per-person ones, on the real bundled model
through llama.cpp, and as model names on an OpenAI-compatible (vLLM-style multi-LoRA)
server faked on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bots.app import App, build_app
from bots.settings import Settings
from brain.errors import ModelError
from brain.llm.llamacpp import LlamaCppModel, attach_lora
from brain.llm.router import LocalPersonAdapters, ServerPersonAdapters
from brain.messages import PersonRef
from brain.ports import ChatTurn
from brain.speech.service import Speech
from tests.conftest import ALICE, BOB, T0, inbound
from tests.lora_kit import garbage_file, mismatched_adapter, valid_adapter

TURNS = [
    ChatTurn(role="system", content="You are a helpful assistant."),
    ChatTurn(role="user", content="Name a colour."),
]
NO_SPEECH = Speech(stt=None, tts=None)


def app_settings(tmp_path: Path, **llm: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        llm={"n_threads": 1, "n_ctx": 1024, "max_reply_tokens": 12, "temperature": 0.0, **llm},
        embed={"backend": "hash"},
        memory={"model_recall": False},
        stickers={"enabled": False},
    )


async def person_id(app: App, ref: PersonRef) -> int:
    return (await app.store.resolve_person(ref, seen_at=T0)).id


# llama.cpp ---------------------------------------------------------------------------


@pytest.mark.model
async def test_a_valid_adapter_loads_and_changes_the_greedy_output(tmp_path: Path) -> None:
    base = LlamaCppModel(n_threads=1, n_ctx=512)
    tuned = LlamaCppModel(n_threads=1, n_ctx=512, lora_path=valid_adapter(tmp_path / "p.gguf"))
    try:
        plain = await base.complete(TURNS, max_tokens=16, temperature=0.0)
        changed = await tuned.complete(TURNS, max_tokens=16, temperature=0.0)
        again = await tuned.complete(TURNS, max_tokens=16, temperature=0.0)
    finally:
        await base.aclose()
        await tuned.aclose()
    assert plain
    assert changed
    assert changed != plain
    assert again == changed


@pytest.mark.model
async def test_an_adapter_llama_cpp_refuses_is_an_error_not_a_crash(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # llama-cpp-python 0.3.36's own Llama(lora_path=...) dies with SIGSEGV on this file.
    junk = garbage_file(tmp_path / "junk.gguf")
    base = LlamaCppModel(n_threads=1, n_ctx=256)
    try:
        with pytest.raises(ModelError, match=r"llama\.cpp refused the LoRA adapter"):
            attach_lora(base.load(), junk)
    finally:
        await base.aclose()
    # Checked when the model was made, replaced by junk before it loaded:
    lora = valid_adapter(tmp_path / "p.gguf")
    strict = LlamaCppModel(n_threads=1, n_ctx=256, lora_path=lora)
    lenient = LlamaCppModel(n_threads=1, n_ctx=256, lora_path=lora, lora_fallback=True)
    lora.write_bytes(junk.read_bytes())
    with pytest.raises(ModelError, match=re.escape(str(lora))):
        await strict.aload()
    with caplog.at_level(logging.ERROR):
        await lenient.aload()
    try:
        assert lenient.lora_path is None
        assert "Running on the base model" in caplog.text
        assert await lenient.complete(TURNS, max_tokens=4, temperature=0.0)
    finally:
        await strict.aclose()
        await lenient.aclose()


@pytest.mark.model
async def test_a_bad_persona_adapter_is_logged_and_the_base_model_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lora = mismatched_adapter(tmp_path / "persona.gguf")
    with caplog.at_level(logging.ERROR):
        app = await build_app(app_settings(tmp_path, lora_path=lora), speech=NO_SPEECH)
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert str(lora) in errors[0]
        assert "hidden size 2048, the base model has 576" in errors[0]
        assert "TOMO_LLM__LORA_PATH" in errors[0]
        assert "Running on the base model" in errors[0]
        assert isinstance(app.model, LlamaCppModel)
        assert app.model.lora_path is None
        assert "WITHOUT its LoRA adapter" in app.model_lines()[0]
        [reply] = await app.brain.handle(inbound("hello", author=ALICE))
        assert reply.text.strip()
    finally:
        await app.aclose()


@pytest.mark.model
async def test_each_person_is_answered_with_their_own_adapter(tmp_path: Path) -> None:
    app = await build_app(app_settings(tmp_path), speech=NO_SPEECH)
    try:
        router = app.models
        assert isinstance(router, LocalPersonAdapters)
        assert router.folder == tmp_path / "data" / "adapters" / "people"
        alice, bob = await person_id(app, ALICE), await person_id(app, BOB)
        lora = valid_adapter(router.folder / f"{alice}.gguf")
        [to_alice] = await app.brain.handle(inbound("hello", author=ALICE))
        assert to_alice.text.strip()
        assert router.loaded() == [alice]
        async with router.for_person(alice) as model:
            assert isinstance(model, LlamaCppModel)
            assert model.lora_path == lora
            assert model is not app.model
        async with router.for_person(bob) as model:  # no adapter: the persona model
            assert model is app.model
        assert router.loaded() == [alice]
        assert "1 in" in app.model_lines()[1]
    finally:
        await app.aclose()


@pytest.mark.model
async def test_the_lru_evicts_and_closes_and_a_bad_adapter_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = await build_app(app_settings(tmp_path, adapter_cache=1), speech=NO_SPEECH)
    try:
        router = app.models
        assert isinstance(router, LocalPersonAdapters)
        valid_adapter(router.folder / "1.gguf", seed=1)
        valid_adapter(router.folder / "2.gguf", seed=2)
        mismatched_adapter(router.folder / "3.gguf")
        async with router.for_person(1) as first:
            assert isinstance(first, LlamaCppModel)
            assert await first.complete(TURNS, max_tokens=4, temperature=0.0)
        async with router.for_person(2) as second:
            assert isinstance(second, LlamaCppModel)
            assert second.lora_path is not None
            assert second.lora_path.name == "2.gguf"
        assert router.loaded() == [2]
        assert first._llama is None  # closed
        with caplog.at_level(logging.ERROR):
            for _ in range(2):
                async with router.for_person(3) as third:
                    assert third is app.model
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "person 3" in errors[0]
        assert "TOMO_LLM__ADAPTERS_DIR" in errors[0]
        assert router.loaded() == [2]
    finally:
        await app.aclose()
    assert second._llama is None


# OpenAI-compatible (vLLM multi-LoRA) -------------------------------------------------


class FakeLoraServer:
    """/v1/models lists base and adapter names; /v1/chat/completions answers as the
    model it was asked for (404 for one it does not list) and records the name."""

    def __init__(self) -> None:
        self.models = ["base"]
        self.models_status = 200
        self.models_asked = 0
        self.asked: list[tuple[str, bool]] = []  # (model, structured output?)
        self.app = web.Application()
        self.app.router.add_get("/v1/models", self.list_models)
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def list_models(self, request: web.Request) -> web.Response:
        self.models_asked += 1
        if self.models_status != 200:
            return web.json_response({"error": {"message": "down"}}, status=self.models_status)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "vllm"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body["model"]
        structured = "response_format" in body
        self.asked.append((model, structured))
        if model not in self.models:
            return web.json_response(
                {"error": {"message": f"The model `{model}` does not exist."}}, status=404
            )
        content = json.dumps({"recall": False}) if structured else f"answer from {model}"
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            }
        )


@pytest.fixture
async def server() -> AsyncIterator[FakeLoraServer]:
    fake = FakeLoraServer()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def openai_app(tmp_path: Path, server: FakeLoraServer) -> AsyncIterator[App]:
    settings = Settings(
        data_dir=tmp_path / "data",
        llm={"backend": "openai", "base_url": server.base_url, "model": "base"},
        embed={"backend": "hash"},
        stickers={"enabled": False},
    )
    app = await build_app(settings, speech=NO_SPEECH)
    try:
        yield app
    finally:
        await app.aclose()


async def test_the_server_adapter_of_a_person_is_asked_by_name(
    openai_app: App, server: FakeLoraServer
) -> None:
    assert isinstance(openai_app.models, ServerPersonAdapters)
    alice = await person_id(openai_app, ALICE)
    server.models.append(f"tomo-person-{alice}")
    [to_alice] = await openai_app.brain.handle(inbound("hi", author=ALICE))
    [to_bob] = await openai_app.brain.handle(inbound("hi", author=BOB))
    assert to_alice.text == f"answer from tomo-person-{alice}"
    assert to_bob.text == "answer from base"
    replies = [model for model, structured in server.asked if not structured]
    side_calls = {model for model, structured in server.asked if structured}
    assert replies == [f"tomo-person-{alice}", "base"]
    assert side_calls == {"base"}  # the recall query stays on the persona model
    assert server.models_asked == 1  # the list is cached


async def test_models_the_server_cannot_list_mean_the_base_name(
    openai_app: App, server: FakeLoraServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await person_id(openai_app, ALICE)
    server.models.append(f"tomo-person-{alice}")
    server.models_status = 500
    with caplog.at_level(logging.WARNING):
        [reply] = await openai_app.brain.handle(inbound("hi", author=ALICE))
    assert reply.text == "answer from base"
    assert any("cannot list the server's models" in r.getMessage() for r in caplog.records)


async def test_an_adapter_the_server_dropped_falls_back_to_the_base_name(
    openai_app: App, server: FakeLoraServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await person_id(openai_app, ALICE)
    name = f"tomo-person-{alice}"
    server.models.append(name)
    router = openai_app.models
    assert isinstance(router, ServerPersonAdapters)
    assert name in await router.available()
    server.models.remove(name)  # unloaded since it was listed
    with caplog.at_level(logging.WARNING):
        [reply] = await openai_app.brain.handle(inbound("hi", author=ALICE))
    assert reply.text == "answer from base"
    assert [m for m, structured in server.asked if not structured] == [name, "base"]
    assert any(name in r.getMessage() for r in caplog.records)


async def test_the_list_is_asked_again_after_its_ttl(server: FakeLoraServer) -> None:
    from brain.llm.openai_compat import OpenAICompatModel

    now = [0.0]
    model = OpenAICompatModel(base_url=server.base_url, model="base")
    router = ServerPersonAdapters(persona=model, ttl_s=60.0, clock=lambda: now[0])
    try:
        async with router.for_person(7) as chosen:
            assert chosen is model
        server.models.append("tomo-person-7")
        now[0] = 30.0
        async with router.for_person(7) as chosen:
            assert chosen is model  # still the cached list
        now[0] = 61.0
        async with router.for_person(7) as chosen:
            assert chosen.name == "tomo-person-7"
            assert await chosen.complete(TURNS, max_tokens=5) == "answer from tomo-person-7"
        assert server.models_asked == 2
    finally:
        await router.aclose()
        await model.aclose()
