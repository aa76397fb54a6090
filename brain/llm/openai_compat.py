"""OpenAICompatModel: any OpenAI-compatible chat server (vLLM, ollama, llama.cpp server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam

from brain.errors import ModelError
from brain.ports import ChatTurn


def _messages(turns: Sequence[ChatTurn]) -> list[ChatCompletionMessageParam]:
    return [cast(ChatCompletionMessageParam, {"role": t.role, "content": t.content}) for t in turns]


class OpenAICompatModel:
    """The same LanguageModel port over the `openai` client, at any base URL."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 3,
    ) -> None:
        self.base_url = base_url
        self.model = model
        # Local servers need no key, but the client insists on one.
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=api_key or "not-needed",
            timeout=timeout_s,
            max_retries=max_retries,
        )

    @property
    def name(self) -> str:
        return self.model

    def _error(self, exc: openai.OpenAIError) -> ModelError:
        where = f"the model server at {self.base_url}"
        if isinstance(exc, openai.APIConnectionError):
            return ModelError(f"Cannot reach {where}: is it running? Check TOMO_LLM__BASE_URL.")
        if isinstance(exc, openai.AuthenticationError):
            return ModelError(f"{where} refused the API key: check TOMO_LLM__API_KEY.")
        if isinstance(exc, openai.NotFoundError):
            return ModelError(f"{where} has no model {self.model!r}: check TOMO_LLM__MODEL.")
        if isinstance(exc, openai.APIStatusError):
            return ModelError(f"{where} answered HTTP {exc.status_code}.")
        return ModelError(f"{where} failed: {type(exc).__name__}.")

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        extra: dict[str, Any] = {}
        if json_schema is not None:
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": dict(json_schema)},
            }
        try:
            result = await self._client.chat.completions.create(
                model=self.model,
                messages=_messages(turns),
                max_tokens=max_tokens,
                temperature=temperature,
                **extra,
            )
        except openai.OpenAIError as exc:
            raise self._error(exc) from None
        if not result.choices:
            raise ModelError(f"The model server at {self.base_url} returned no choices.")
        return result.choices[0].message.content or ""

    async def stream(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
    ) -> AsyncIterator[str]:
        try:
            chunks = await self._client.chat.completions.create(
                model=self.model,
                messages=_messages(turns),
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
            )
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.OpenAIError as exc:
            raise self._error(exc) from None

    async def aclose(self) -> None:
        await self._client.close()
