"""Per-person adapters: the router's LRU (loads once, evicts and closes, never closes a
model in use, logs a bad adapter once) and the brain writing each reply with the model
chosen for its person (instant stub models; the real llama.cpp path is in tests/e2e)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from brain.clock import ManualClock
from brain.errors import ModelError
from brain.llm.router import LocalPersonAdapters
from brain.llm.stub import StubModel
from brain.mind import Brain, OneModel
from brain.persona.card import PersonaCard
from brain.ports import LanguageModel, ModelChooser
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, T0, inbound


class ClosingStub(StubModel):
    def __init__(self, label: str) -> None:
        super().__init__(prefix=f"[{label}] ")
        self.label = label
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


class FakeLoader:
    """Loads '<id>.gguf' as a stub model; a file starting with 'bad' is refused."""

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.loads: list[str] = []
        self.models: dict[str, ClosingStub] = {}
        self.delay_s = delay_s

    async def __call__(self, path: Path) -> LanguageModel:
        self.loads.append(path.stem)
        await asyncio.sleep(self.delay_s)
        if (await asyncio.to_thread(path.read_bytes)).startswith(b"bad"):
            raise ModelError(f"The LoRA adapter {path} is broken. Fix TOMO_LLM__ADAPTERS_DIR.")
        model = self.models[path.stem] = ClosingStub(path.stem)
        return model


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    people = tmp_path / "adapters" / "people"
    people.mkdir(parents=True)
    return people


def adapter(folder: Path, person_id: int, content: bytes = b"GGUF ok") -> None:
    (folder / f"{person_id}.gguf").write_bytes(content)


async def label(router: LocalPersonAdapters, person_id: int) -> str:
    async with router.for_person(person_id) as model:
        assert isinstance(model, ClosingStub)
        return model.label


def router_for(folder: Path, loader: FakeLoader, *, capacity: int = 2) -> LocalPersonAdapters:
    return LocalPersonAdapters(
        persona=ClosingStub("persona"), folder=folder, load=loader, capacity=capacity
    )


async def test_a_person_with_an_adapter_gets_it_and_others_the_persona(folder: Path) -> None:
    adapter(folder, 1)
    loader = FakeLoader()
    router = router_for(folder, loader)
    assert isinstance(router, ModelChooser)
    assert await label(router, 1) == "1"
    assert await label(router, 2) == "persona"
    assert await label(router, 1) == "1"
    assert loader.loads == ["1"]  # loaded once


async def test_the_least_recently_used_model_is_evicted_and_closed(folder: Path) -> None:
    for pid in (1, 2, 3):
        adapter(folder, pid)
    loader = FakeLoader()
    router = router_for(folder, loader, capacity=2)
    await label(router, 1)
    await label(router, 2)
    await label(router, 1)  # 2 is now the least recently used
    await label(router, 3)
    assert router.loaded() == [1, 3]
    assert loader.models["2"].closed
    assert not loader.models["1"].closed
    assert not loader.models["3"].closed
    assert await label(router, 2) == "2"  # loaded again
    assert loader.loads == ["1", "2", "3", "2"]
    await router.aclose()
    assert all(m.closed for m in loader.models.values())
    assert not router.persona.closed  # type: ignore[attr-defined]


async def test_a_model_in_use_is_closed_only_after_its_reply(folder: Path) -> None:
    for pid in (1, 2):
        adapter(folder, pid)
    loader = FakeLoader()
    router = router_for(folder, loader, capacity=1)
    async with router.for_person(1) as busy:
        assert await label(router, 2) == "2"  # evicts 1 from the cache...
        assert router.loaded() == [2]
        assert isinstance(busy, ClosingStub)
        assert not busy.closed  # ...but its reply is still being written
        assert [p async for p in busy.stream([], max_tokens=5)] == ["[1]", " "]
    assert busy.closed


async def test_concurrent_messages_load_an_adapter_once(folder: Path) -> None:
    adapter(folder, 1)
    loader = FakeLoader(delay_s=0.05)
    router = router_for(folder, loader)
    labels = await asyncio.gather(*(label(router, 1) for _ in range(5)))
    assert labels == ["1"] * 5
    assert loader.loads == ["1"]


async def test_a_bad_adapter_is_logged_once_and_the_persona_answers(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    adapter(folder, 1, b"bad bytes")
    loader = FakeLoader()
    router = router_for(folder, loader)
    with caplog.at_level(logging.ERROR):
        assert await label(router, 1) == "persona"
        assert await label(router, 1) == "persona"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "person 1" in errors[0]
    assert "TOMO_LLM__ADAPTERS_DIR" in errors[0]
    assert loader.loads == ["1"]
    adapter(folder, 1, b"GGUF fixed now")  # a new version of the file is tried again
    assert await label(router, 1) == "1"


async def test_a_replaced_adapter_is_reloaded_and_a_removed_one_closed(folder: Path) -> None:
    adapter(folder, 1)
    loader = FakeLoader()
    router = router_for(folder, loader)
    await label(router, 1)
    first = loader.models["1"]
    adapter(folder, 1, b"GGUF retrained, longer")
    assert await label(router, 1) == "1"
    assert first.closed
    assert loader.models["1"] is not first
    (folder / "1.gguf").unlink()
    assert await label(router, 1) == "persona"
    assert loader.models["1"].closed
    assert router.loaded() == []


async def test_cache_size_zero_switches_per_person_adapters_off(folder: Path) -> None:
    adapter(folder, 1)
    loader = FakeLoader()
    router = router_for(folder, loader, capacity=0)
    assert await label(router, 1) == "persona"
    assert loader.loads == []
    assert "off" in router.describe()


async def test_a_missing_folder_means_no_adapters(tmp_path: Path) -> None:
    router = router_for(tmp_path / "nowhere", FakeLoader())
    assert await label(router, 1) == "persona"
    assert "0 in" in router.describe()


# The brain: the chosen model writes the reply, the persona model does the rest. -----


class ByPerson:
    """A ModelChooser with a fixed model for some person ids."""

    def __init__(self, persona: LanguageModel, models: dict[int, LanguageModel]) -> None:
        self.persona = persona
        self.models = models
        self.asked: list[int] = []

    def for_person(self, person_id: int) -> AbstractAsyncContextManager[LanguageModel]:
        self.asked.append(person_id)
        return self._use(self.models.get(person_id, self.persona))

    @asynccontextmanager
    async def _use(self, model: LanguageModel) -> AsyncIterator[LanguageModel]:
        yield model


def brain_with(store: SqlMemoryStore, chooser: ModelChooser | None, persona: StubModel) -> Brain:
    return Brain(
        store=store,
        model=persona,
        persona=PersonaCard(name="Tomo", self_description="A friend."),
        clock=ManualClock(T0 + timedelta(seconds=1)),
        models=chooser,
    )


async def test_the_brain_answers_each_person_with_their_model(
    sqlite_store: SqlMemoryStore,
) -> None:
    alice = await sqlite_store.resolve_person(ALICE, seen_at=T0)
    persona, alices = StubModel(prefix="persona: "), StubModel(prefix="alice model: ")
    chooser = ByPerson(persona, {alice.id: alices})
    brain = brain_with(sqlite_store, chooser, persona)
    [to_alice] = await brain.handle(inbound("hi", author=ALICE))
    assert to_alice.text == "alice model: hi"
    pieces: list[str] = []

    async def sink(piece: str) -> None:
        pieces.append(piece)

    [to_bob] = await brain.handle(inbound("hello", author=BOB), on_token=sink)
    assert to_bob.text == "persona: hello"
    assert "".join(pieces) == "persona: hello"
    bob = await sqlite_store.resolve_person(BOB, seen_at=T0)
    assert chooser.asked == [alice.id, bob.id]
    assert len(alices.prompts) == 1  # only the reply; nothing else asks Alice's model


async def test_without_a_chooser_the_persona_model_answers_everyone(
    sqlite_store: SqlMemoryStore,
) -> None:
    persona = StubModel(prefix="persona: ")
    brain = brain_with(sqlite_store, None, persona)
    assert isinstance(brain.models, OneModel)
    [reply] = await brain.handle(inbound("hi", author=ALICE))
    assert reply.text == "persona: hi"
