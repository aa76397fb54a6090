"""`/memory`: what a person can see of what tomo keeps about them (real SQLite stores)."""

from __future__ import annotations

import json
import re

import pytest

from brain.blobs import UnknownBlobError
from brain.commands import Command, parse_command, run_command
from brain.errors import ModelError
from brain.memory.showing import USAGE
from brain.messages import Document, Sticker, Text, Voice
from brain.ports import NewMessage
from storage.sql import SqlMemoryStore
from tests.conftest import DM, GROUP
from tests.memory_kit import World, make_world


@pytest.fixture
async def world(sqlite_store: SqlMemoryStore) -> World:
    return await make_world(sqlite_store)


# --- parsing and usage ---------------------------------------------------------------------


def test_chinese_alias_and_full_width_slash_mean_memory() -> None:
    assert parse_command("/记忆 list 2") == Command(name="memory", args=("list", "2"))
    assert parse_command("／记忆 show 3") == Command(name="memory", args=("show", "3"))
    assert parse_command("/MEMORY forget all") == Command(name="memory", args=("forget", "all"))


@pytest.mark.parametrize(
    "words",
    [
        "/memory",
        "/memory help",
        "/memory frobnicate",
        "/memory show",
        "/memory show abc",
        "/memory show 0",
        "/memory show -3",
        "/memory show 1 2",
        "/memory history x",
        "/memory list x",
        "/memory list 0",
        "/memory list 1 2",
        "/memory search",
        "/memory forget",
        "/memory forget x",
        "/memory forget 1 now",
        "/memory forget all please",
        "/memory profile me",
        "/记忆 ?",
    ],
)
async def test_bad_input_gets_the_usage(world: World, words: str) -> None:
    answer = await world.ask(words)
    assert answer == USAGE
    assert "/memory forget <id>" in answer


async def test_help_lists_memory_and_unknown_commands_say_so(world: World) -> None:
    [help_reply] = await world.run("/help", chat=GROUP)
    assert "/memory" in help_reply.text
    assert not help_reply.private  # help is about tomo, not about anyone
    assert help_reply.reply_to is not None
    assert await world.ask("/frobnicate") == "Unknown command /frobnicate. Try /help."


# --- list ------------------------------------------------------------------------------------


async def test_list_when_nothing_is_remembered(world: World) -> None:
    assert "don't remember anything about you yet" in await world.ask("/memory list")


async def test_list_pages_ten_at_a_time_and_only_your_own(world: World) -> None:
    mine = [
        await world.remember(f"Alice fact number {i}", about=(world.alice,), scope="dm:1")
        for i in range(23)
    ]
    await world.remember("Bob fact", about=(world.bob,), scope="dm:2")

    page1 = await world.ask("/memory list")
    assert "page 1 of 3" in page1
    assert "23 memories" in page1
    lines = re.findall(r"^#(\d+) (.*)$", page1, flags=re.MULTILINE)
    assert [int(i) for i, _ in lines] == [m.id for m in mine[:10]]
    assert lines[0][1] == "Alice fact number 0"
    assert "/memory list 2" in page1

    page3 = await world.ask("/memory list 3")
    assert "page 3 of 3" in page3
    assert [int(i) for i in re.findall(r"^#(\d+) ", page3, flags=re.MULTILINE)] == [
        m.id for m in mine[20:]
    ]
    assert "/memory list 4" not in page3
    assert "Bob fact" not in page1 + page3

    assert "no page 4" in await world.ask("/memory list 4")
    bobs = await world.ask("/memory list", person=world.bob)
    assert "Bob fact" in bobs
    assert "Alice" not in bobs
    assert "page 1 of 1" in bobs


# --- search ----------------------------------------------------------------------------------


async def test_search_finds_your_matching_memories_only(world: World) -> None:
    said = await world.say(world.alice, "My sister May lives in Osaka")
    sister = await world.remember(
        "Alice's sister is called May", about=(world.alice,), sources=(said,)
    )
    await world.remember("Alice moved to Osaka in June 2023", about=(world.alice,), sources=(said,))
    await world.remember("Alice likes green tea", about=(world.alice,), sources=(said,))
    bob_said = await world.say(world.bob, "my sister is Jane", chat=GROUP)
    await world.remember("Bob's sister is called Jane", about=(world.bob,), sources=(bob_said,))

    answer = await world.ask("/memory search sisters")
    assert f"#{sister.id} Alice's sister is called May" in answer
    assert "Osaka" not in answer
    assert "green tea" not in answer
    assert "Jane" not in answer  # Bob's memory, though the words match

    assert "Nothing I remember about you matches" in await world.ask("/memory search volcano")
    # a fragment no word matches is still found by plain substring
    assert "Osaka in June" in await world.ask("/memory search 'saka in Ju'")
    assert "Jane" in await world.ask("/memory search sister", person=world.bob, chat=GROUP)


