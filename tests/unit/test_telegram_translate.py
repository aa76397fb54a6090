"""bots/telegram/translate.py on recorded Bot API payloads (no network), and the token
filter of bots/telegram/logs.py."""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from telegram import Message

import bots.telegram  # noqa: F401  (opts in to PTB's timedelta durations)
from bots.telegram.logs import MASK, SecretFilter
from bots.telegram.translate import (
    BotIdentity,
    read_message,
    split_text,
)
from bots.textsplit import utf16_len
from brain.messages import Text

ME = BotIdentity(id=7301234567, username="tomo_test_bot")
ALICE: dict[str, Any] = {
    "id": 4101,
    "is_bot": False,
    "first_name": "Alice",
    "last_name": "Liddell",
    "username": "alice",
    "language_code": "en",
}
GROUP: dict[str, Any] = {"id": -1001234567890, "title": "Tea club", "type": "supergroup"}
DM: dict[str, Any] = {"id": 4101, "first_name": "Alice", "username": "alice", "type": "private"}
BOT_USER: dict[str, Any] = {
    "id": 7301234567,
    "is_bot": True,
    "first_name": "Tomo",
    "username": "tomo_test_bot",
}


def message(chat: dict[str, Any], **fields: Any) -> Message:
    payload = {"message_id": 52, "from": ALICE, "chat": chat, "date": 1767225600, **fields}
    return Message.de_json(payload, None)


def test_a_private_text_is_for_the_bot() -> None:
    got = read_message(message(DM, text="Hello there"), me=ME)
    assert got is not None
    assert got.to_bot
    assert (got.id, got.chat.key, got.chat.kind) == ("52", "telegram:4101", "dm")
    assert (got.author.user_id, got.author.display_name) == ("4101", "Alice Liddell")
    assert got.sent_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert got.inbound().segments == (Text(text="Hello there"),)


def test_a_group_message_without_address_is_overheard() -> None:
    got = read_message(message(GROUP, text="see you on Friday"), me=ME)
    assert got is not None
    assert not got.to_bot
    assert got.chat.kind == "group"


@pytest.mark.parametrize(
    ("text", "entities", "read_as"),
    [
        # a mention by username (the leading one is not part of what the brain reads)
        (
            "@tomo_test_bot, what's new?",
            [{"offset": 0, "length": 14, "type": "mention"}],
            "what's new?",
        ),
        (
            "ask @Tomo_Test_Bot about it",
            [{"offset": 4, "length": 14, "type": "mention"}],
            "ask @Tomo_Test_Bot about it",
        ),
        # a mention of a bot without a username (text_mention)
        (
            "Tomo, hi",
            [{"offset": 0, "length": 4, "type": "text_mention", "user": BOT_USER}],
            "Tomo, hi",
        ),
        # commands: /cmd@bot is rewritten to /cmd; a bare command at the start counts
        (
            "/memory@tomo_test_bot search tea",
            [{"offset": 0, "length": 21, "type": "bot_command"}],
            "/memory search tea",
        ),
        ("/help", [{"offset": 0, "length": 5, "type": "bot_command"}], "/help"),
        # emoji before a mention: offsets count UTF-16 units
        (
            "🍵🍵 @tomo_test_bot tea?",
            [{"offset": 5, "length": 14, "type": "mention"}],
            "🍵🍵 @tomo_test_bot tea?",
        ),
    ],
)
def test_group_messages_addressed_to_the_bot(
    text: str, entities: list[dict[str, Any]], read_as: str
) -> None:
    got = read_message(message(GROUP, text=text, entities=entities), me=ME)
    assert got is not None
    assert got.to_bot
    assert got.text == read_as


def test_a_reply_to_the_bot_is_for_the_bot() -> None:
    earlier = {"message_id": 50, "from": BOT_USER, "chat": GROUP, "date": 1767225500, "text": "x"}
    got = read_message(message(GROUP, text="why?", reply_to_message=earlier), me=ME)
    assert got is not None
    assert got.to_bot
    assert got.reply_to == "50"


