"""Telemetry helpers: the no-op default, stage timing, and model calls measured.

The brain reports to the Telemetry port (brain/ports.py); bots/metrics.py turns that into
Prometheus metrics. Nothing here sees message text.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from brain.ports import ChatTurn, LanguageModel, ModelChooser, Telemetry


class NoTelemetry:
    """Telemetry that keeps nothing (the brain's default)."""

    def message_in(self, *, platform: str, addressed: bool) -> None:
        pass

    def message_out(self, *, platform: str, count: int) -> None:
        pass

    def stage(self, name: str, seconds: float) -> None:
        pass

    def recall_hits(self, count: int) -> None:
        pass

    def model_call(self, *, call: str, seconds: float, tokens: int) -> None:
        pass

    def limited(self, *, platform: str, reason: str) -> None:
        pass

    def error(self, *, kind: str) -> None:
        pass


@contextmanager
def timed(telemetry: Telemetry, stage: str) -> Iterator[None]:
    """Report how long the block took as one pass through `stage` (also when it fails)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        telemetry.stage(stage, time.perf_counter() - started)


class MeasuredModel:
    """A LanguageModel that reports each call's kind, time and streamed pieces."""

    def __init__(self, model: LanguageModel, telemetry: Telemetry) -> None:
        self.inner = model
        self.telemetry = telemetry

    @property
    def name(self) -> str:
        return self.inner.name

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        started = time.perf_counter()
        try:
            return await self.inner.complete(
                turns, max_tokens=max_tokens, temperature=temperature, json_schema=json_schema
            )
        finally:
            self.telemetry.model_call(
                call="json" if json_schema is not None else "complete",
                seconds=time.perf_counter() - started,
                tokens=0,
            )

    async def stream(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
    ) -> AsyncIterator[str]:
        started = time.perf_counter()
        pieces = 0
        inner = self.inner.stream(turns, max_tokens=max_tokens, temperature=temperature)
        try:
            async for piece in inner:
                pieces += 1
                yield piece
        finally:
            close = getattr(inner, "aclose", None)
            if close is not None:  # stop the inner generation now, not when collected
                await close()
            self.telemetry.model_call(
                call="stream", seconds=time.perf_counter() - started, tokens=pieces
            )

    async def aclose(self) -> None:
        await self.inner.aclose()


class MeasuredChooser:
    """A ModelChooser whose models are measured (per-person adapters included)."""

    def __init__(self, chooser: ModelChooser, telemetry: Telemetry) -> None:
        self.inner = chooser
        self.telemetry = telemetry

    def for_person(self, person_id: int) -> AbstractAsyncContextManager[LanguageModel]:
        return self._measured(person_id)

    @asynccontextmanager
    async def _measured(self, person_id: int) -> AsyncIterator[LanguageModel]:
        async with self.inner.for_person(person_id) as model:
            yield MeasuredModel(model, self.telemetry)


__all__ = ["MeasuredChooser", "MeasuredModel", "NoTelemetry", "timed"]
