"""Recall: hybrid retrieval (BM25 over stemmed context keys + dense e5), fused.

Scopes are filtered before anything is scored: only entries of the scopes asked for are
ever loaded. Each scope's index is built once from the store and kept up to date by this
process (`index_message`, `invalidate`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from brain.memory.keys import dense_text, message_key, shown_text
from brain.memory.lexical import BM25, tokenize
from brain.memory.types import IndexEntry
from brain.memory.vectors import Vector, from_bytes, to_bytes
from brain.ports import Embedder, LongTermStore, StoredMessage

EntryId = tuple[str, int]  # ("message" | "memory", id)


@dataclass(frozen=True, kw_only=True)
class RecallConfig:
    # Tuned on the LoCoMo dev split (see README); each is a generic IR knob.
    lexical_weight: float = 1.0
    dense_weight: float = 1.0
    speaker_boost: float = 0.6
    index_next_turn: bool = True
    # A turn next to a close match is likely part of the same exchange: add this share
    # of the neighbours' mean dense score (0 turns it off).
    neighbour_weight: float = 0.3
    bm25_k1: float = 1.2
    bm25_b: float = 0.5
    # Pseudo-relevance feedback: terms of the top `prf_docs` lexical hits, weighted.
    prf_docs: int = 3
    prf_terms: int = 8
    prf_weight: float = 0.3
    # Scope indexes kept in memory (entries in all); the least recently used go first.
    max_cached_entries: int = 300_000
    # Stores that search vectors themselves (Postgres + pgvector): how many nearest
    # entries to ask for, and the scope size from which a scope gets its own ANN index.
    dense_candidates: int = 100
    vector_index_min_entries: int = 1_000


class Recalled(BaseModel):
    model_config = ConfigDict(frozen=True)

    entry: IndexEntry
    score: float

    @property
    def entry_id(self) -> EntryId:
        return (self.entry.kind, self.entry.id)

    @property
    def shown(self) -> str:
        if self.entry.kind == "message":
            return shown_text(self.entry.author_name, self.entry.text, self.entry.at)
        return self.entry.text


@dataclass
class _ScopeIndex:
    dims: int
    # native: the store searches the vectors (rows stay empty, nothing held in memory)
    native: bool = False
    entries: list[IndexEntry] = field(default_factory=list)
    alive: list[bool] = field(default_factory=list)
    rows: list[Vector | None] = field(default_factory=list)
    position: dict[EntryId, int] = field(default_factory=dict)
    bm25: BM25 = field(default_factory=BM25)
    names: list[str] = field(default_factory=list)
    _matrix: Vector | None = None
    _names: npt.NDArray[np.str_] | None = None
    _neighbours: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None

    def add(self, entry: IndexEntry, vector: Vector | None) -> None:
        old = self.position.get((entry.kind, entry.id))
        if old is not None:
            self.alive[old] = False
        self.position[(entry.kind, entry.id)] = len(self.entries)
        self.entries.append(entry.model_copy(update={"embedding": None}))
        self.alive.append(True)
        self.rows.append(None if self.native else vector)
        self.bm25.add(tokenize(entry.key))
        self.names.append(entry.author_name.lower())
        self._matrix = None
        self._names = None
        self._neighbours = None

    def latest_before(self, message_id: int) -> IndexEntry | None:
        """The live message entry with the greatest id below `message_id`."""
        best: IndexEntry | None = None
        for i, entry in enumerate(self.entries):
            if (
                entry.kind == "message"
                and self.alive[i]
                and entry.id < message_id
                and (best is None or entry.id > best.id)
            ):
                best = entry
        return best

    @property
    def neighbours(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """For each entry, the positions of the previous and next live message (or -1)."""
        if self._neighbours is None:
            n = len(self.entries)
            prev = np.full(n, -1, dtype=np.int64)
            nxt = np.full(n, -1, dtype=np.int64)
            live = sorted(
                (e.id, i)
                for i, e in enumerate(self.entries)
                if self.alive[i] and e.kind == "message"
            )
            for (_, a), (_, b) in itertools.pairwise(live):
                nxt[a], prev[b] = b, a
            self._neighbours = (prev, nxt)
        return self._neighbours

    @property
    def name_array(self) -> npt.NDArray[np.str_]:
        if self._names is None:
            self._names = np.array(self.names, dtype=str)
        return self._names

    @property
    def matrix(self) -> Vector:
        if self._matrix is None:
            rows = [r for r in self.rows if r is not None]
            assert len(rows) == len(self.rows), "a native index keeps no vectors"
            self._matrix = (
                np.vstack(rows).astype(np.float32)
                if rows
                else np.zeros((0, self.dims), dtype=np.float32)
            )
        return self._matrix


def _zscore(values: Vector) -> Vector:
    if values.size == 0:
        return values
    std = float(values.std())
    if std < 1e-9:
        return np.zeros_like(values)
    out: Vector = ((values - values.mean()) / std).astype(np.float32)
    return out


def _entry(message: StoredMessage, *, scope: str, key: str) -> IndexEntry:
    return IndexEntry(
        kind="message",
        id=message.id,
        scope=scope,
        key=key,
        text=message.text,
        source_message_ids=(message.id,),
        author_id=message.author_id,
        author_name=message.author_name,
        at=message.sent_at,
        embedding=None,
    )


def _dense_text(entry: IndexEntry) -> str:
    return dense_text(entry.author_name, entry.text) if entry.kind == "message" else entry.text


class Recall:
    def __init__(
        self, *, store: LongTermStore, embedder: Embedder, config: RecallConfig | None = None
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or RecallConfig()
        # Least recently used first; bounded by config.max_cached_entries.
        self._scopes: OrderedDict[str, _ScopeIndex] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self._native = store.native_vectors
        self._vector_indexed: set[str] = set()

    def cached_scopes(self) -> list[str]:
        """The scopes whose index is in memory, least recently used first."""
        return list(self._scopes)

    def _keep(self, scope: str, index: _ScopeIndex) -> None:
        self._scopes[scope] = index
        self._scopes.move_to_end(scope)
        self._trim()

    def _trim(self) -> None:
        total = sum(len(i.entries) for i in self._scopes.values())
        while total > self.config.max_cached_entries and len(self._scopes) > 1:
            _old, dropped = self._scopes.popitem(last=False)
            total -= len(dropped.entries)

    def invalidate(self, scope: str) -> None:
        """Forget the cached index of `scope` (after memories changed or were forgotten)."""
        self._scopes.pop(scope, None)

    async def _index(self, scope: str) -> _ScopeIndex:
        cached = self._scopes.get(scope)
        if cached is not None:
            self._scopes.move_to_end(scope)
            return cached
        lock = self._loading.setdefault(scope, asyncio.Lock())
        async with lock:
            cached = self._scopes.get(scope)
            if cached is not None:
                return cached
            entries = await self.store.index_entries(scope)
            dims = self.embedder.dims
            index = _ScopeIndex(
                dims=dims,
                native=self._native,
                bm25=BM25(k1=self.config.bm25_k1, b=self.config.bm25_b),
            )
            # Entries without a vector, or with one of another embedder, are embedded
            # now and the vectors stored, so that this happens once.
            missing = [e for e in entries if e.embedding is None or len(e.embedding) != 4 * dims]
            fresh: dict[EntryId, Vector] = {}
            if missing:
                vectors = await self.embedder.embed(
                    [_dense_text(e) for e in missing], kind="passage"
                )
                fresh = {(e.kind, e.id): v for e, v in zip(missing, vectors, strict=True)}
                await self.store.put_embeddings(
                    [(kind, eid, to_bytes(v)) for (kind, eid), v in fresh.items()]
                )
            for entry in entries:
                eid = (entry.kind, entry.id)
                vector = fresh.get(eid)
                if vector is None and not index.native:
                    assert entry.embedding is not None
                    vector = from_bytes(entry.embedding)
                index.add(entry, vector)
            await self._maybe_vector_index(scope, index)
            self._keep(scope, index)
            self._loading.pop(scope, None)
            return index

    async def _maybe_vector_index(self, scope: str, index: _ScopeIndex) -> None:
        """A native store gets an ANN index for a scope once the scope is large."""
        if (
            index.native
            and scope not in self._vector_indexed
            and len(index.entries) >= self.config.vector_index_min_entries
        ):
            await self.store.ensure_vector_index(scope, dims=index.dims)
            self._vector_indexed.add(scope)

    async def index_message(self, message: StoredMessage, *, scope: str) -> None:
        """Index `message`: embed its words once, key it with its context, store both.

        The dense vector is of the message alone ("speaker: words"), computed once; the
        lexical key adds the date and the neighbouring turns of the scope's index. With
        `index_next_turn`, the previous message's key is rewritten to include this one
        as its following turn (text only, no new embedding).
        """
        index = await self._index(scope)
        previous, key, vector = await self._store_key(message, scope=scope, index=index)
        index.add(_entry(message, scope=scope, key=key), vector)
        await self._maybe_vector_index(scope, index)
        self._trim()
        if not self.config.index_next_turn or previous is None:
            return
        prev_key = message_key(
            previous, at=previous.at, previous=index.latest_before(previous.id), following=message
        )
        await self.store.put_message_key(
            previous.id, scope=scope, key=prev_key, embedding=None, keep_embedding=True
        )
        pos = index.position[("message", previous.id)]
        index.add(previous.model_copy(update={"key": prev_key}), index.rows[pos])

    async def reindex_message(self, message: StoredMessage, *, scope: str) -> None:
        """An edited message: its key and vector anew from its new words. The scope's
        cached index is dropped and read again at its next search."""
        index = await self._index(scope)
        if ("message", message.id) not in index.position:
            return
        await self._store_key(message, scope=scope, index=index)
        self.invalidate(scope)

    async def _store_key(
        self, message: StoredMessage, *, scope: str, index: _ScopeIndex
    ) -> tuple[IndexEntry | None, str, Vector]:
        """Embed `message` ("speaker: words"), key it after its previous turn, store both;
        returns that previous turn, the key and the vector."""
        previous = index.latest_before(message.id)
        vector = (
            await self.embedder.embed(
                [dense_text(message.author_name, message.text)], kind="passage"
            )
        )[0]
        key = message_key(message, at=message.sent_at, previous=previous)
        await self.store.put_message_key(
            message.id, scope=scope, key=key, embedding=to_bytes(vector)
        )
        return previous, key, vector

    async def search(
        self,
        query: str,
        *,
        scopes: Sequence[str],
        k: int = 10,
        exclude: Collection[EntryId] = (),
    ) -> list[Recalled]:
        """The `k` best entries of `scopes` for `query`; `exclude` is skipped."""
        if not query.strip() or k <= 0 or not scopes:
            return []
        indexes = [await self._index(scope) for scope in scopes]
        if not any(index.entries for index in indexes):
            return []
        qvec = (await self.embedder.embed([query], kind="query"))[0]
        qtokens = tokenize(query)
        qwords = {w.lower().strip("?!.,;:\"'") for w in query.replace("'s", " ").split()}
        cfg = self.config
        found: list[Recalled] = []
        for scope, index in zip(scopes, indexes, strict=True):
            if not index.entries:
                continue
            alive = np.array(index.alive, dtype=bool)
            for eid in exclude:
                pos = index.position.get(eid)
                if pos is not None:
                    alive[pos] = False
            candidates = np.flatnonzero(alive)
            if candidates.size == 0:
                continue
            lexical_all = index.bm25.scores(qtokens)
            if cfg.prf_docs > 0:
                lexical_all = self._feedback(index, qtokens, lexical_all, alive)
            lexical = lexical_all[candidates]
            if index.native:
                dense_all = await self._native_dense(scope, index, qvec, excluded=len(exclude))
            else:
                dense_all = (index.matrix @ qvec).astype(np.float32)
            if cfg.neighbour_weight:
                prev, nxt = index.neighbours
                padded = np.append(dense_all, np.float32(dense_all.mean()))
                dense_all = dense_all + cfg.neighbour_weight * 0.5 * (padded[prev] + padded[nxt])
            dense = dense_all[candidates]
            fused = cfg.lexical_weight * _zscore(lexical) + cfg.dense_weight * _zscore(dense)
            if cfg.speaker_boost and qwords:
                named = np.isin(index.name_array[candidates], list(qwords))
                fused = fused + cfg.speaker_boost * named
            top = np.argsort(-fused, kind="stable")[: max(k, 1)]
            found.extend(
                Recalled(entry=index.entries[candidates[i]], score=float(fused[i])) for i in top
            )
        found.sort(key=lambda r: -r.score)
        return found[:k]

    async def _native_dense(
        self, scope: str, index: _ScopeIndex, qvec: Vector, *, excluded: int
    ) -> Vector:
        """Dense scores from the store's own vector search (pgvector).

        Only the nearest `dense_candidates` come back; every other entry gets the lowest
        score seen, which is what it would at most have had among those.
        """
        limit = self.config.dense_candidates + excluded
        hits = await self.store.dense_search(scope, qvec.tolist(), limit=limit)
        floor = min((sim for _, _, sim in hits), default=0.0)
        dense = np.full(len(index.entries), floor, dtype=np.float32)
        for kind, row_id, sim in hits:
            pos = index.position.get((kind, row_id))
            if pos is not None:
                dense[pos] = sim
        return dense

    def _feedback(
        self,
        index: _ScopeIndex,
        qtokens: list[str],
        scores: npt.NDArray[np.float32],
        alive: npt.NDArray[np.bool_],
    ) -> npt.NDArray[np.float32]:
        """Rerun BM25 with the query plus the rarest terms of its best hits."""
        cfg = self.config
        live = np.where(alive, scores, -np.inf)
        top = np.argsort(-live)[: cfg.prf_docs]
        counts: dict[str, float] = {}
        n = len(index.bm25)
        for pos in top:
            if not np.isfinite(live[pos]) or live[pos] <= 0:
                continue
            for term in set(tokenize(index.entries[pos].key)):
                if term in qtokens:
                    continue
                df = len(index.bm25.postings.get(term, ()))
                counts[term] = counts.get(term, 0.0) + float(np.log(1 + n / (1 + df)))
        extra = sorted(counts, key=lambda t: -counts[t])[: cfg.prf_terms]
        if not extra:
            return scores
        out: npt.NDArray[np.float32] = scores + cfg.prf_weight * index.bm25.scores(extra)
        return out
