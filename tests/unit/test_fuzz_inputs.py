"""Fuzz (hypothesis): commands and platform payloads nobody would write by hand.

What a person types, and what a platform (or whoever can reach the bot's endpoints)
sends, must never raise anything but a TomoError, whose message is written for people:
a command gets an answer (often the usage), a payload is read into an Inbound or
ignored (None).
"""

from __future__ import annotations

import asyncio
import copy
import string
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from telegram import Update

import bots.telegram  # noqa: F401  (opts in to PTB's timedelta durations)
from bots.discord.translate import BotIdentity as DiscordIdentity
from bots.discord.translate import read_message as read_discord
from bots.qq.translate import OwnMessages, read_event
from bots.telegram.translate import BotIdentity as TelegramIdentity
from bots.telegram.translate import read_message as read_telegram
from brain.commands import Command, parse_command, voice_command
from brain.errors import InputError, TomoError
from brain.llm.stub import StubModel
from brain.messages import Inbound
from brain.mind import Brain, BrainConfig, LongTermMemory
from brain.persona.card import PersonaCard
from brain.speech.pcm import Pcm
from brain.speech.service import Speech
from brain.stickers import sticker_command
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, DM, GROUP, inbound
from tests.memory_kit import World, make_world

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Strings that break careless code: empty, blank, NUL, a lone surrogate, numbers as text,
# markup of each platform, huge numbers.
TRICKY = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\ud800",
        "a\x00b",
        "0",
        "-1",
        "#0",
        "#-5",
        "1e400",
        "99999999999999999999999",
        "NaN",
        "/",
        "／",
        "@",
        "<@1100000000000000001>",
        "[CQ:at,qq=3889001234]",
        "[CQ:",
        "&#91;",
        '"',
        "'",
        "\\",
        "\u202e",
        "😀",
        "\r\n",
    ]
)
SAFE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"))


# --- the command parser ------------------------------------------------------------------


@FUZZ
@given(text=st.one_of(st.text(), TRICKY, st.builds("/{}".format, st.text())))
def test_parse_command_takes_any_text(text: str) -> None:
    for bot in (None, "tomo_bot"):
        command = parse_command(text, bot_username=bot)
        if command is not None:
            assert command.name
            assert all(isinstance(a, str) for a in command.args)


NAMES = st.one_of(
    st.sampled_from(
        ["memory", "MEMORY", "记忆", "記憶", "help", "start", "voice", "语音", "sticker", "表情"]
    ),
    st.text(st.sampled_from(string.ascii_letters + string.digits + "_-词"), min_size=1),
)
SUBCOMMANDS = st.sampled_from(
    [
        "list",
        "search",
        "show",
        "history",
        "forget",
        "profile",
        "export",
        "consolidate",
        "help",
        "all",
        "confirm",
        "on",
        "off",
        "accessory",
        "turtle",
        "none",
    ]
)
ARGUMENTS = st.lists(
    st.one_of(
        SUBCOMMANDS,
        st.integers(min_value=-5, max_value=2**80).map(str),
        st.integers(min_value=0, max_value=40).map("#{}".format),
        TRICKY.filter(lambda s: "\x00" not in s and "\ud800" not in s),
        SAFE_TEXT,
    ),
    max_size=5,
)
COMMANDS = st.builds(
    lambda slash, name, target, args: f"{slash}{name}{target} " + " ".join(args),
    st.sampled_from(["/", "／", " /"]),
    NAMES,
    st.sampled_from(["", "@tomo_bot", "@other"]),
    ARGUMENTS,
)


@pytest.fixture
async def brain_world(sqlite_store: SqlMemoryStore) -> tuple[Brain, World]:
    """A brain with long-term memory over a world where Alice and Bob have memories."""
    world = await make_world(sqlite_store)
    said = await world.say(world.alice, "my cat is called Miso")
    await world.remember("Alice's cat is called Miso", about=(world.alice,), sources=(said,))
    heard = await world.say(world.bob, "I play chess on Sundays", chat=GROUP)
    await world.remember("Bob plays chess on Sundays", about=(world.bob,), sources=(heard,))
    brain = Brain(
        store=sqlite_store,
        model=StubModel(),
        persona=PersonaCard(name="Tomo", self_description="A friend."),
        clock=world.clock,
        config=BrainConfig(model_recall=False),
        memory=LongTermMemory(longterm=world.longterm, recall=world.recall, blobs=world.blobs),
    )
    return brain, world