# --- show and history ------------------------------------------------------------------------


async def test_show_gives_provenance_dates_and_recall_count(world: World) -> None:
    said = await world.say(world.alice, "My sister May just had a baby!")
    reply = await world.answer(said, "Congratulations to May!")
    memory = await world.remember(
        "Alice's sister May had a baby", about=(world.alice,), sources=(said,)
    )
    await world.longterm.mark_recalled([memory.id], at=world.clock.now())
    await world.longterm.mark_recalled([memory.id], at=world.clock.now())

    answer = await world.ask(f"/memory show {memory.id}")
    assert answer.startswith(f"#{memory.id} Alice's sister May had a baby")
    assert (
        "2026-03-01 12:01 UTC, Alice in our telegram DM: My sister May just had a baby!" in answer
    )
    assert f"Remembered {memory.created_at:%Y-%m-%d %H:%M} UTC" in answer
    assert "Recalled 2 times, last 2026-03-02 12:00 UTC" in answer
    assert "our direct messages" in answer
    assert reply.text not in answer  # provenance is the message itself, not my reply
    assert answer == await world.ask(f"/memory show #{memory.id}")


async def test_history_lists_earlier_versions_with_reasons(world: World) -> None:
    memory = await world.remember("Alice lives in Kyoto", about=(world.alice,), scope="dm:1")
    assert "has not changed" in await world.ask(f"/memory history {memory.id}")
    await world.longterm.update_memory(
        memory.id,
        text="Alice lives in Osaka",
        importance=0.6,
        embedding=None,
        reason="she moved in June",
        at=world.clock.now(),
    )
    answer = await world.ask(f"/memory history {memory.id}")
    assert f"#{memory.id} now: Alice lives in Osaka" in answer
    assert "until 2026-03-02 12:00 UTC: Alice lives in Kyoto (she moved in June)" in answer
    assert "/memory history" in await world.ask(f"/memory show {memory.id}")


async def test_nobody_sees_anyone_elses_memory(world: World) -> None:
    said = await world.say(world.alice, "my diary password is hunter2")
    memory = await world.remember(
        "Alice's diary password is hunter2", about=(world.alice,), sources=(said,)
    )
    missing = memory.id + 1000
    for sub in ("show", "history", "forget"):
        theirs = await world.ask(f"/memory {sub} {memory.id}", person=world.bob)
        nothing = await world.ask(f"/memory {sub} {missing}", person=world.bob)
        # exactly the answer for an id that does not exist: nothing is revealed
        assert theirs == nothing.replace(str(missing), str(memory.id))
        assert "hunter2" not in theirs
    await world.ask(f"/memory forget {memory.id} confirm", person=world.bob)
    assert await world.longterm.get_memory(memory.id) == memory
    for words in ("/memory list", "/memory search diary password", "/memory export"):
        assert "hunter2" not in await world.ask_all(words, person=world.bob)
    # a huge id names no memory rather than failing
    assert "no memory #99999999999999" in await world.ask("/memory show 99999999999999")


async def test_a_shared_memory_is_seen_by_each_person_it_is_about(world: World) -> None:
    said = await world.say(world.alice, "Bob and I are getting married", chat=GROUP)
    memory = await world.remember(
        "Alice and Bob are getting married", about=(world.alice, world.bob), sources=(said,)
    )
    for person in (world.alice, world.bob):
        assert "getting married" in await world.ask(f"/memory show {memory.id}", person=person)


# --- privacy in groups ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "words",
    [
        "/memory",
        "/memory list",
        "/memory search tea",
        "/memory show {id}",
        "/memory history {id}",
        "/memory forget {id}",
        "/memory profile",
        "/memory export",
        "/memory consolidate",
        "/记忆 list",
    ],
)
async def test_memory_replies_in_a_group_are_private(world: World, words: str) -> None:
    said = await world.say(world.alice, "I like tea", chat=GROUP)
    memory = await world.remember("Alice likes tea", about=(world.alice,), sources=(said,))
    command = words.format(id=memory.id)
    group_replies = await world.run(command, chat=GROUP)
    assert group_replies
    assert all(r.private for r in group_replies)
    assert all(r.chat == GROUP for r in group_replies)
    dm_replies = await world.run(command, chat=DM)
    assert not any(r.private for r in dm_replies)


# --- profile, consolidate, export --------------------------------------------------------------


