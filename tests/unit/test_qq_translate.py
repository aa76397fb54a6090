"""bots/qq/cq.py and bots/qq/translate.py on recorded OneBot v11 payloads (NapCat's
shapes; no network), and the token masks of bots/qq/logs.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from bots.qq.cq import escape, parse, to_segments, unescape
from bots.qq.logs import TokensMasked
from bots.qq.onebot import safe_url
from bots.qq.translate import (
    MediaRef,
    OwnMessages,
    file_pieces,
    read_event,
    text_messages,
)
from brain.messages import Text

SELF_ID = 3889001234
ALICE: dict[str, Any] = {"user_id": 1234567, "nickname": "Alice", "card": "", "role": "member"}
BOB: dict[str, Any] = {"user_id": 7654321, "nickname": "bob_qq", "card": "Bob", "role": "admin"}


def event(
    kind: str, message: Any, *, sender: dict[str, Any] = ALICE, **extra: Any
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "self_id": SELF_ID,
        "user_id": sender["user_id"],
        "time": 1767225600,
        "message_id": 880042,
        "message_seq": 880042,
        "real_id": 880042,
        "message_type": kind,
        "sender": sender,
        "raw_message": message if isinstance(message, str) else "",
        "font": 14,
        "sub_type": "friend" if kind == "private" else "normal",
        "message": message,
        "message_format": "string" if isinstance(message, str) else "array",
        "post_type": "message",
        **extra,
    }
    if kind == "group":
        found.setdefault("group_id", 88990011)
    return found


def read(kind: str, message: Any, *, own: OwnMessages | None = None, **extra: Any) -> Any:
    return read_event(event(kind, message, **extra), self_id=SELF_ID, own=own or OwnMessages())


# CQ codes -------------------------------------------------------------------------------


def test_cq_strings_parse_into_segments_with_escapes_undone() -> None:
    message = (
        "hi &#91;not a code&#93; &amp;&amp; [CQ:at,qq=3889001234] look "
        "[CQ:image,file=a&#44;b.jpg,url=https://x.test/a?x=1&amp;y=2]"
    )
    assert parse(message) == [
        {"type": "text", "data": {"text": "hi [not a code] && "}},
        {"type": "at", "data": {"qq": "3889001234"}},
        {"type": "text", "data": {"text": " look "}},
        {"type": "image", "data": {"file": "a,b.jpg", "url": "https://x.test/a?x=1&y=2"}},
    ]
    assert parse("[CQ:face]") == [{"type": "face", "data": {}}]
    assert unescape(escape("a[1,2]&b", in_code=True)) == "a[1,2]&b"
    assert unescape("&amp;#91;") == "&#91;"  # an escaped escape stays one


def test_segment_arrays_are_cleaned() -> None:
    raw = [
        {"type": "text", "data": {"text": "hi"}},
        {"type": "at", "data": {"qq": 3889001234, "name": None}},
        {"data": {"text": "no type"}},
        "junk",
    ]
    assert to_segments(raw) == [
        {"type": "text", "data": {"text": "hi"}},
        {"type": "at", "data": {"qq": "3889001234", "name": ""}},
    ]
    assert to_segments({"type": "text", "data": {"text": "one"}}) == [
        {"type": "text", "data": {"text": "one"}}
    ]
    assert to_segments(None) == []


# reading --------------------------------------------------------------------------------


def test_a_private_message_is_for_the_bot() -> None:
    got = read("private", [{"type": "text", "data": {"text": "Hello there"}}])
    assert got.to_bot
    assert (got.id, got.chat.key, got.chat.kind) == ("880042", "qq:1234567", "dm")
    assert (got.author.user_id, got.author.display_name) == ("1234567", "Alice")
    assert got.sent_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert got.inbound().segments == (Text(text="Hello there"),)


def test_group_addressing_by_at_reply_or_command() -> None:
    at_me = {"type": "at", "data": {"qq": str(SELF_ID)}}
    text = {"type": "text", "data": {"text": "see you on Friday"}}
    overheard = read("group", [text], sender=BOB)
    assert not overheard.to_bot
    assert (overheard.chat.key, overheard.author.display_name) == ("qq:88990011", "Bob")

    mentioned = read("group", [at_me, {"type": "text", "data": {"text": " ，hi"}}])
    assert (mentioned.to_bot, mentioned.text) == (True, "hi")
    as_string = read("group", f"[CQ:at,qq={SELF_ID}] /memory list")
    assert (as_string.to_bot, as_string.text) == (True, "/memory list")
    middle = read("group", f"so [CQ:at,qq={SELF_ID}] what now?")
    assert middle.text == "so what now?"

    own = OwnMessages()
    own.add(555)
    reply = [{"type": "reply", "data": {"id": "555"}}, text]
    assert read("group", reply, own=own).to_bot
    other_reply = read("group", [{"type": "reply", "data": {"id": "556"}}, text], own=own)
    assert not other_reply.to_bot
    assert other_reply.reply_to == "556"

    assert read("group", "/记忆 list").to_bot
    assert read("group", "／help").to_bot  # the full-width slash of CJK keyboards
    assert not read("group", "/usr/bin is a folder").to_bot
    for_another = read("group", "[CQ:at,qq=999,name=OtherBot] /help")
    assert (for_another.to_bot, for_another.text) == (False, "@OtherBot /help")


def test_what_is_not_for_tomo_is_dropped() -> None:
    assert read("private", "hi", user_id=SELF_ID) is None  # the bot's own
    assert read("guild", "hi") is None
    assert read("private", "[CQ:face,id=14]") is None  # nothing tomo keeps
    notice = {"post_type": "notice", "notice_type": "group_recall", "message_id": 1}
    assert read_event(notice, self_id=SELF_ID, own=OwnMessages()) is None


def test_media_refs() -> None:
    got = read(
        "private",
        [
            {"type": "record", "data": {"file": "a.amr", "url": "http://x/a", "file_size": "123"}},
            {"type": "image", "data": {"file": "b.png", "url": "", "sub_type": 0}},
        ],
    )
    assert got.text == ""
    assert got.media == (
        MediaRef(kind="voice", file="a.amr", url="http://x/a", size_bytes=123),
        MediaRef(kind="image", file="b.png", url=None, size_bytes=None),
    )


def test_display_names_fall_back() -> None:
    nameless = {"user_id": 42, "nickname": "", "card": ""}
    assert read("private", "hi", sender=nameless).author.display_name == "42"


def test_own_messages_forget_the_oldest() -> None:
    own = OwnMessages(keep=2)
    for message_id in (1, 2, 3):
        own.add(message_id)
    assert (1 in own, "2" in own, 3 in own, len(own)) == (False, True, True, 2)


# writing --------------------------------------------------------------------------------


def test_text_messages_answer_and_at_only_in_the_first() -> None:
    messages = text_messages("one. " * 10, reply_to="7", at="42", limit=20)
    assert len(messages) > 1
    assert messages[0][:3] == [
        {"type": "reply", "data": {"id": "7"}},
        {"type": "at", "data": {"qq": "42"}},
        {"type": "text", "data": {"text": " "}},
    ]
    assert all(len(m) == 1 and m[0]["type"] == "text" for m in messages[1:])
    assert text_messages("hi") == [[{"type": "text", "data": {"text": "hi"}}]]


def test_file_pieces_put_together_are_the_file() -> None:
    text = '{\n  "a": "' + "x" * 50 + '",\n  "b": [1, 2, 3]\n}\n'
    pieces = file_pieces(text, limit=30)
    assert "".join(pieces) == text
    assert all(len(p) <= 30 for p in pieces)


# secrets --------------------------------------------------------------------------------


def test_tokens_are_masked_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    masks = TokensMasked("s3cret token", "url-tok")
    try:
        log = logging.getLogger("bots.qq.onebot")
        log.warning("connecting to ws://h/?access_token=%s with %s", "url-tok", "s3cret%20token")
        try:
            raise RuntimeError("Bearer s3cret token refused")
        except RuntimeError:
            log.exception("failed")
    finally:
        masks.remove()
    assert "s3cret" not in caplog.text
    assert "url-tok" not in caplog.text
    assert caplog.text.count("<token>") >= 3
    assert safe_url("ws://u:p@127.0.0.1:3001/?access_token=x") == "ws://127.0.0.1:3001/"