def test_not_ours_at_all() -> None:
    other_bot = [{"offset": 0, "length": 16, "type": "bot_command"}]
    assert read_message(message(GROUP, text="/help@other_bot", entities=other_bot), me=ME) is None
    own = {"message_id": 9, "from": BOT_USER, "chat": GROUP, "date": 1767225600, "text": "me"}
    assert read_message(Message.de_json(own, None), me=ME) is None
    channel = {"id": -100555, "title": "News", "type": "channel"}
    assert read_message(message(channel, text="post"), me=ME) is None
    assert read_message(message(GROUP, new_chat_title="Tea club 2"), me=ME) is None
    not_us = [{"offset": 0, "length": 13, "type": "mention"}]
    got = read_message(message(GROUP, text="@tomo_testbot hi", entities=not_us), me=ME)
    assert got is not None
    assert not got.to_bot


def test_media_are_named_for_fetching() -> None:
    voice = {"file_id": "v1", "file_unique_id": "u", "duration": 4, "mime_type": "audio/ogg"}
    got = read_message(message(DM, voice=voice), me=ME)
    assert got is not None
    (ref,) = got.media
    assert (ref.kind, ref.file_id, ref.mime, ref.duration_s) == ("voice", "v1", "audio/ogg", 4.0)

    sizes = [
        {"file_id": "small", "file_unique_id": "a", "width": 90, "height": 67, "file_size": 1000},
        {"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 960, "file_size": 9e4},
        {"file_id": "mid", "file_unique_id": "c", "width": 320, "height": 240, "file_size": 9000},
    ]
    got = read_message(message(GROUP, photo=sizes, caption="my cat"), me=ME)
    assert got is not None
    (ref,) = got.media
    assert (ref.kind, ref.file_id, ref.width, ref.height) == ("image", "big", 1280, 960)
    assert got.text == "my cat"

    sticker = {
        "file_id": "s1",
        "file_unique_id": "u",
        "type": "regular",
        "width": 512,
        "height": 512,
        "is_animated": True,
        "is_video": False,
        "emoji": "😺",
    }
    got = read_message(message(DM, sticker=sticker), me=ME)
    assert got is not None
    (ref,) = got.media
    assert (ref.kind, ref.mime, ref.emoji) == ("sticker", "application/x-tgsticker", "😺")


def test_an_edit_keeps_the_message_id() -> None:
    got = read_message(
        message(DM, text="I live in Osaka", edit_date=1767225700), me=ME, edited=True
    )
    assert got is not None
    assert got.edited
    assert got.id == "52"
    assert got.sent_at == datetime(2026, 1, 1, 0, 1, 40, tzinfo=UTC)


# splitting ------------------------------------------------------------------------------


def test_short_text_is_one_piece() -> None:
    assert split_text("  hello  ") == ["hello"]
    assert split_text("   ") == []


def test_split_prefers_paragraphs_then_sentences_then_words() -> None:
    text = "First paragraph here.\n\nSecond one, a bit longer than that."
    assert split_text(text, limit=40) == [
        "First paragraph here.",
        "Second one, a bit longer than that.",
    ]
    text = "One sentence here. Another sentence there. And a third."
    assert split_text(text, limit=45) == [
        "One sentence here. Another sentence there.",
        "And a third.",
    ]
    assert split_text("alpha beta gamma delta", limit=12) == ["alpha beta", "gamma delta"]


def test_split_counts_utf16_units_and_cuts_a_long_word() -> None:
    emoji = "😀" * 3000  # 6000 UTF-16 units
    pieces = split_text(emoji)
    assert [utf16_len(p) for p in pieces] == [4096, 6000 - 4096]
    assert "".join(pieces) == emoji
    assert split_text("x" * 10, limit=4) == ["xxxx", "xxxx", "xx"]


def test_split_of_cjk_sentences() -> None:
    text = "今日は晴れです。明日は雨でしょう。"
    assert split_text(text, limit=10) == ["今日は晴れです。", "明日は雨でしょう。"]


# the token filter -------------------------------------------------------------------------


def test_the_token_is_masked_in_messages_and_tracebacks() -> None:
    token = "123:ABC-def"
    masker = SecretFilter(token)
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "HTTP Request: %s %s", ("POST", f"/bot{token}/x"), None
    )
    assert masker.filter(record)
    assert record.getMessage() == f"HTTP Request: POST /bot{MASK}/x"
    try:
        raise RuntimeError(f"GET /file/bot123%3AABC-def/voice.oga failed for {token}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    masker.filter(record)
    assert record.exc_text is not None
    assert token not in record.exc_text
    assert "123%3AABC-def" not in record.exc_text
