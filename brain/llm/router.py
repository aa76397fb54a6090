"""Per-person adapters (HiveMind): the model that writes the reply to each person.

Two ModelChoosers:
- `LocalPersonAdapters` (llama.cpp): `<folder>/<person id>.gguf` is that person's GGUF
  LoRA. The models built with them are kept in a small LRU; an evicted model is closed
  once no reply is being written with it. A bad adapter is logged once (per version of
  the file) and its person is answered by the persona model.
- `ServerPersonAdapters` (OpenAI-compatible, e.g. vLLM multi-LoRA): a person whose
  adapter name (`<prefix><person id>`) the server lists under GET /models is answered
  with that model name. The list is cached for a while; a server that cannot list its
  models is logged and everyone gets the persona model.

A person's adapter replaces the persona's (it is trained on the same base model).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from brain.errors import ModelError
from brain.ports import LanguageModel

if TYPE_CHECKING:
    from brain.llm.openai_compat import OpenAICompatModel

log = logging.getLogger(__name__)

ADAPTERS_SETTING = "TOMO_LLM__ADAPTERS_DIR"

# Builds the model for one adapter file, loaded and ready (a ModelError if it is bad).
AdapterLoader = Callable[[Path], Awaitable[LanguageModel]]
Signature = tuple[int, int]  # (mtime_ns, size): a new file version is looked at anew


def _signature(path: Path) -> Signature | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size)


@dataclass(eq=False)
class _Loaded:
    person_id: int
    model: LanguageModel
    signature: Signature
    users: int = 0  # replies being written with it right now
    retired: bool = False  # out of the LRU: closed when the last user is done


class LocalPersonAdapters:
    """llama.cpp models with per-person LoRA adapters from a folder, a few kept loaded."""

    def __init__(
        self,
        *,
        persona: LanguageModel,
        folder: Path,
        load: AdapterLoader,
        capacity: int = 2,
    ) -> None:
        self.persona = persona
        self.folder = folder
        self.capacity = capacity  # 0: per-person adapters off
        self._load = load
        self._loaded: OrderedDict[int, _Loaded] = OrderedDict()
        self._loading: dict[int, asyncio.Lock] = {}
        self._bad: dict[int, Signature] = {}  # adapters already refused (logged once)
        self._closing: set[asyncio.Task[None]] = set()

    def adapter_path(self, person_id: int) -> Path:
        return self.folder / f"{person_id}.gguf"

    def loaded(self) -> list[int]:
        """The people whose models are loaded, least recently used first."""
        return list(self._loaded)

    def describe(self) -> str:
        try:
            count = sum(1 for _ in self.folder.glob("*.gguf"))
        except OSError:
            count = 0
        if self.capacity <= 0:
            return "per-person adapters: off (TOMO_LLM__ADAPTER_CACHE=0)"
        return (
            f"per-person adapters: {count} in {self.folder}, up to {self.capacity} loaded at once"
        )

    @asynccontextmanager
    async def for_person(self, person_id: int) -> AsyncIterator[LanguageModel]:
        entry = await self._acquire(person_id)
        if entry is None:
            yield self.persona
            return
        try:
            yield entry.model
        finally:
            entry.users -= 1
            if entry.retired and entry.users == 0:
                await self._close(entry)

    async def _acquire(self, person_id: int) -> _Loaded | None:
        """The person's loaded model with one more user, or None (the persona model)."""
        if self.capacity <= 0:
            return None
        path = self.adapter_path(person_id)
        signature = _signature(path)
        if signature is None:  # no adapter (or it was removed)
            await self._retire(person_id)
            return None
        if self._bad.get(person_id) == signature:
            return None
        entry = self._current(person_id, signature)
        if entry is not None:
            return entry
        lock = self._loading.setdefault(person_id, asyncio.Lock())
        async with lock:
            entry = self._current(person_id, signature)  # loaded while we waited
            if entry is not None:
                return entry
            await self._retire(person_id)  # an older version of the adapter
            try:
                model = await self._load(path)
            except ModelError as exc:
                self._bad[person_id] = signature
                log.error(
                    "The adapter of person %s is not used; the persona model answers them: %s",
                    person_id,
                    exc,
                )
                return None
            self._bad.pop(person_id, None)
            entry = _Loaded(person_id=person_id, model=model, signature=signature, users=1)
            self._loaded[person_id] = entry
            log.info("loaded the adapter of person %s (%s)", person_id, path)
            try:
                await self._evict()
            except BaseException:
                entry.users -= 1
                raise
            return entry

    def _current(self, person_id: int, signature: Signature) -> _Loaded | None:
        entry = self._loaded.get(person_id)
        if entry is None or entry.signature != signature:
            return None
        self._loaded.move_to_end(person_id)
        entry.users += 1
        return entry

    async def _retire(self, person_id: int) -> None:
        entry = self._loaded.pop(person_id, None)
        if entry is not None:
            entry.retired = True
            if entry.users == 0:
                await self._close(entry)

    async def _evict(self) -> None:
        while len(self._loaded) > self.capacity:
            person_id = next(iter(self._loaded))
            await self._retire(person_id)

    async def _close(self, entry: _Loaded) -> None:
        """Close an idle, retired model; shielded so a cancelled reply cannot leak it."""
        entry.retired = True
        task = asyncio.ensure_future(entry.model.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        try:
            await asyncio.shield(task)
        except ModelError as exc:  # pragma: no cover - closing is best effort
            log.warning("closing the model of person %s failed: %s", entry.person_id, exc)

    async def aclose(self) -> None:
        """Close every per-person model (not the persona model: its owner closes it)."""
        entries = list(self._loaded.values())
        self._loaded.clear()
        for entry in entries:
            await self._close(entry)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def llamacpp_loader(
    *, model_path: Path | None, n_ctx: int, n_threads: int, seed: int = 42
) -> AdapterLoader:
    """Loads a LlamaCppModel on the same base model with one person's adapter."""

    async def load(path: Path) -> LanguageModel:
        from brain.llm.llamacpp import LlamaCppModel

        build = functools.partial(
            LlamaCppModel,
            model_path=model_path,
            lora_path=path,
            lora_setting=ADAPTERS_SETTING,
            n_ctx=n_ctx,
            n_threads=n_threads,
            seed=seed,
        )
        model = await asyncio.to_thread(build)  # checks the adapter (reads headers)
        try:
            await model.aload()
        except BaseException:
            await model.aclose()
            raise
        return model

    return load


class ServerPersonAdapters:
    """Adapters served by an OpenAI-compatible server, as model names `<prefix><id>`."""

    def __init__(
        self,
        *,
        persona: OpenAICompatModel,
        prefix: str = "tomo-person-",
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.persona = persona
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._clock = clock
        self._names: frozenset[str] = frozenset()
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self._views: dict[str, OpenAICompatModel] = {}

    def describe(self) -> str:
        if not self.prefix:
            return "per-person adapters: off (TOMO_LLM__ADAPTER_PREFIX is empty)"
        return f"per-person adapters: the server's models named {self.prefix}<person id>"

    def _fresh(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at < self.ttl_s

    async def available(self) -> frozenset[str]:
        """The server's model names (cached for ttl_s; empty if it could not say)."""
        if self._fresh():
            return self._names
        async with self._lock:
            if not self._fresh():
                try:
                    self._names = await self.persona.list_models()
                except ModelError as exc:
                    log.warning(
                        "cannot list the server's models, so no per-person adapters for "
                        "now (everyone gets %r): %s",
                        self.persona.model,
                        exc,
                    )
                    self._names = frozenset()
                self._fetched_at = self._clock()
        return self._names

    @asynccontextmanager
    async def for_person(self, person_id: int) -> AsyncIterator[LanguageModel]:
        name = f"{self.prefix}{person_id}"
        if not self.prefix or name == self.persona.model or name not in await self.available():
            yield self.persona
            return
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = self.persona.with_model(name)
        yield view

    async def aclose(self) -> None:
        """The views share the persona model's connection: nothing of their own."""
        self._views.clear()


__all__ = [
    "ADAPTERS_SETTING",
    "AdapterLoader",
    "LocalPersonAdapters",
    "ServerPersonAdapters",
    "llamacpp_loader",
]
