"""Forgetting, end to end through `/memory forget`, on SQLite and on Postgres.

The promise: once forgotten, the words are nowhere. Every text and binary column of
every table is scanned for them, and recall (the warm cache and a cold one) must not
return them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall
from brain.memory.types import Memory
from brain.ports import StoredMessage
from storage.longterm import SqlLongTermStore
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore
from tests.conftest import DM, GROUP
from tests.memory_kit import World, find_everywhere, make_world, person_keys

SECRET = "Zanzibar-7731"
NICKNAME = "Quokka-Bean"


@dataclass
class Seeded:
    world: World
    secret: Memory
    tea: Memory
    chess: Memory
    told: StoredMessage
    before: StoredMessage
    after: StoredMessage


async def seed(store: SqlMemoryStore) -> Seeded:
    w = await make_world(store)
    a, b = w.alice, w.bob
    before = await w.say(a, "hi tomo, how are you?")
    await w.answer(before, "Great, and you?")
    told = await w.say(a, f"my locker code is {SECRET}, keep it to yourself")
    await w.answer(told, f"Safe with me: {SECRET}.")
    after = await w.say(a, "what should I cook tonight?")
    await w.answer(after, "Curry!")
    tea_said = await w.say(a, "I really like green tea", chat=GROUP)
    chess_said = await w.say(b, "I play chess every Sunday", chat=GROUP)

    secret = await w.remember(f"Alice has a locker code {SECRET}", about=(a,), sources=(told,))
    secret = await w.longterm.update_memory(
        secret.id,
        text=f"Alice's locker code is {SECRET} (private)",
        importance=0.9,
        embedding=None,
        reason=f"she said {SECRET} is private",
        at=w.clock.now(),
    )
    tea = await w.remember("Alice likes green tea", about=(a,), sources=(tea_said,))
    chess = await w.remember("Bob plays chess on Sundays", about=(b,), sources=(chess_said,))
    await w.longterm.put_summary(
        kind="daily",
        subject=DM.key,
        day="2026-03-01",
        text=f"Alice: locker {SECRET}.",
        at=w.clock.now(),
    )
    await w.longterm.put_summary(
        kind="daily", subject=GROUP.key, day="2026-03-01", text="Tea and chess.", at=w.clock.now()
    )
    await w.longterm.put_summary(
        kind="profile", subject=str(a.id), text=f"Alice (locker {SECRET}).", at=w.clock.now()
    )
    # tomo's self-concept in each chat quotes what it said there
    await w.longterm.put_summary(
        kind="self", subject=DM.key, text=f"I keep Alice's {SECRET} safe.", at=w.clock.now()
    )
    await w.longterm.put_summary(
        kind="self", subject=GROUP.key, text="I like tea talk.", at=w.clock.now()
    )
    await w.longterm.put_summary(
        kind="profile", subject=str(b.id), text="Bob plays chess.", at=w.clock.now()
    )
    return Seeded(
        world=w, secret=secret, tea=tea, chess=chess, told=told, before=before, after=after
    )


async def recalled_texts(recall: Recall, query: str, scopes: list[str]) -> str:
    hits = await recall.search(query, scopes=scopes, k=50)
    return "\n".join(f"{h.entry.key}\n{h.entry.text}" for h in hits)


async def test_forget_one_memory_leaves_no_trace(store: SqlMemoryStore) -> None:
    s = await seed(store)
    w = s.world
    scopes = [w.scope(w.alice), w.scope(w.alice, GROUP)]
    # the scanner and the recall see the secret before: the checks below mean something
    assert await find_everywhere(store.db, SECRET) == {
        "message.text",
        "message.segments_json",
        "message_key.key_text",
        "memory.text",
        "memory_version.text",
        "memory_version.reason",
        "summary.text",
    }
    assert SECRET in await recalled_texts(w.recall, "locker code", scopes)

    preview = await w.ask(f"/memory forget {s.secret.id}")
    assert SECRET in preview
    assert f"my locker code is {SECRET}" in preview
    assert f"/memory forget {s.secret.id} confirm" in preview
    assert await w.longterm.get_memory(s.secret.id) is not None  # nothing gone yet

    done = await w.ask(f"/memory forget {s.secret.id} confirm")
    assert done.startswith(f"Forgotten: #{s.secret.id}")
    assert "2 messages" in done  # what she said, and my reply

    assert await find_everywhere(store.db, SECRET) == set()
    assert await find_everywhere(store.db, "locker") == set()
    assert SECRET not in await recalled_texts(w.recall, f"locker code {SECRET}", scopes)
    cold = Recall(store=w.longterm, embedder=HashEmbedder())
    assert SECRET not in await recalled_texts(cold, f"locker code {SECRET}", scopes)

    # ... and nothing else went with it
    assert await w.longterm.get_memory(s.tea.id) == s.tea
    assert await w.longterm.get_memory(s.chess.id) == s.chess
    left = await w.longterm.messages([s.before.id, s.told.id, s.after.id])
    assert [m.id for m in left] == [s.before.id, s.after.id]
    # the neighbours' keys were rewritten around the gap and are still found
    assert "what should I cook tonight?" in await recalled_texts(cold, "cook tonight", scopes)
    assert await w.longterm.latest_summary(kind="daily", subject=DM.key, day="2026-03-01") is None
    assert await w.longterm.latest_summary(kind="daily", subject=GROUP.key, day="2026-03-01")
    assert await w.longterm.latest_summary(kind="self", subject=DM.key) is None
    assert await w.longterm.latest_summary(kind="self", subject=GROUP.key)
    assert w.rewritten == [w.alice.id]
    [profile] = await w.longterm.summary_versions(kind="profile", subject=str(w.alice.id))
    assert profile.text == "Profile: Alice likes green tea"
    assert len(await w.longterm.summary_versions(kind="profile", subject=str(w.bob.id))) == 1

    assert "no memory" in await w.ask(f"/memory show {s.secret.id}")
    assert "no memory" in await w.ask(f"/memory forget {s.secret.id} confirm")


async def test_forget_all_leaves_no_trace_of_what_was_said_or_remembered(
    store: SqlMemoryStore,
) -> None:
    s = await seed(store)
    w = s.world
    a, b = w.alice, w.bob
    # Bob tells the group something about Alice; it becomes a memory about her
    gossip = await w.say(b, f"Alice's nickname is {NICKNAME}", chat=GROUP)
    await w.remember(f"Alice is nicknamed {NICKNAME}", about=(a,), sources=(gossip,))
    # and something Alice said became a memory about Bob
    owes = await w.say(a, "Bob owes me five euros, Zanzibar-7731 style", chat=GROUP)
    derived = await w.remember("Bob owes Alice five euros", about=(b,), sources=(owes,))
    scopes = [w.scope(a), w.scope(a, GROUP)]
    assert SECRET in await recalled_texts(w.recall, "locker code", scopes)

    preview = await w.ask("/memory forget all")
    assert "3 memories, 5 messages" in preview
    assert "/memory forget all confirm" in preview
    assert await w.longterm.count_memories_about(a.id) == 3

    keys = await person_keys(store.db)  # her key is destroyed: the rows must be gone too
    done = await w.ask("/memory forget all confirm")
    assert done.startswith("Done: I forgot everything about you: 4 memories")

    for needle in (SECRET, NICKNAME, "locker", "green tea", "five euros", "cook tonight"):
        assert await find_everywhere(store.db, needle, keys=keys) == set(), needle
    for recall in (w.recall, Recall(store=w.longterm, embedder=HashEmbedder())):
        found = await recalled_texts(recall, f"locker {SECRET} {NICKNAME} tea", scopes)
        assert SECRET not in found
        assert NICKNAME not in found
        assert "green tea" not in found
    assert await w.longterm.messages_by(a.id) == []
    assert await w.longterm.count_memories_about(a.id) == 0
    assert await w.longterm.get_memory(derived.id) is None
    assert await w.longterm.summary_versions(kind="profile", subject=str(a.id)) == []
    # Bob's own things stay; his profile is written again without what Alice said
    assert await w.longterm.get_memory(s.chess.id) == s.chess
    assert "chess every Sunday" in await recalled_texts(w.recall, "chess", scopes)
    assert w.rewritten == [b.id]
    [bob_profile] = await w.longterm.summary_versions(kind="profile", subject=str(b.id))
    assert bob_profile.text == "Profile: Bob plays chess on Sundays"
    assert "don't remember anything about you" in await w.ask("/memory list")


async def test_forget_needs_confirmation_and_only_your_own(store: SqlMemoryStore) -> None:
    s = await seed(store)
    w = s.world
    for words in (
        f"/memory forget {s.secret.id}",
        f"/memory forget {s.secret.id} yes",
        "/memory forget all",
        "/memory forget all now",
        "/memory forget 2147483648 confirm",  # past the id range: no database error
    ):
        await w.ask(words)
    assert "no memory" in await w.ask(f"/memory forget {s.secret.id} confirm", person=w.bob)
    assert (await w.ask("/memory forget all confirm", person=w.bob)).startswith("Done")
    assert await w.longterm.get_memory(s.secret.id) == s.secret
    assert await w.longterm.get_memory(s.tea.id) == s.tea
    assert await w.longterm.get_memory(s.chess.id) is None  # Bob forgot his own
    assert "memory.text" in await find_everywhere(store.db, SECRET)
    assert await find_everywhere(store.db, "chess") == set()


def _raw_hits(folder: Path, needle: str) -> list[str]:
    return [f.name for f in sorted(folder.iterdir()) if needle.encode() in f.read_bytes()]


async def test_forgotten_words_are_not_left_in_the_sqlite_files(tmp_path: Path) -> None:
    """Not in a table, and not in the file's free pages or its write-ahead log either."""
    url = f"sqlite:///{tmp_path / 'tomo.db'}"
    await asyncio.to_thread(upgrade, url)
    first = SqlMemoryStore(url)
    s = await seed(first)
    await first.aclose()  # everything checkpointed into the database file
    assert await asyncio.to_thread(_raw_hits, tmp_path, SECRET) == ["tomo.db"]

    store = SqlMemoryStore(url)
    try:
        w = s.world
        w.store, w.longterm = store, SqlLongTermStore(store.db)
        w.recall = Recall(store=w.longterm, embedder=HashEmbedder())
        assert (await w.ask(f"/memory forget {s.secret.id} confirm")).startswith("Forgotten")
        assert await asyncio.to_thread(_raw_hits, tmp_path, SECRET) == []  # db and -wal
    finally:
        await store.aclose()
    assert await asyncio.to_thread(_raw_hits, tmp_path, SECRET) == []