@FUZZ
@given(text=COMMANDS, in_group=st.booleans())
async def test_any_command_gets_an_answer(
    brain_world: tuple[Brain, World], text: str, in_group: bool
) -> None:
    brain, _ = brain_world
    if parse_command(text) is None:
        return  # not a command: an ordinary message, not what this fuzzes
    message = inbound(text, chat=GROUP if in_group else DM, author=ALICE)
    try:
        replies = await brain.handle(message)
    except TomoError:
        return
    assert replies
    assert all(reply.text.strip() for reply in replies)


class SilentVoice:
    """A text-to-speech engine that is there (so /voice reads its arguments) but mute."""

    name = "silent"
    rate = 16000

    def synthesize_pcm(self, text: str) -> Pcm:
        raise AssertionError("nothing is spoken here")

    async def synthesize_pcm_async(self, text: str) -> Pcm:
        raise AssertionError("nothing is spoken here")


@FUZZ
@given(args=ARGUMENTS)
async def test_voice_and_sticker_arguments_get_an_answer(
    brain_world: tuple[Brain, World], args: list[str]
) -> None:
    _, world = brain_world
    speech = Speech(stt=None, tts=SilentVoice())
    person = world.alice
    for name in ("voice", "sticker"):
        try:
            if name == "voice":
                answer = await voice_command(
                    tuple(args), person=person, store=world.store, speech=speech
                )
            else:
                answer = await sticker_command(
                    tuple(args), person=person, store=world.store, available=True
                )
        except TomoError:
            continue
        assert answer.strip()


# --- payloads ----------------------------------------------------------------------------

# Field names of the three platforms' payloads: mutations add these more than any others.
FIELDS = [
    "message_id",
    "from",
    "chat",
    "date",
    "text",
    "caption",
    "entities",
    "caption_entities",
    "offset",
    "length",
    "type",
    "user",
    "reply_to_message",
    "voice",
    "audio",
    "photo",
    "sticker",
    "file_id",
    "file_size",
    "duration",
    "width",
    "height",
    "id",
    "channel_id",
    "guild_id",
    "author",
    "content",
    "mentions",
    "mention_roles",
    "attachments",
    "filename",
    "size",
    "url",
    "content_type",
    "duration_secs",
    "flags",
    "message_reference",
    "referenced_message",
    "timestamp",
    "webhook_id",
    "post_type",
    "message_type",
    "user_id",
    "group_id",
    "sender",
    "nickname",
    "card",
    "time",
    "message",
    "raw_message",
    "data",
    "qq",
    "file",
    "name",
]
KEYS = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8))
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    TRICKY,
)
JSON_VALUES = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=12,
)


