"""Encryption at rest, on SQLite and Postgres: nothing a person said or that is remembered
about them is stored in plaintext; forgetting a person destroys their key, so a backup
taken before cannot be read with the live keys (crypto-shredding)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from brain.memory.embed import HashEmbedder
from brain.memory.recall import Recall
from brain.memory.types import Memory
from brain.messages import Text
from brain.ports import NewMessage, StoredMessage
from storage.crypto import CryptoError, Encryption
from storage.database import Database
from storage.db import sqlite_path
from storage.keyring import Keyring
from storage.longterm import SqlLongTermStore
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, DM, GROUP, T0, TEST_ENCRYPTION
from tests.memory_kit import World, find_everywhere, make_world, person_keys

CANARY = "Xylophone-4417"
EVERY_SEALED_COLUMN = {
    "message.text",
    "message.segments_json",
    "message_edit.text",
    "message_edit.segments_json",
    "message_key.key_text",
    "memory.text",
    "memory_version.text",
    "memory_version.reason",
    "summary.text",
}


@dataclass
class Seeded:
    world: World
    said: StoredMessage  # Alice, in her DM (edited later)
    reply: StoredMessage  # tomo's answer to it
    bob_said: StoredMessage  # Bob, in the group
    memory: Memory  # about Alice, updated once


async def seed(store: SqlMemoryStore) -> Seeded:
    w = await make_world(store)
    a, b = w.alice, w.bob
    said = await w.say(a, f"my secret word is {CANARY}")
    reply = await w.answer(said, f"I will keep {CANARY} safe")
    bob_said = await w.say(b, f"Bob here, {CANARY} too", chat=GROUP)
    await w.answer(bob_said, f"noted, Bob: {CANARY}")
    memory = await w.remember(f"Alice's word is {CANARY}", about=(a,), sources=(said,))
    memory = await w.longterm.update_memory(
        memory.id,
        text=f"Alice's secret word is {CANARY}",
        importance=0.9,
        embedding=None,
        reason=f"restated {CANARY}",
        at=w.clock.now(),
    )
    await w.longterm.put_summary(
        kind="profile", subject=str(a.id), text=f"Alice ({CANARY}).", at=w.clock.now()
    )
    edited = await store.edit_message(
        DM,
        platform_message_id=said.platform_message_id or "",
        text=f"my secret word is {CANARY}!",
        segments=(Text(text=f"my secret word is {CANARY}!"),),
        edited_at=w.clock.now(),
    )
    assert edited is not None
    assert edited.text.endswith("!")
    await w.recall.reindex_message(edited, scope=w.scope(a))
    return Seeded(world=w, said=edited, reply=reply, bob_said=bob_said, memory=memory)


def _files_holding(folder: Path, needle: str) -> list[str]:
    return [f.name for f in sorted(folder.iterdir()) if needle.encode() in f.read_bytes()]


async def test_nothing_personal_is_stored_in_plaintext_and_all_of_it_reads_back(
    store: SqlMemoryStore, db_url: str
) -> None:
    s = await seed(store)
    w = s.world
    # the rows hold no plaintext (Postgres and SQLite alike, read with SQL)...
    assert await find_everywhere(store.db, CANARY, see_through=False) == set()
    assert await find_everywhere(store.db, "secret word", see_through=False) == set()
    # ...but all of it is there for whoever holds the keys
    assert await find_everywhere(store.db, CANARY) == EVERY_SEALED_COLUMN
    path = sqlite_path(db_url)
    if path is not None:  # and not in the bytes of the file or its write-ahead log
        await w.longterm.scrub_deleted()
        assert await asyncio.to_thread(_files_holding, path.parent, CANARY) == []

    # the store reads everything back in plaintext (decrypted now: nothing remembered)
    assert store.db.keyring is not None
    store.db.keyring.opened.clear()
    window = await store.recent_messages(DM, limit=10)
    assert [m.text for m in window] == [s.said.text, s.reply.text]
    assert window[0].segments == (Text(text=f"my secret word is {CANARY}!"),)
    assert await store.answer_to(s.said.id) == s.reply
    replies = await store.bot_replies(limit=10, context=2)
    assert [(r.reply.text, [m.text for m in r.before]) for r in replies] == [
        (f"noted, Bob: {CANARY}", [s.bob_said.text]),
        (s.reply.text, [s.said.text]),
    ]
    assert [m.text for m in await w.longterm.messages_by(w.alice.id)] == [s.said.text]
    assert await w.longterm.get_memory(s.memory.id) == s.memory
    [old] = await w.longterm.memory_history(s.memory.id)
    assert (old.text, old.reason) == (f"Alice's word is {CANARY}", f"restated {CANARY}")
    profile = await w.longterm.latest_summary(kind="profile", subject=str(w.alice.id))
    assert profile is not None
    assert profile.text == f"Alice ({CANARY})."
    keys = {e.id: e.key for e in await w.longterm.index_entries(w.scope(w.alice))}
    assert CANARY in keys[s.said.id]
    hits = await w.recall.search(f"secret word {CANARY}", scopes=[w.scope(w.alice)], k=5)
    assert any(CANARY in h.entry.text for h in hits)
    exported = await w.ask_all("/memory export")
    assert exported.count(CANARY) >= 4  # message, memory, its history, profile


async def test_a_reply_is_sealed_with_the_key_of_the_person_it_answers(
    store: SqlMemoryStore,
) -> None:
    s = await seed(store)
    w = s.world
    assert set(await person_keys(store.db)) == {w.alice.id, w.bob.id}
    async with store.db.engine.connect() as conn:
        query = text("SELECT text FROM message WHERE id = :id")
        row = (await conn.execute(query, {"id": s.reply.id})).one()
    assert row.text.startswith("enc1:")
    other = Database(store.url, encryption=TEST_ENCRYPTION)
    try:
        async with other.engine.begin() as conn:  # only Alice's key is lost
            await conn.execute(
                text("DELETE FROM person_key WHERE person_id = :p"), {"p": w.alice.id}
            )
        with pytest.raises(CryptoError, match="gone"):
            await SqlMemoryStore(store.url, database=other).recent_messages(DM, limit=10)
        group = await SqlMemoryStore(store.url, database=other).recent_messages(GROUP, limit=10)
        assert [m.text for m in group] == [s.bob_said.text, f"noted, Bob: {CANARY}"]
    finally:
        await other.aclose()


async def test_forget_all_shreds_what_a_backup_holds(sqlite_store: SqlMemoryStore) -> None:
    """A copy of the database taken before `/memory forget all` cannot be read with the
    live keys afterwards: the person's key is gone. Other people's rows still can."""
    s = await seed(sqlite_store)
    w = s.world
    await w.longterm.scrub_deleted()  # everything in the main file
    live = sqlite_path(sqlite_store.url)
    assert live is not None
    backup = live.with_name("backup.db")
    await asyncio.to_thread(shutil.copyfile, live, backup)

    done = await w.ask("/memory forget all confirm")
    assert done.startswith("Done")
    assert w.alice.id not in await person_keys(sqlite_store.db)

    url = f"sqlite:///{backup}"
    old = Database(url)
    old.keyring = sqlite_store.db.keyring  # the live keyring, reading the backup's rows
    try:
        old_store, old_lt = SqlMemoryStore(url, database=old), SqlLongTermStore(old)
        reads: list[Callable[[], Awaitable[object]]] = [
            lambda: old_store.recent_messages(DM, limit=10),
            lambda: old_lt.messages_by(w.alice.id),
            lambda: old_lt.get_memory(s.memory.id),
            lambda: old_lt.memory_history(s.memory.id),
            lambda: old_lt.latest_summary(kind="profile", subject=str(w.alice.id)),
            lambda: old_lt.index_entries(w.scope(w.alice)),
        ]
        for read in reads:
            with pytest.raises(CryptoError, match=f"key of person {w.alice.id} is gone"):
                await read()
        # Bob kept his key: his part of the backup still reads
        assert [m.text for m in await old_lt.messages_by(w.bob.id)] == [s.bob_said.text]
    finally:
        await old.aclose()

    # The reason operators keep person_key out of backups: a backup holding the wrapped
    # keys, with the master key, reads everything.
    whole = Database(url, encryption=TEST_ENCRYPTION)
    try:
        said = await SqlLongTermStore(whole).messages_by(w.alice.id)
        assert [m.text for m in said] == [s.said.text]
    finally:
        await whole.aclose()


async def test_a_wrong_master_key_or_none_is_a_clear_error(store: SqlMemoryStore) -> None:
    s = await seed(store)
    wrong = SqlMemoryStore(store.url, encryption=Encryption(master_key=b"\x07" * 32))
    none = SqlMemoryStore(store.url)
    try:
        with pytest.raises(CryptoError, match="TOMO_CRYPTO__MASTER_KEY"):
            await wrong.recent_messages(DM, limit=10)
        with pytest.raises(CryptoError, match="no master key"):
            await none.recent_messages(DM, limit=10)
        assert await none.count_messages(DM) == 2  # what is not encrypted still reads
        assert await store.recent_messages(DM, limit=1) == [s.reply]
    finally:
        await wrong.aclose()
        await none.aclose()


async def test_a_sealed_value_moved_to_another_row_kind_does_not_open(
    store: SqlMemoryStore,
) -> None:
    s = await seed(store)
    async with store.db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE memory SET text = (SELECT text FROM message WHERE id = :m)"),
            {"m": s.said.id},
        )
    with pytest.raises(CryptoError, match="cannot be decrypted"):
        await s.world.longterm.get_memory(s.memory.id)


async def test_encryption_off_writes_plaintext_and_still_reads_what_was_sealed(
    store: SqlMemoryStore,
) -> None:
    s = await seed(store)
    off = Database(
        store.url, encryption=Encryption(master_key=TEST_ENCRYPTION.master_key, encrypt=False)
    )
    try:
        plain = SqlMemoryStore(store.url, database=off)
        w = s.world
        w.store, w.longterm = plain, SqlLongTermStore(off)
        w.recall = Recall(store=w.longterm, embedder=HashEmbedder())
        later = await w.say(w.alice, "written with encryption off: Hollyhock")
        assert await find_everywhere(off, "Hollyhock", see_through=False) == {
            "message.text",
            "message.segments_json",
            "message_key.key_text",
        }
        window = await plain.recent_messages(DM, limit=10)
        assert [m.text for m in window] == [s.said.text, s.reply.text, later.text]
    finally:
        await off.aclose()


async def test_rows_written_before_encryption_still_read(db_url: str) -> None:
    before = SqlMemoryStore(db_url)
    try:
        w = await make_world(before)
        legacy = await w.say(w.alice, "from before encryption: Marigold")
    finally:
        await before.aclose()
    after = SqlMemoryStore(db_url, encryption=TEST_ENCRYPTION)
    try:
        w.store, w.longterm = after, SqlLongTermStore(after.db)
        w.recall = Recall(store=w.longterm, embedder=HashEmbedder())
        fresh = await w.say(w.alice, "after: Snapdragon")
        assert [m.text for m in await after.recent_messages(DM, limit=5)] == [
            legacy.text,
            fresh.text,
        ]
        assert await find_everywhere(after.db, "Marigold", see_through=False)
        assert await find_everywhere(after.db, "Snapdragon", see_through=False) == set()
    finally:
        await after.aclose()


@pytest.fixture
async def counted(store: SqlMemoryStore) -> AsyncIterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        statements.append(statement)

    event.listen(store.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(store.db.engine.sync_engine, "before_cursor_execute", count)


async def test_keys_are_cached_so_a_message_costs_no_extra_statement(
    store: SqlMemoryStore, counted: list[str]
) -> None:
    def key_statements() -> list[str]:
        return [q for q in counted if "FROM person_key" in q or "INTO person_key" in q]

    w = await make_world(store)
    await w.say(w.alice, "first: her key is made")
    assert key_statements()
    counted.clear()
    await store.resolve_person(ALICE, seen_at=T0)  # brings her wrapped key along
    said = await w.say(w.alice, "second")
    await w.answer(said, "a reply")
    await store.recent_messages(DM, limit=10)
    # as without encryption: the person; each message's insert and its recall key
    # upserts (its own, the previous turn's); the window
    assert len(counted) == 1 + 2 * 3 + 1
    assert key_statements() == []


async def test_a_key_destroyed_elsewhere_is_noticed_when_the_cache_expires(
    store: SqlMemoryStore,
) -> None:
    w = await make_world(store)
    await w.say(w.alice, "hello")
    now = [0.0]
    other = Database(store.url)
    other.keyring = Keyring(
        Encryption(master_key=TEST_ENCRYPTION.master_key, cache_ttl_s=60),
        database=other,
        clock=lambda: now[0],
    )
    try:
        assert set(await other.keyring.opening_keys([w.alice.id])) == {w.alice.id}
        await w.ask("/memory forget all confirm")  # on the first "worker"
        now[0] = 59.0
        assert set(await other.keyring.opening_keys([w.alice.id])) == {w.alice.id}
        now[0] = 61.0
        assert await other.keyring.opening_keys([w.alice.id]) == {}
    finally:
        await other.aclose()


async def test_two_processes_making_a_new_persons_key_at_once_agree(db_url: str) -> None:
    one = SqlMemoryStore(db_url, encryption=TEST_ENCRYPTION)
    two = SqlMemoryStore(db_url, encryption=TEST_ENCRYPTION)
    try:
        w = await make_world(one)
        sealed = await asyncio.gather(
            *(
                db.seal(f"said {i}", kind="message.text", owner=w.alice.id)
                for i in range(4)
                for db in (one.db, two.db)
            )
        )
        for db in (one.db, two.db):
            opener = await db.opener([w.alice.id])
            opened = [opener.open(v, kind="message.text", owner=w.alice.id) for v in sealed]
            assert opened == [f"said {i}" for i in range(4) for _ in (1, 2)]
    finally:
        await one.aclose()
        await two.aclose()


async def test_another_worker_never_writes_with_a_forgotten_key(store: SqlMemoryStore) -> None:
    """Worker B has Alice's key cached when worker A forgets her. What she says next on
    B is encrypted with her new key (the person lookup brings the key along), and B
    reads what A wrote with her new key (a failed read with a cached key is retried)."""
    w = await make_world(store)
    await w.say(w.alice, "before")
    b_db = Database(store.url)
    b_db.keyring = Keyring(TEST_ENCRYPTION, database=b_db, clock=lambda: 0.0)  # never expires
    b = SqlMemoryStore(store.url, database=b_db)
    try:
        assert [m.text for m in await b.recent_messages(DM, limit=5)] == ["before"]
        await w.ask("/memory forget all confirm")  # on worker A
        on_a = await w.say(w.alice, "said on A, after")  # A makes her a new key
        assert [m.text for m in await b.recent_messages(DM, limit=5)] == [on_a.text]

        await w.ask("/memory forget all confirm")  # her second key goes too
        alice = await b.resolve_person(ALICE, seen_at=T0)  # B notices, with no statement
        said, _ = await b.add_message(
            NewMessage(
                chat=DM,
                author=alice,
                role="user",
                platform_message_id="on-b",
                text="said on B, after",
                segments=(Text(text="said on B, after"),),
                sent_at=T0,
            )
        )
        assert [m.text for m in await store.recent_messages(DM, limit=5)] == [said.text]
    finally:
        await b_db.aclose()
