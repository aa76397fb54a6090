"""StubModel: a deterministic, instant LanguageModel for tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from brain.ports import ChatTurn


class StubModel:
    """Answers `"{prefix}{last user message}"` at once; remembers the prompts it saw.

    Asked for JSON, it answers the next of `json_answers` (a string is sent as it is, so
    tests can script invalid output; anything else as JSON), then `json_answer`.
    With `delay_s`, every call first waits that long (a slow model, for tests of
    timeouts and of concurrency).
    """

    def __init__(
        self,
        *,
        prefix: str = "You said: ",
        json_answer: Mapping[str, Any] | None = None,
        json_answers: Sequence[Any] = (),
        delay_s: float = 0.0,
    ):
        self.prefix = prefix
        self.json_answer = dict(json_answer or {})
        self.json_answers: list[Any] = list(json_answers)
        self.prompts: list[list[ChatTurn]] = []
        self.delay_s = delay_s

    @property
    def name(self) -> str:
        return "stub"

    def _answer(self, turns: Sequence[ChatTurn]) -> str:
        self.prompts.append(list(turns))
        last = next((t.content for t in reversed(turns) if t.role == "user"), "")
        return f"{self.prefix}{last[:200]}"

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        answer = self._answer(turns)
        if json_schema is not None:
            if self.json_answers:
                scripted = self.json_answers.pop(0)
                return scripted if isinstance(scripted, str) else json.dumps(scripted)
            return json.dumps(self.json_answer)
        return answer

    async def stream(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
    ) -> AsyncIterator[str]:
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)
        words = self._answer(turns).split(" ")
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word

    async def aclose(self) -> None:
        return None