def _slots(value: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) inside `value`, at any depth."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield value, key
            yield from _slots(item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield value, i
            yield from _slots(item)


@st.composite
def mutations(draw: st.DrawFn, sample: dict[str, Any]) -> dict[str, Any]:
    """`sample` with a few values replaced, removed or added, anywhere in it."""
    data = copy.deepcopy(sample)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        slots = list(_slots(data))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            container[key] = draw(JSON_VALUES)
        elif action == "delete" and isinstance(container, dict):
            del container[key]
        elif action == "delete":
            container.pop(key)
        elif isinstance(container, dict):
            container[draw(KEYS)] = draw(JSON_VALUES)
        else:
            container.append(draw(JSON_VALUES))
    return data


def payloads(*samples: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Random JSON, random objects, and mutations of recorded payloads."""
    return st.one_of(
        JSON_VALUES,
        st.dictionaries(KEYS, JSON_VALUES, max_size=8),
        *(mutations(sample) for sample in samples),
    )


def inbound_of(read: Callable[[], Any]) -> Inbound | None:
    """The Inbound of what `read()` gives (None: not for tomo)."""
    incoming = read()
    return None if incoming is None else incoming.inbound()


def checked(read: Callable[[], Any]) -> None:
    """`read()` gives None or an Incoming whose Inbound can be built; or a TomoError."""
    refused: TomoError | None = None
    try:
        inbound_of(read)
    except TomoError as exc:
        refused = exc
    if refused is not None:
        assert str(refused).strip()


# Telegram: what a webhook or getUpdates hands PTB, read as the adapter reads it.

TG_ME = TelegramIdentity(id=7301234567, username="tomo_test_bot")
TG_ALICE = {"id": 4101, "is_bot": False, "first_name": "Alice", "username": "alice"}
TG_BOT = {"id": 7301234567, "is_bot": True, "first_name": "Tomo", "username": "tomo_test_bot"}
TG_GROUP = {"id": -1001234567890, "title": "Tea club", "type": "supergroup"}
TG_DM = {"id": 4101, "first_name": "Alice", "type": "private"}


def tg_update(chat: dict[str, Any], **fields: Any) -> dict[str, Any]:
    message = {"message_id": 52, "from": TG_ALICE, "chat": chat, "date": 1767225600, **fields}
    return {"update_id": 9001, "message": message}


TG_SAMPLES = (
    tg_update(
        TG_GROUP,
        text="/memory@tomo_test_bot search tea",
        entities=[{"offset": 0, "length": 21, "type": "bot_command"}],
    ),
    tg_update(
        TG_GROUP,
        text="@tomo_test_bot, hi",
        entities=[{"offset": 0, "length": 14, "type": "mention"}],
        reply_to_message={
            "message_id": 50,
            "from": TG_BOT,
            "chat": TG_GROUP,
            "date": 1767225500,
            "text": "x",
        },
    ),
    tg_update(
        TG_DM,
        caption="my cat",
        photo=[{"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 960}],
        voice={"file_id": "v1", "file_unique_id": "u", "duration": 4, "mime_type": "audio/ogg"},
        sticker={
            "file_id": "s1",
            "file_unique_id": "u",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": "😺",
        },
    ),
    {
        "update_id": 9002,
        "edited_message": {
            "message_id": 52,
            "from": TG_ALICE,
            "chat": TG_DM,
            "date": 1767225600,
            "edit_date": 1767225700,
            "text": "I live in Osaka",
        },
    },
)


def read_telegram_update(data: Any) -> Any:
    try:
        update = Update.de_json(data, None)
        message = update.message or update.edited_message
    except Exception:  # PTB could not read it: the adapter logs that and moves on
        return None
    if message is None:
        return None
    return read_telegram(message, me=TG_ME, edited=update.message is None)


def changed(sample: dict[str, Any], *path: str | int, to: Any) -> dict[str, Any]:
    """A copy of `sample` with the value at `path` replaced."""
    data = copy.deepcopy(sample)
    inner: Any = data
    for step in path[:-1]:
        inner = inner[step]
    inner[path[-1]] = to
    return data


@FUZZ
@given(data=payloads(*TG_SAMPLES))
@example(data=changed(TG_SAMPLES[0], "message", "chat", to=None))
@example(data=changed(TG_SAMPLES[2], "message", "voice", "duration", to=[]))
def test_telegram_payloads(data: Any) -> None:
    checked(lambda: read_telegram_update(data))


# Discord: what the gateway dispatches as MESSAGE_CREATE, made a discord.Message as
# discord.py makes it.

DC_BOT_ID = 1100000000000000001
DC_ME = DiscordIdentity(id=DC_BOT_ID, name="tomo")
DC_ALICE = {
    "id": "1100000000000000101",
    "username": "alice",
    "discriminator": "0",
    "global_name": "Alice",
    "avatar": None,
}
DC_BOT = {**DC_ALICE, "id": str(DC_BOT_ID), "username": "tomo", "global_name": None, "bot": True}


def dc_message(**fields: Any) -> dict[str, Any]:
    return {
        "id": "1100000000000000500",
        "channel_id": "1100000000000000600",
        "author": DC_ALICE,
        "content": f"<@{DC_BOT_ID}> hi",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [DC_BOT],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "pinned": False,
        "type": 0,
        "flags": 0,
        **fields,
    }


DC_SAMPLES = (
    dc_message(),
    dc_message(
        guild_id="1100000000000000700",
        type=19,
        content="why?",
        message_reference={"message_id": "1100000000000000499", "channel_id": "1"},
        referenced_message=dc_message(id="1100000000000000499", author=DC_BOT, content="x"),
    ),
    dc_message(
        content="",
        flags=1 << 13,
        attachments=[
            {
                "id": "1100000000000000800",
                "filename": "voice-message.ogg",
                "size": 2048,
                "url": "https://cdn.test/a.ogg",
                "proxy_url": "https://cdn.test/a.ogg",
                "content_type": "audio/ogg",
                "duration_secs": 3.5,
                "waveform": "AAAA",
                "flags": 1 << 13,
            },
            {
                "id": "1100000000000000801",
                "filename": "cat.png",
                "size": 4096,
                "url": "https://cdn.test/cat.png",
                "proxy_url": "https://cdn.test/cat.png",
                "content_type": "image/png",
                "width": 64,
                "height": 48,
            },
        ],
    ),
)


@pytest.fixture(scope="module")
def discord_state() -> Iterator[Any]:
    import discord  # after bots.discord, which quiets its import

    client = discord.Client(intents=discord.Intents.default())
    yield client._connection
    asyncio.run(client.close())


def read_discord_payload(state: Any, data: Any) -> Any:
    import discord

    try:
        channel, _ = state._get_guild_channel(data)
        message = discord.Message(state=state, channel=channel, data=data)
    except Exception:  # discord.py could not read it: not a message the adapter gets
        return None
    return read_discord(message, me=DC_ME)


@FUZZ
@given(data=payloads(*DC_SAMPLES))
@example(data=changed(DC_SAMPLES[0], "content", to=["hi"]))
@example(data=changed(DC_SAMPLES[0], "author", "username", to=None))
def test_discord_payloads(discord_state: Any, data: Any) -> None:
    checked(lambda: read_discord_payload(discord_state, data))


# QQ: OneBot v11 events, as NapCat sends them over the WebSocket.

QQ_SELF = 3889001234
QQ_ALICE = {"user_id": 1234567, "nickname": "Alice", "card": "", "role": "member"}


def qq_event(kind: str, message: Any, **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "self_id": QQ_SELF,
        "user_id": QQ_ALICE["user_id"],
        "time": 1767225600,
        "message_id": 880042,
        "message_type": kind,
        "sender": QQ_ALICE,
        "raw_message": message if isinstance(message, str) else "",
        "message": message,
        "post_type": "message",
        **extra,
    }
    if kind == "group":
        found.setdefault("group_id", 88990011)
    return found


QQ_SAMPLES = (
    qq_event("private", [{"type": "text", "data": {"text": "Hello there"}}]),
    qq_event(
        "group",
        [
            {"type": "reply", "data": {"id": "555"}},
            {"type": "at", "data": {"qq": str(QQ_SELF)}},
            {"type": "text", "data": {"text": " ，/memory list"}},
            {"type": "record", "data": {"file": "a.amr", "url": "http://x/a", "file_size": "12"}},
            {"type": "image", "data": {"file": "b.jpg", "url": "http://x/b"}},
        ],
    ),
    qq_event("group", f"[CQ:at,qq={QQ_SELF}] hi [CQ:image,file=a.jpg,url=http://x/a]"),
)


@FUZZ
@given(data=payloads(*QQ_SAMPLES))
@example(data=changed(QQ_SAMPLES[0], "message_id", to=""))
@example(data=changed(QQ_SAMPLES[0], "time", to=1e20))
@example(data=changed(QQ_SAMPLES[0], "sender", "nickname", to="\ud800"))
def test_qq_events(data: Any) -> None:
    if not isinstance(data, dict):
        return  # the OneBot client hands the translator JSON objects only
    own = OwnMessages()
    own.add("555")
    checked(lambda: read_event(data, self_id=QQ_SELF, own=own))


def test_malformed_messages_are_refused_with_a_clear_error(discord_state: Any) -> None:
    """What the fuzzing found: fields of the wrong kind, an empty id, a NUL (each was a
    stray AttributeError, TypeError or ValidationError), and a time past the year 9999
    (an OverflowError; now read as "just now")."""
    own = OwnMessages()
    for read, why in (
        (lambda: read_telegram_update(changed(TG_SAMPLES[0], "message", "chat", to=None)), ""),
        (lambda: read_discord_payload(discord_state, changed(DC_SAMPLES[0], "content", to=[])), ""),
        (lambda: read_event(changed(QQ_SAMPLES[0], "message_id", to=""), self_id=1, own=own), "id"),
        (
            lambda: read_event(
                changed(QQ_SAMPLES[0], "message", 0, "data", "text", to="a\x00b"),
                self_id=1,
                own=own,
            ),
            "NUL",
        ),
    ):
        with pytest.raises(InputError, match=r"sent a message tomo cannot read") as caught:
            inbound_of(read)
        assert why in str(caught.value)
    late = read_event(changed(QQ_SAMPLES[0], "time", to=1e20), self_id=1, own=own)
    assert late is not None
    assert late.inbound().sent_at.year < 9999


def test_a_command_is_a_command() -> None:
    """The fuzzed commands above do reach the commands (not only the usage)."""
    assert parse_command("／记忆@tomo_bot list 2", bot_username="tomo_bot") == Command(
        name="memory", args=("list", "2")
    )
