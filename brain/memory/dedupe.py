"""Deduplication of L1 memories: a new memory that restates one of the same scope
updates it (the old text goes to its history) instead of being added. Never deletes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from brain.memory.extract import Planned
from brain.memory.types import Memory, NewMemory
from brain.memory.vectors import Vector, from_bytes, normalize, to_bytes
from brain.ports import Embedder, LongTermStore


@dataclass(frozen=True, kw_only=True)
class Stored:
    added: int
    merged: int


def normalized(text: str) -> str:
    """Text compared for identity: case-folded words, punctuation and spacing ignored."""
    return " ".join(re.findall(r"\w+", text.casefold()))


async def _stored_vectors(
    known: Sequence[tuple[Memory, bytes | None]], *, embedder: Embedder
) -> list[Vector]:
    """The stored embeddings of `known`; missing or other-sized ones are embedded anew."""
    dims = embedder.dims
    out: list[Vector | None] = [
        from_bytes(raw) if raw is not None and len(raw) == dims * 4 else None for _, raw in known
    ]
    missing = [i for i, v in enumerate(out) if v is None]
    if missing:
        redone = await embedder.embed([known[i][0].text for i in missing], kind="passage")
        for i, v in zip(missing, redone, strict=True):
            out[i] = v
    return [normalize(np.asarray(v, dtype=np.float32)) for v in out if v is not None]


def merge_target(
    item: Planned,
    vector: Vector,
    memories: Sequence[Memory],
    vectors: Sequence[Vector],
    *,
    threshold: float,
) -> int | None:
    """The index of the memory `item` restates: same normalized text, else the most
    similar one about one of the same people, if its cosine is at least `threshold`.

    Dense models score "Alice likes tea" and "Bob likes tea" as near twins, so a cosine
    match alone never merges memories about different people.
    """
    if not memories:
        return None
    same = normalized(item.text)
    for i, m in enumerate(memories):
        if normalized(m.text) == same:
            return i
    sims = np.asarray(vectors, dtype=np.float32) @ vector
    about = set(item.about)
    for i, m in enumerate(memories):
        if not about & set(m.about):
            sims[i] = -np.inf
    best = int(np.argmax(sims))
    return best if float(sims[best]) >= threshold else None


async def store_deduplicated(
    items: Sequence[Planned],
    *,
    scope: str,
    longterm: LongTermStore,
    embedder: Embedder,
    threshold: float,
    at: datetime,
) -> Stored:
    """Add each item to `scope`, or merge it into the memory it restates (which takes
    the new text, the higher importance and the new sources; history keeps the old)."""
    known = await longterm.memory_embeddings(scope)
    memories = [m for m, _ in known]
    vectors = await _stored_vectors(known, embedder=embedder)
    fresh = normalize(
        np.asarray(await embedder.embed([p.text for p in items], kind="passage"), np.float32)
    )
    added = merged = 0
    for item, vector in zip(items, fresh, strict=True):
        target = merge_target(item, vector, memories, vectors, threshold=threshold)
        if target is None:
            stored = await longterm.add_memory(
                NewMemory(
                    scope=scope,
                    text=item.text,
                    about=item.about,
                    source_message_ids=item.source_message_ids,
                    importance=item.importance,
                    created_at=at,
                    embedding=to_bytes(vector),
                )
            )
            memories.append(stored)
            vectors.append(vector)
            added += 1
            continue
        old = memories[target]
        cited = ", ".join(str(i) for i in item.source_message_ids)
        memories[target] = await longterm.update_memory(
            old.id,
            text=item.text,
            importance=max(old.importance, item.importance),
            embedding=to_bytes(vector),
            reason=f"merged: restated in message {cited}",
            at=at,
            add_sources=item.source_message_ids,
        )
        vectors[target] = vector
        merged += 1
    return Stored(added=added, merged=merged)