async def test_profile_shows_the_latest_version(world: World) -> None:
    assert "haven't written a profile" in await world.ask("/memory profile")
    for words in ("Alice likes tea.", "Alice likes tea and lives in Osaka."):
        await world.longterm.put_summary(
            kind="profile", subject=str(world.alice.id), text=words, at=world.clock.now()
        )
    await world.longterm.put_summary(
        kind="profile", subject=str(world.bob.id), text="Bob plays chess.", at=world.clock.now()
    )
    answer = await world.ask("/memory profile")
    assert "version 2" in answer
    assert answer.endswith("Alice likes tea and lives in Osaka.")
    assert "chess" not in answer


async def test_consolidate_runs_for_this_chat_and_reports(world: World) -> None:
    answer = await world.ask("/memory consolidate", chat=GROUP)
    assert answer == "Consolidated 3 new messages into 1 memory."
    assert world.consolidated == [GROUP]


async def test_errors_a_person_can_cause_are_answered_not_raised(world: World) -> None:
    async def broken(chat: object) -> str:
        raise ModelError("the language model is not answering")

    ctx = world.ctx(world.alice)
    ctx = type(ctx)(**{**ctx.__dict__, "consolidate": broken})
    [reply] = await run_command(Command(name="memory", args=("consolidate",)), ctx)
    assert reply.text == "Sorry, that did not work: the language model is not answering"


async def test_export_is_a_json_document_of_everything_about_you(world: World) -> None:
    said = await world.say(world.alice, "I moved to Osaka 🏯")
    await world.answer(said, "Nice!")
    memory = await world.remember("Alice lives in Kyoto", about=(world.alice,), sources=(said,))
    await world.longterm.update_memory(
        memory.id,
        text="Alice lives in Osaka",
        importance=0.7,
        embedding=None,
        reason="she moved",
        at=world.clock.now(),
    )
    await world.longterm.put_summary(
        kind="profile", subject=str(world.alice.id), text="Alice, in Osaka.", at=world.clock.now()
    )
    bob_said = await world.say(world.bob, "Bob's bank PIN is 0000", chat=GROUP)
    await world.remember("Bob's PIN is 0000", about=(world.bob,), sources=(bob_said,))

    [reply] = await world.run("/memory export")
    text, doc = reply.segments
    assert isinstance(text, Text)
    assert isinstance(doc, Document)
    assert "1 message, 1 memory, 1 profile version" in text.text
    assert doc.mime == "application/json"
    assert doc.filename == f"tomo-export-{world.alice.id}-2026-03-02.json"
    data = await world.blobs.get(doc.blob_key)
    assert doc.size_bytes == len(data)
    export = json.loads(data)
    assert export["person"]["id"] == world.alice.id
    assert [m["text"] for m in export["messages"]] == ["I moved to Osaka 🏯"]
    assert export["messages"][0]["chat"] == DM.key
    [mem] = export["memories"]
    assert mem["text"] == "Alice lives in Osaka"
    assert mem["source_message_ids"] == [said.id]
    assert [(v["text"], v["reason"]) for v in mem["history"]] == [
        ("Alice lives in Kyoto", "she moved")
    ]
    assert [p["text"] for p in export["profile_versions"]] == ["Alice, in Osaka."]
    assert "0000" not in data.decode()  # nothing of Bob's


async def test_forgetting_deletes_the_media_of_the_forgotten_messages(world: World) -> None:
    voice = await world.blobs.put(b"OggS my voice telling the secret", mime="audio/ogg")
    sticker = await world.blobs.put(b"RIFF shared happy sticker", mime="image/webp")
    said, _ = await world.store.add_message(
        NewMessage(
            chat=DM,
            author=world.alice,
            role="user",
            platform_message_id="v1",
            text="my secret, spoken",
            segments=(Voice(blob_key=voice, duration_s=2.0, transcript="my secret, spoken"),),
            sent_at=world.clock.now(),
        )
    )
    await world.store.add_message(
        NewMessage(
            chat=DM,
            author=None,
            role="assistant",
            platform_message_id=None,
            text="ok",
            segments=(Text(text="ok"), Sticker(blob_key=sticker, size_bytes=3, emotion="happy")),
            sent_at=world.clock.now(),
            answers_id=said.id,
        )
    )
    memory = await world.remember(
        "Alice has a spoken secret", about=(world.alice,), sources=(said,)
    )
    assert (await world.ask(f"/memory forget {memory.id} confirm")).startswith("Forgotten")
    with pytest.raises(UnknownBlobError):
        await world.blobs.get(voice)
    assert await world.blobs.get(sticker)  # a sticker is a shared render, not hers
