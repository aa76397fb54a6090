"""QQ end to end: the real OneBot v11 adapter (aiohttp WebSocket client) against a fake
NapCat on 127.0.0.1, with a real Brain on SQLite (stub model, hash embeddings, real
speech)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from bots.app import App, build_qq
from bots.delivery import Delivery
from bots.qq.adapter import PRIVATE_NOTE, QQAdapter
from bots.qq.onebot import ConnectPolicy
from bots.qq.send import RetryPolicy
from bots.runner import run_platforms
from bots.settings import Settings
from brain.blobs import UnknownBlobError, blob_key
from brain.errors import ConfigError
from brain.memory.types import NewMemory, scope_of
from brain.messages import ChatRef, Image, PersonRef, Reply, Sticker, Text, Voice
from brain.speech import codecs
from tests.fakes.onebot import JSON, SELF_ID, Action, FakeOneBot, inline, seg
from tests.speech_kit import app_with_speech, piper

REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=5, first_delay_s=0.05, max_delay_s=0.2)
FAST_CONNECT = ConnectPolicy(
    first_delay_s=0.05, max_delay_s=0.2, startup_attempts=3, action_timeout_s=1.0
)
ALICE_ID, BOB_ID, GROUP_ID = 1234567, 7654321, 88990011
ALICE_DM = ChatRef(platform="qq", chat_id=str(ALICE_ID), kind="dm")
GROUP = ChatRef(platform="qq", chat_id=str(GROUP_ID), kind="group")
ALICE = PersonRef(platform="qq", user_id=str(ALICE_ID), display_name="Alice")
ME = seg("at", qq=SELF_ID)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOneBot]:
    server = FakeOneBot()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_settings(
    tmp_path: Path, fake: FakeOneBot, *, stickers: bool = False, **qq: Any
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        llm={"backend": "stub"},
        embed={"backend": "hash"},
        stickers={"enabled": stickers},  # random sticker replies: only where a test wants them
        qq={"onebot_url": fake.url, "access_token": fake.token, **qq},
        # these suites send many commands in a row; the limits have their own tests
        limits={"enabled": False},
    )


@contextlib.asynccontextmanager
async def running(app: App, fake: FakeOneBot) -> AsyncIterator[QQAdapter]:
    """The adapter connected (and knowing its QQ number) until the block ends."""
    adapter = QQAdapter(
        app.settings.qq, brain=app.brain, blobs=app.blobs, retry=FAST, connect=FAST_CONNECT
    )
    task = asyncio.create_task(adapter.run())
    await fake.wait_for(
        lambda: task.done() or (fake.connected and adapter.client.self_id is not None),
        what="the connection",
    )
    try:
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def app(tmp_path: Path, fake: FakeOneBot) -> AsyncIterator[App]:
    the_app = await app_with_speech(make_settings(tmp_path, fake))
    try:
        yield the_app
    finally:
        await the_app.aclose()


@pytest.fixture
async def bot(app: App, fake: FakeOneBot) -> AsyncIterator[QQAdapter]:
    async with running(app, fake) as adapter:
        yield adapter


def people(fake: FakeOneBot) -> tuple[JSON, JSON]:
    return fake.user(ALICE_ID, "Alice"), fake.user(BOB_ID, "bob_qq", card="Bob")


async def say(fake: FakeOneBot, event: JSON, *, replies: int = 1) -> list[Action]:
    """Push `event` and wait for `replies` sends after it (of any kind, anywhere)."""
    before = len(fake.sent())
    await fake.push(event)
    await fake.wait_for(
        lambda: len(fake.sent()) >= before + replies,
        what=f"{replies} replies to {event.get('raw_message')!r}",
    )
    return fake.sent()[before:]


async def quiet(fake: FakeOneBot, *, for_s: float = 0.4) -> None:
    """Nothing more is sent for a while."""
    count = len(fake.sent())
    await asyncio.sleep(for_s)
    assert len(fake.sent()) == count, [a.text for a in fake.sent()[count:]]


def image_bytes(fmt: str, width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGBA" if fmt == "WEBP" else "RGB", (width, height), (20, 120, 220)).save(
        out, format=fmt
    )
    return out.getvalue()


# conversation -----------------------------------------------------------------------------


async def test_private_round_trip(app: App, fake: FakeOneBot, bot: QQAdapter) -> None:
    alice, _ = people(fake)
    assert [a.action for a in fake.actions][:1] == ["get_login_info"]
    event = fake.private_message(alice, [seg("text", text="Hello! I just got back from Kyoto.")])
    (answer,) = await say(fake, event)
    assert (answer.action, answer.to) == ("send_private_msg", ALICE_ID)
    assert answer.text.startswith("You said:")
    assert "Kyoto" in answer.text
    assert answer.reply_to == str(event["message_id"])
    assert not answer.segments("at")  # no @ in a private chat
    stored = await app.store.recent_messages(ALICE_DM, limit=10)
    assert [(m.role, m.platform_message_id) for m in stored] == [
        ("user", str(event["message_id"])),
        ("assistant", None),
    ]
    assert (stored[0].author_name, stored[0].text) == (
        "Alice",
        "Hello! I just got back from Kyoto.",
    )


async def test_group_answers_only_when_addressed_and_remembers_the_rest(
    app: App, fake: FakeOneBot, bot: QQAdapter
) -> None:
    alice, bob = people(fake)
    overheard = fake.group_message(GROUP_ID, bob, [seg("text", text="The meeting is on Friday")])
    for_other = fake.group_message(
        GROUP_ID, bob, [seg("at", qq=BOB_ID), seg("text", text=" /help")]
    )
    for_all = fake.group_message(GROUP_ID, alice, [seg("at", qq="all"), seg("text", text=" tea!")])
    for event in (overheard, for_other, for_all):
        await fake.push(event)
    await quiet(fake)
    assert fake.sent() == []

    mentioned = fake.group_message(
        GROUP_ID, alice, [ME, seg("text", text=" what day is the meeting?")]
    )
    (answer,) = await say(fake, mentioned)
    assert (answer.action, answer.to) == ("send_group_msg", GROUP_ID)
    # As a QQ client shows an answer: quoting the question, @-ing the asker.
    assert [s["type"] for s in answer.message[:2]] == ["reply", "at"]
    assert answer.reply_to == str(mentioned["message_id"])
    assert answer.segments("at") == [{"qq": str(ALICE_ID)}]
    assert "what day is the meeting?" in answer.text

    # The CQ-string form, escapes included; the @ may stand anywhere in the text.
    as_cq = fake.group_message(
        GROUP_ID,
        bob,
        [seg("text", text="hey "), ME, seg("text", text=" is [1,2] & co a list?")],
        as_string=True,
    )
    assert "&#91;1,2&#93; &amp; co" in as_cq["message"]
    (answer,) = await say(fake, as_cq)
    assert answer.segments("at") == [{"qq": str(BOB_ID)}]

    # A quote of the bot's own message is for the bot, with or without an @.
    replied = fake.group_message(
        GROUP_ID, bob, [seg("reply", id=answer.message_id), seg("text", text="why?")]
    )
    await say(fake, replied)
    # ...even of one sent before a restart (the server is asked: get_msg).
    old = fake.past_bot_message([seg("text", text="Green tea is lovely.")])
    quoted_old = fake.group_message(
        GROUP_ID, alice, [seg("reply", id=old), seg("text", text="still true?")]
    )
    await say(fake, quoted_old)
    assert any(a.action == "get_msg" for a in fake.actions)
    # A command needs no @.
    (helped,) = await say(fake, fake.group_message(GROUP_ID, alice, [seg("text", text="/help")]))
    assert "I'm a companion" in helped.text
    await quiet(fake, for_s=0.2)

    stored = await app.store.recent_messages(GROUP, limit=50)
    users = [(m.platform_message_id, m.author_name, m.text) for m in stored if m.role == "user"]
    assert users == [
        (str(overheard["message_id"]), "Bob", "The meeting is on Friday"),
        (str(for_other["message_id"]), "Bob", "@7654321 /help"),
        (str(for_all["message_id"]), "Alice", "@全体成员 tea!"),
        (str(mentioned["message_id"]), "Alice", "what day is the meeting?"),
        (str(as_cq["message_id"]), "Bob", "hey is [1,2] & co a list?"),
        (str(replied["message_id"]), "Bob", "why?"),
        (str(quoted_old["message_id"]), "Alice", "still true?"),
    ]
    assert len([m for m in stored if m.role == "assistant"]) == 4


async def test_images_are_kept_as_segments(
    tmp_path: Path, app: App, fake: FakeOneBot, bot: QQAdapter
) -> None:
    alice, _ = people(fake)
    jpeg = image_bytes("JPEG", 640, 480)
    url = fake.add_media(jpeg, name="cat.jpg")
    by_url = fake.private_message(
        alice, [seg("text", text="my cat"), seg("image", file="cat.jpg", url=url)]
    )
    await say(fake, by_url)
    png = image_bytes("PNG", 32, 32)
    fake.media["ABCDEF.png"] = png  # no URL: fetched with get_image
    await say(fake, fake.private_message(alice, [seg("image", file="ABCDEF.png")], as_string=True))
    gif = image_bytes("GIF", 8, 8)
    beside = tmp_path / "napcat-cache.gif"  # NapCat on this machine: its path is read
    beside.write_bytes(gif)
    await say(fake, fake.private_message(alice, [seg("image", file="c.gif", path=beside)]))
    stored = [m for m in await app.store.recent_messages(ALICE_DM, limit=10) if m.role == "user"]
    assert stored[0].text == "my cat"
    (photo,) = [s for s in stored[0].segments if isinstance(s, Image)]
    assert (photo.mime, photo.width, photo.height) == ("image/jpeg", 640, 480)
    assert await app.blobs.get(photo.blob_key) == jpeg
    (fetched,) = [s for s in stored[1].segments if isinstance(s, Image)]
    assert fetched.mime == "image/png"
    assert await app.blobs.get(fetched.blob_key) == png
    (local,) = [s for s in stored[2].segments if isinstance(s, Image)]
    assert (local.mime, await app.blobs.get(local.blob_key)) == ("image/gif", gif)
    assert [a.action for a in fake.actions].count("get_image") == 1


# voice ------------------------------------------------------------------------------------


def silk_answer(actions: list[Action]) -> bytes:
    (record,) = [d for a in actions for d in a.segments("record")]
    data = inline(record["file"])
    assert data is not None
    return data


async def test_silk_voice_notes_heard_and_answered_with_text_and_silk_voice(
    app: App, fake: FakeOneBot, bot: QQAdapter
) -> None:
    alice, bob = people(fake)
    pcm = piper().synthesize_pcm("I planted tomatoes in the garden this morning.")
    silk = codecs.encode_silk(pcm)
    assert silk.startswith(b"\x02#!SILK_V3")
    url = fake.add_media(silk, name="note1.amr")
    note = fake.private_message(
        alice, [seg("record", file="note1.amr", url=url, file_size=len(silk))]
    )
    sent = await say(fake, note, replies=2)
    (text,) = [a for a in sent if a.text]
    assert "tomato" in text.text.lower()
    spoken = silk_answer(sent)
    assert spoken.startswith((b"\x02#!SILK_V3", b"#!SILK_V3"))
    assert codecs.decode_silk(spoken).duration_s > 0.5
    stored = await app.store.recent_messages(ALICE_DM, limit=10)
    assert "tomato" in stored[0].text.lower()  # the transcript is kept with the message
    (voice,) = [s for s in stored[0].segments if isinstance(s, Voice)]
    assert voice.mime == "audio/silk"
    assert voice.duration_s == pytest.approx(pcm.duration_s, abs=0.1)
    assert await app.blobs.get(voice.blob_key) == silk

    # In a group, @-ed, a note without a URL: fetched with get_record (base64).
    pcm = piper().synthesize_pcm("Do you like green tea?")
    fake.media["note2.amr"] = codecs.encode_silk(pcm)
    asked = fake.group_message(GROUP_ID, bob, [ME, seg("record", file="note2.amr")])
    sent = await say(fake, asked, replies=2)
    assert [a.action for a in fake.actions if a.action == "get_record"] == ["get_record"]
    (text,) = [a for a in sent if a.text]
    assert "tea" in text.text.lower()
    assert text.segments("at") == [{"qq": str(BOB_ID)}]
    assert codecs.decode_silk(silk_answer(sent)).duration_s > 0.5


# sending ----------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with PILImage.open(io.BytesIO(data)) as image:
        return image.size


async def test_the_brains_sticker_render_goes_out_as_a_png_sticker_image(
    tmp_path: Path, fake: FakeOneBot
) -> None:
    card = (REPO / "brain" / "persona" / "default.yaml").read_text("utf-8")
    persona = tmp_path / "always-stickers.yaml"
    persona.write_text(card.replace("sticker_rate: 0.2", "sticker_rate: 1.0"), "utf-8")
    settings = make_settings(tmp_path, fake, stickers=True)
    settings.persona = persona
    alice, _ = people(fake)
    app = await app_with_speech(settings)
    try:
        async with running(app, fake) as adapter:
            event = fake.private_message(alice, [seg("text", text="I passed my driving test!")])
            text, sticker = await say(fake, event, replies=2)
            assert text.text.startswith("You said:")
            (image,) = sticker.segments("image")
            assert image["sub_type"] == 1  # NapCat: shown as a sticker, not a photo
            data = inline(image["file"])
            assert data is not None
            assert png_size(data) == (512, 512)

            # Any Sticker a Reply carries goes the same way.
            webp = image_bytes("WEBP", 512, 512)
            key = await app.blobs.put(webp, mime="image/webp")
            reply = Reply(
                chat=GROUP,
                segments=(Sticker(blob_key=key, size_bytes=len(webp), emotion="happy"),),
                reply_to="42",
            )
            assert await adapter.deliver(reply) is Delivery.SENT
    finally:
        await app.aclose()
    last = fake.sent()[-1]
    assert (last.action, last.to) == ("send_group_msg", GROUP_ID)
    assert png_size(inline(last.segments("image")[0]["file"]) or b"") == (512, 512)


async def test_long_text_is_cut_and_failed_sends_are_retried_once_delivered(
    app: App, fake: FakeOneBot, bot: QQAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    paragraphs = [f"Paragraph {i}. " + "word " * 200 for i in range(12)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    fake.fail_next("send_group_msg", retcode=1200)  # NapCat's "send failed"
    fake.stall_next("send_group_msg")  # then no answer at all: timed out, sent again
    reply = Reply(chat=GROUP, segments=(Text(text=long_text),), reply_to="99")
    assert await bot.deliver(reply, asker=ALICE) is Delivery.SENT
    pieces = fake.sent("send_group_msg")
    assert len(pieces) >= 3
    assert all(len(p.text) <= 3000 for p in pieces)
    assert (pieces[0].reply_to, pieces[0].segments("at")) == ("99", [{"qq": str(ALICE_ID)}])
    assert all(p.reply_to is None and not p.segments("at") for p in pieces[1:])
    assert "\n\n".join(p.text.strip() for p in pieces) == long_text
    tries = [a.answer and a.answer["retcode"] for a in fake.actions if a.action == "send_group_msg"]
    assert tries[:3] == [None, 1200, 0]  # unanswered (timed out), failed, sent
    assert "retry" in caplog.text
    assert fake.token not in caplog.text


# /memory ----------------------------------------------------------------------------------


async def seed_memory(app: App) -> int:
    """Alice told tomo about her sister in their DM; consolidation made a memory of it
    (later corrected), and wrote her profile."""
    memory = app.brain.memory
    assert memory is not None
    person = await app.store.resolve_person(ALICE, seen_at=datetime.now(UTC))
    source = next(
        m for m in await app.store.recent_messages(ALICE_DM, limit=10) if m.role == "user"
    )
    scope = scope_of(ALICE_DM, person_id=person.id)
    now = datetime.now(UTC)
    first = await memory.longterm.add_memory(
        NewMemory(
            scope=scope,
            text="Alice's sister May lives in Kobe.",
            about=(person.id,),
            source_message_ids=(source.id,),
            created_at=now,
        )
    )
    await memory.longterm.update_memory(
        first.id,
        text="Alice's sister May moved to Osaka in June.",
        importance=0.7,
        embedding=None,
        reason="she moved",
        at=now + timedelta(minutes=1),
    )
    memory.recall.invalidate(scope)
    return first.id


def exported(upload: Action) -> JSON:
    data = inline(str(upload.params["file"]))
    assert data is not None
    result: JSON = json.loads(data)
    return result


async def test_every_memory_command_in_private(app: App, fake: FakeOneBot, bot: QQAdapter) -> None:
    alice, _ = people(fake)
    await say(
        fake, fake.private_message(alice, [seg("text", text="My sister May moved to Osaka.")])
    )
    mid = await seed_memory(app)

    async def command(text: str, *, replies: int = 1) -> list[Action]:
        return await say(
            fake, fake.private_message(alice, [seg("text", text=text)]), replies=replies
        )

    (listed,) = await command("/memory list")
    assert f"#{mid} Alice's sister May moved to Osaka" in listed.text
    assert listed.to == ALICE_ID
    assert f"#{mid}" in (await command("/记忆 search Osaka"))[0].text
    shown = (await command(f"/memory show {mid}"))[0].text
    assert "moved to Osaka" in shown
    assert "lives in Kobe" in (await command(f"/记忆 history {mid}"))[0].text

    summary, upload = await command("/memory export", replies=2)
    assert "Everything I keep about you" in summary.text
    assert (upload.action, upload.to) == ("upload_private_file", ALICE_ID)
    assert str(upload.params["name"]).endswith(".json")
    assert [m["text"] for m in exported(upload)["memories"]] == [
        "Alice's sister May moved to Osaka in June."
    ]
    with pytest.raises(UnknownBlobError):  # delivered, then deleted
        await app.blobs.get(blob_key(inline(str(upload.params["file"])) or b""))

    preview = (await command(f"/memory forget {mid}"))[0].text
    assert f"/memory forget {mid} confirm" in preview
    assert "Forgotten" in (await command(f"/记忆 forget {mid} confirm"))[0].text
    assert f"#{mid}" not in (await command("/memory list"))[0].text


async def test_memory_in_a_group_is_answered_privately(
    app: App, fake: FakeOneBot, bot: QQAdapter
) -> None:
    alice, bob = people(fake)
    await say(
        fake, fake.private_message(alice, [seg("text", text="My sister May moved to Osaka.")])
    )
    mid = await seed_memory(app)

    asked = fake.group_message(GROUP_ID, alice, [ME, seg("text", text=" /记忆 list")])
    listing, note = await say(fake, asked, replies=2)
    assert (listing.action, listing.to) == ("send_private_msg", ALICE_ID)
    assert f"#{mid}" in listing.text
    assert listing.reply_to is None  # not a quote of a message in another chat
    assert (note.action, note.to, note.text.strip()) == ("send_group_msg", GROUP_ID, PRIVATE_NOTE)
    assert note.reply_to == str(asked["message_id"])
    assert not [a for a in fake.sent("send_group_msg") if f"#{mid}" in a.text]

    summary, upload, _ = await say(
        fake, fake.group_message(GROUP_ID, alice, [seg("text", text="/memory export")]), replies=3
    )
    assert (summary.action, upload.action, upload.to) == (
        "send_private_msg",
        "upload_private_file",
        ALICE_ID,
    )

    # A server without file uploads: the export comes as text messages, whole.
    fake.file_uploads = False
    before = len(fake.sent())
    await say(fake, fake.private_message(alice, [seg("text", text="/memory export")]), replies=3)
    header = next(a.text for a in fake.sent()[before:] if "(as text" in a.text)
    assert header.startswith("tomo-export-")
    parts = int(header.split("(as text, ")[1].split()[0])
    await fake.wait_for(lambda: len(fake.sent()) >= before + 2 + parts, what="every part")
    texts = [a.text for a in fake.sent()[before:]]
    assert texts[0].startswith("Everything I keep about you")
    assert texts[1] == header
    assert json.loads("".join(texts[2:]))["memories"][0]["text"].startswith("Alice's sister")

    fake.not_friends.add(BOB_ID)  # QQ won't let the bot message Bob privately
    (refused,) = await say(
        fake, fake.group_message(GROUP_ID, bob, [ME, seg("text", text="/memory list")])
    )
    assert (refused.action, refused.to) == ("send_group_msg", GROUP_ID)
    assert "add me as a friend" in refused.text
    assert not fake.sent(to=BOB_ID)


# connection -------------------------------------------------------------------------------


async def test_a_reply_survives_a_dropped_connection(
    app: App, fake: FakeOneBot, bot: QQAdapter
) -> None:
    alice, _ = people(fake)
    fake.drop_on("send_private_msg")  # the socket goes while the answer is on its way
    event = fake.private_message(alice, [seg("text", text="are you still there?")])
    (answer,) = await say(fake, event)
    assert answer.reply_to == str(event["message_id"])
    tries = [a for a in fake.actions if a.action == "send_private_msg"]
    assert [(a.connection, a.ok) for a in tries] == [(1, False), (2, True)]
    assert bot.client.connections == 2

    # Down for a while (NapCat restarting): a reply waits and goes out on reconnect.
    fake.refuse_with = 503
    await fake.drop()
    await fake.wait_for(lambda: fake.refused >= 2, what="refused reconnects")
    later = asyncio.create_task(
        bot.deliver(Reply(chat=ALICE_DM, segments=(Text(text="sorry, I was away"),)))
    )
    await asyncio.sleep(0.3)
    assert not later.done()
    fake.refuse_with = None
    assert await asyncio.wait_for(later, 10) is Delivery.SENT
    assert fake.sent()[-1].text == "sorry, I was away"
    assert fake.sent()[-1].connection == 3

    # A socket that stays open but falls silent (no heartbeats) is given up and redialled.
    await fake.wait_for(lambda: fake.heartbeats.get(3, 0) >= 1, what="a heartbeat")
    fake.silence()
    await fake.wait_for(lambda: fake.connections == 4 and fake.connected, what="a redial")
    (answer,) = await say(fake, fake.private_message(alice, [seg("text", text="and now?")]))
    assert answer.connection == 4


async def test_a_refused_token_is_a_clear_error_at_once_without_the_token(
    tmp_path: Path, fake: FakeOneBot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "WRONG-token-never-to-be-shown"
    app = await app_with_speech(make_settings(tmp_path, fake, access_token=wrong))
    try:
        with pytest.raises(ConfigError, match="the OneBot server refused TOMO_QQ__ACCESS_TOKEN"):
            await asyncio.wait_for(build_qq(app).run(), 10)
        assert fake.refused == 1  # not retried
        # In the URL instead (NapCat takes ?access_token= too): masked in every log.
        app.settings.qq.onebot_url = f"{fake.url}/?access_token={wrong}"
        app.settings.qq.access_token = None
        with pytest.raises(ConfigError, match="it is unset"):
            await asyncio.wait_for(build_qq(app).run(), 10)
        assert fake.refused == 2
        # NapCat's way: the upgrade accepted, the token refused in a frame, then closed.
        fake.napcat_token_check = True
        with pytest.raises(ConfigError, match=r"refused TOMO_QQ__ACCESS_TOKEN .*retcode 1403"):
            await asyncio.wait_for(build_qq(app).run(), 10)
        assert fake.refused == 3
        # Nothing listening: a clear error after a few tries, not an endless loop.
        app.settings.qq.onebot_url = "ws://127.0.0.1:1"
        app.settings.qq.reconnect_delay_s = 0.05
        with pytest.raises(ConfigError, match="Cannot connect to the OneBot server"):
            await asyncio.wait_for(build_qq(app).run(), 20)
        app.settings.qq.onebot_url = "http://127.0.0.1:3001"
        with pytest.raises(ConfigError, match="ws://"):
            build_qq(app)
    finally:
        await app.aclose()
    assert wrong not in caplog.text
    assert "WRONG" not in caplog.text


async def test_tomo_run_serves_qq_until_stopped(tmp_path: Path, fake: FakeOneBot) -> None:
    alice, _ = people(fake)
    stop = asyncio.Event()
    task = asyncio.create_task(run_platforms(make_settings(tmp_path, fake), stop=stop))
    await say(fake, fake.private_message(alice, [seg("text", text="are you running?")]))
    stop.set()
    await asyncio.wait_for(task, 10)  # a clean return: connection closed
    assert task.result() is None
    await fake.wait_for(lambda: not fake.connected, what="the connection closed")
