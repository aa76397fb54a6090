"""OpenAICompatModel: any OpenAI-compatible chat server (vLLM, ollama, llama.cpp server).

On a multi-LoRA server (vLLM `--enable-lora --lora-modules name=path ...`) each adapter is
a model name: `with_model(name)` gives a view on the same connection that asks for it, and
falls back to the base name if the server no longer has it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from brain.errors import ModelError
from brain.ports import ChatTurn

log = logging.getLogger(__name__)


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
        # A view made by with_model(): the name to use if the server lacks `model`.
        self.fallback_model: str | None = None
        self._owns_client = True
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

    def describe(self) -> str:
        """One line for the operator: which server and model answer."""
        return f"OpenAI-compatible server {self.base_url}, model {self.model!r}"

    def with_model(self, name: str) -> OpenAICompatModel:
        """The same server and connection, asking for model `name` (e.g. an adapter of a
        multi-LoRA server); a server without it is asked for this model's name instead.
        Closing the view leaves the connection open."""
        view = copy.copy(self)
        view.model = name
        view.fallback_model = self.model
        view._owns_client = False
        return view

    async def list_models(self, *, timeout_s: float = 10.0) -> frozenset[str]:
        """The model names the server offers (GET /models): base models and adapters."""
        client = self._client.with_options(timeout=timeout_s, max_retries=1)
        try:
            return frozenset([m.id async for m in client.models.list()])
        except openai.OpenAIError as exc:
            raise self._error(exc) from None

    async def _create(self, **kwargs: Any) -> Any:
        """chat.completions.create for this model; a view whose model the server lacks
        (an adapter unloaded since it was listed) asks its fallback model once."""
        model = self.model
        try:
            return await self._client.chat.completions.create(model=model, **kwargs)
        except openai.NotFoundError as exc:
            if self.fallback_model is None:
                raise self._error(exc, model=model) from None
            log.warning(
                "the model server has no model %r; answering with %r", model, self.fallback_model
            )
            model = self.fallback_model
        except openai.OpenAIError as exc:
            raise self._error(exc, model=model) from None
        try:
            return await self._client.chat.completions.create(model=model, **kwargs)
        except openai.OpenAIError as exc:
            raise self._error(exc, model=model) from None

    def _error(self, exc: openai.OpenAIError, *, model: str | None = None) -> ModelError:
        where = f"the model server at {self.base_url}"
        if isinstance(exc, openai.APIConnectionError):
            return ModelError(f"Cannot reach {where}: is it running? Check TOMO_LLM__BASE_URL.")
        if isinstance(exc, openai.AuthenticationError):
            return ModelError(f"{where} refused the API key: check TOMO_LLM__API_KEY.")
        if isinstance(exc, openai.NotFoundError):
            name = model or self.model
            return ModelError(f"{where} has no model {name!r}: check TOMO_LLM__MODEL.")
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
        result: ChatCompletion = await self._create(
            messages=_messages(turns),
            max_tokens=max_tokens,
            temperature=temperature,
            **extra,
        )
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
        chunks: openai.AsyncStream[ChatCompletionChunk] = await self._create(
            messages=_messages(turns),
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
        )
        try:
            async for chunk in chunks:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.OpenAIError as exc:
            raise self._error(exc) from None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.close()
