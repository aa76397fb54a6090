"""Telegram end to end: the real python-telegram-bot adapter against a fake Bot API server
on 127.0.0.1, with a real Brain on SQLite (stub model, hash embeddings, real speech)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from bots.app import App, build_telegram
from bots.delivery import Delivery
from bots.runner import run_platforms
from bots.settings import Settings
from bots.telegram.adapter import BAD_TOKEN, TelegramAdapter
from bots.telegram.send import RetryPolicy
from brain.blobs import UnknownBlobError, blob_key
from brain.errors import ConfigError
from brain.memory.types import NewMemory, scope_of
from brain.messages import ChatRef, Image, Inbound, PersonRef, Reply, Sticker, Text
from brain.speech import codecs
from tests.fakes.telegram_api import BOT_USERNAME, JSON, FakeTelegram
from tests.speech_kit import app_with_speech, piper

REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=5, first_delay_s=0.05, max_delay_s=0.2)
ALICE_ID, BOB_ID, GROUP_ID = 4101, 4102, -1009000
ALICE_DM = ChatRef(platform="telegram", chat_id=str(ALICE_ID), kind="dm")
GROUP = ChatRef(platform="telegram", chat_id=str(GROUP_ID), kind="group")
ALICE = PersonRef(platform="telegram", user_id=str(ALICE_ID), display_name="Alice Liddell")


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_settings(
    tmp_path: Path, fake: FakeTelegram, *, stickers: bool = False, **telegram: Any
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        llm={"backend": "stub"},
        embed={"backend": "hash"},
        stickers={"enabled": stickers},  # random sticker replies: only where a test wants them
        telegram={"token": fake.token, "api_base": fake.base, "poll_timeout": 1, **telegram},
        # these suites send many commands in a row; the limits have their own tests
        limits={"enabled": False},
    )


@contextlib.asynccontextmanager
async def running(app: App, fake: FakeTelegram, **kw: Any) -> AsyncIterator[TelegramAdapter]:
    """The adapter running (polling, or serving its webhook) until the block ends."""
    adapter = TelegramAdapter(
        app.settings.telegram,
        brain=app.brain,
        blobs=app.blobs,
        retry=FAST,
        chat_action_every_s=0.2,
        **kw,
    )
    task = asyncio.create_task(adapter.run())
    ready = "setWebhook" if app.settings.telegram.webhook_url else "getUpdates"
    await fake.wait_for(
        lambda: task.done() or any(c.method == ready for c in fake.calls), what=ready
    )
    try:
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def app(tmp_path: Path, fake: FakeTelegram) -> AsyncIterator[App]:
    the_app = await app_with_speech(make_settings(tmp_path, fake))
    try:
        yield the_app
    finally:
        await the_app.aclose()


@pytest.fixture
async def bot(app: App, fake: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    async with running(app, fake) as adapter:
        yield adapter


def people(fake: FakeTelegram) -> tuple[JSON, JSON, JSON, JSON]:
    alice = fake.user(ALICE_ID, "Alice", "Liddell")
    bob = fake.user(BOB_ID, "Bob")
    return alice, bob, fake.private_chat(alice), fake.group(GROUP_ID, "Tea club")


async def say(fake: FakeTelegram, message: JSON, *, replies: int = 1) -> list[str]:
    """Send `message` and wait for `replies` sends threaded to it (of any kind); the
    texts of those that are text messages."""
    await fake.enqueue(message)
    mid = message["message_id"]
    await fake.wait_for(
        lambda: len([c for c in fake.sent() if c.reply_to == mid]) >= replies,
        what=f"{replies} replies to {message.get('text')!r}",
    )
    return [c.text for c in fake.sent("sendMessage") if c.reply_to == mid]


def webp_bytes() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGBA", (512, 512), (255, 160, 40, 200)).save(out, format="WEBP")
    return out.getvalue()


def jpeg_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (20, 120, 220)).save(out, format="JPEG")
    return out.getvalue()


# conversation -----------------------------------------------------------------------------


async def test_dm_round_trip_threaded_with_typing_and_command_menu(
    app: App, fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    alice, _, dm, _ = people(fake)
    message = fake.message(dm, alice, "Hello! I just got back from Kyoto.")
    (answer,) = await say(fake, message)
    assert answer.startswith("You said:")
    assert "Kyoto" in answer
    assert "typing" in fake.actions(ALICE_ID)
    assert [c["command"] for c in fake.commands or []] == [
        "start",
        "help",
        "memory",
        "voice",
        "sticker",
        "link",
    ]
    stored = await app.store.recent_messages(ALICE_DM, limit=10)
    assert [(m.role, m.platform_message_id) for m in stored] == [
        ("user", str(message["message_id"])),
        ("assistant", None),
    ]
    assert stored[0].author_name == "Alice Liddell"
    assert stored[0].text == "Hello! I just got back from Kyoto."


async def test_group_answers_only_when_addressed_and_remembers_the_rest(
    app: App, fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    alice, bob, _, group = people(fake)
    bot_said = {
        "message_id": 7,
        "date": int(datetime.now(UTC).timestamp()),
        "chat": group,
        "from": fake.bot_user,
        "text": "Green tea is lovely.",
    }
    overheard = fake.message(group, bob, "I think the meeting is on Friday")
    mentioned = fake.message(group, alice, f"@{BOT_USERNAME} what day is the meeting?")
    replied = fake.message(group, bob, "and why green?", reply_to=bot_said)
    text_mention = fake.message(
        group,
        alice,
        "Tomo, are you there?",
        entities=[{"type": "text_mention", "offset": 0, "length": 4, "user": fake.bot_user}],
    )
    other_bot = fake.message(group, bob, "/help@some_other_bot")
    addressed_help = fake.message(group, bob, f"/help@{BOT_USERNAME}")
    bare_help = fake.message(group, alice, "/help")
    answered = [mentioned, replied, text_mention, addressed_help, bare_help]
    for message in [overheard, *answered[:3], other_bot, *answered[3:]]:
        await fake.enqueue(message)
    await fake.wait_for(
        lambda: len(fake.sent("sendMessage", chat_id=GROUP_ID)) >= len(answered), what="replies"
    )
    await asyncio.sleep(0.3)  # nothing more comes

    sent = fake.sent("sendMessage", chat_id=GROUP_ID)
    assert sorted(c.reply_to or 0 for c in sent) == sorted(m["message_id"] for m in answered)
    assert {c.reply_to for c in fake.sent()} == {m["message_id"] for m in answered}
    by_target = {c.reply_to: c.text for c in sent}
    assert "I'm a companion" in by_target[bare_help["message_id"]]
    assert "I'm a companion" in by_target[addressed_help["message_id"]]
    # The mention is not part of what the brain reads; commands are not stored.
    stored = await app.store.recent_messages(GROUP, limit=50)
    users = [(m.platform_message_id, m.text) for m in stored if m.role == "user"]
    assert users == [
        (str(overheard["message_id"]), "I think the meeting is on Friday"),
        (str(mentioned["message_id"]), "what day is the meeting?"),
        (str(replied["message_id"]), "and why green?"),
        (str(text_mention["message_id"]), "Tomo, are you there?"),
    ]
    assert len([m for m in stored if m.role == "assistant"]) == 3


async def test_photos_and_stickers_are_kept_as_segments(
    app: App, fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    alice, _, dm, _ = people(fake)
    photo = jpeg_bytes(640, 480)
    sticker = webp_bytes()
    with_photo = fake.message(dm, alice, "my cat", photo=fake.photo(photo, width=640, height=480))
    await say(fake, with_photo)
    await say(fake, fake.message(dm, alice, None, sticker=fake.sticker(sticker, emoji="😺")))
    stored = [m for m in await app.store.recent_messages(ALICE_DM, limit=10) if m.role == "user"]
    assert stored[0].text == "my cat"
    image = next(s for s in stored[0].segments if isinstance(s, Image))
    assert (image.width, image.height, image.mime) == (640, 480, "image/jpeg")
    assert await app.blobs.get(image.blob_key) == photo  # the largest size, downloaded
    kept = next(s for s in stored[1].segments if isinstance(s, Sticker))
    assert kept.emotion == "😺"
    assert await app.blobs.get(kept.blob_key) == sticker


async def test_a_file_over_the_attachment_limit_is_not_downloaded(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        llm={"backend": "stub"},
        embed={"backend": "hash"},
        stickers={"enabled": False},
        telegram={"token": fake.token, "api_base": fake.base, "poll_timeout": 1},
        limits={"max_attachment_mb": 1 / 1024},  # 1 KB
    )
    app = await app_with_speech(settings)
    adapter = build_telegram(app)  # wired from the settings, as `tomo run` does
    task = asyncio.create_task(adapter.run())
    try:
        await fake.wait_for(lambda: any(c.method == "getUpdates" for c in fake.calls), what="poll")
        alice, _, dm, _ = people(fake)
        photo = fake.photo(jpeg_bytes(640, 480), width=640, height=480)
        said = await say(fake, fake.message(dm, alice, "my cat", photo=photo), replies=2)
        assert said == [
            "I couldn't get that from Telegram: the image is larger than 1 KB.",
            "You said: my cat",
        ]
        assert not any(c.method == "getFile" for c in fake.calls)  # never fetched
        [stored] = [m for m in await app.store.recent_messages(ALICE_DM, limit=5) if m.author_id]
        assert not any(isinstance(s, Image) for s in stored.segments)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app.aclose()


# voice ------------------------------------------------------------------------------------


async def test_voice_note_heard_and_answered_with_text_and_voice(
    app: App, fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    alice, _, dm, _ = people(fake)
    pcm = piper().synthesize_pcm("I planted tomatoes in the garden this morning.")
    ogg = codecs.encode_ogg_opus(pcm)
    note = fake.message(dm, alice, None, voice=fake.voice(ogg, duration=round(pcm.duration_s)))
    await say(fake, note, replies=2)
    mid = note["message_id"]
    (text,) = [c for c in fake.sent("sendMessage") if c.reply_to == mid]
    assert "tomato" in text.text.lower()
    (voice,) = [c for c in fake.sent("sendVoice") if c.reply_to == mid]
    assert voice.files["voice"][:4] == b"OggS"
    assert b"OpusHead" in voice.files["voice"][:512]
    assert int(voice.params["duration"]) >= 1
    assert "record_voice" in fake.actions(ALICE_ID)
    stored = await app.store.recent_messages(ALICE_DM, limit=10)
    assert "tomato" in stored[0].text.lower()  # the transcript is kept with the message


# sending ----------------------------------------------------------------------------------


async def test_the_brains_sticker_render_goes_out_as_a_webp_sticker(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    card = (REPO / "brain" / "persona" / "default.yaml").read_text("utf-8")
    persona = tmp_path / "always-stickers.yaml"
    persona.write_text(card.replace("sticker_rate: 0.2", "sticker_rate: 1.0"), "utf-8")
    settings = make_settings(tmp_path, fake, stickers=True)
    settings.persona = persona
    alice, _, dm, _ = people(fake)
    app = await app_with_speech(settings)
    try:
        async with running(app, fake):
            message = fake.message(dm, alice, "I passed my driving test today!")
            await say(fake, message, replies=2)
    finally:
        await app.aclose()
    text, sticker = [c for c in fake.sent() if c.reply_to == message["message_id"]]
    assert text.method == "sendMessage"
    assert sticker.method == "sendSticker"
    data = sticker.files["sticker"]
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"


async def test_sticker_photo_and_long_text_go_out_whole(
    app: App, fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    sticker = webp_bytes()
    key = await app.blobs.put(sticker, mime="image/webp")
    segments = (Sticker(blob_key=key, size_bytes=len(sticker), emotion="happy"),)
    delivered = await bot.deliver(Reply(chat=ALICE_DM, segments=segments, reply_to="42"))
    assert delivered is Delivery.SENT
    (sent,) = fake.sent("sendSticker")
    assert sent.files["sticker"] == sticker
    assert (sent.chat_id, sent.reply_to) == (ALICE_ID, 42)

    paragraphs = [f"Paragraph {i}. " + "word " * 300 for i in range(12)]
    long_text = "\n\n".join(p.strip() for p in paragraphs)
    await bot.deliver(Reply(chat=ALICE_DM, segments=(Text(text=long_text),)))
    pieces = [c.text for c in fake.sent("sendMessage")]
    assert len(pieces) >= 3
    assert all(len(p) <= 4096 for p in pieces)
    assert all(p.startswith("Paragraph") for p in pieces)  # cut between paragraphs
    assert "\n\n".join(pieces) == long_text


async def test_flood_control_and_network_errors_are_retried_and_the_reply_sent_once(
    app: App, fake: FakeTelegram, bot: TelegramAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice, _, dm, _ = people(fake)
    fake.fail_next("sendMessage", times=1, retry_after=1)
    fake.fail_next("sendMessage", times=1, code=502)  # then a network error (backoff)
    loop = asyncio.get_running_loop()
    started = loop.time()
    photo = jpeg_bytes(64, 64)
    (answer,) = await say(
        fake, fake.message(dm, alice, "hi there", photo=fake.photo(photo, width=64, height=64))
    )
    assert loop.time() - started >= 1.0
    assert answer.startswith("You said:")
    statuses = [c.status for c in fake.calls if c.method == "sendMessage"]
    assert statuses == [429, 502, 200]
    # The token is in every Bot API URL; it is never in the logs.
    assert "HTTP Request" in caplog.text  # httpx did log the URLs...
    assert fake.token not in caplog.text  # ...with the token masked
    assert "<token>" in caplog.text


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
    await memory.longterm.put_summary(
        kind="profile", subject=str(person.id), text="Alice has a sister, May.", at=now
    )
    return first.id


async def test_every_memory_command_in_a_dm(
    app: App, fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    alice, _, dm, _ = people(fake)
    await say(fake, fake.message(dm, alice, "My sister May just moved to Osaka."))
    mid = await seed_memory(app)

    async def command(text: str) -> str:
        (answer,) = await say(fake, fake.message(dm, alice, text))
        return answer

    assert f"#{mid} Alice's sister May moved to Osaka" in await command("/memory list")
    assert f"#{mid}" in await command(f"/memory@{BOT_USERNAME} search Osaka")
    shown = await command(f"/memory show {mid}")
    assert "moved to Osaka" in shown
    assert f"/memory history {mid}" in shown
    assert "lives in Kobe" in await command(f"/memory history {mid}")
    assert "sister, May" in await command("/memory profile")

    export = fake.message(dm, alice, "/memory export")
    (summary,) = await say(fake, export, replies=2)
    (document,) = fake.sent("sendDocument")
    assert (document.chat_id, document.reply_to) == (ALICE_ID, export["message_id"])
    data = document.files["document"]
    exported = json.loads(data)
    assert exported["format"] == "tomo-export/1"
    assert [m["text"] for m in exported["memories"]] == [
        "Alice's sister May moved to Osaka in June."
    ]
    assert "Everything I keep about you" in summary
    # delivered, then deleted (just after Telegram answered the upload)
    for _ in range(250):
        try:
            await app.blobs.get(blob_key(data))
        except UnknownBlobError:
            break
        await asyncio.sleep(0.02)
    with pytest.raises(UnknownBlobError):
        await app.blobs.get(blob_key(data))

    preview = await command(f"/memory forget {mid}")
    assert f"/memory forget {mid} confirm" in preview
    assert "Forgotten" in await command(f"/memory forget {mid} confirm")
    assert f"#{mid}" not in await command("/memory list")


async def test_memory_in_a_group_is_answered_privately(
    app: App, fake: FakeTelegram, bot: TelegramAdapter
) -> None:
    alice, bob, dm, group = people(fake)
    await say(fake, fake.message(dm, alice, "My sister May just moved to Osaka."))
    mid = await seed_memory(app)

    asked = fake.message(group, alice, "/memory list")
    (note,) = await say(fake, asked)
    assert "private chat" in note
    private = [c for c in fake.sent("sendMessage", chat_id=ALICE_ID) if f"#{mid}" in c.text]
    assert len(private) == 1
    assert private[0].reply_to is None  # not threaded to a message of another chat
    assert not [c for c in fake.sent(chat_id=GROUP_ID) if f"#{mid}" in c.text]

    export = fake.message(group, alice, f"/memory@{BOT_USERNAME} export")
    await say(fake, export)
    await fake.wait_for(lambda: bool(fake.sent("sendDocument")), what="the export")
    assert [c.chat_id for c in fake.sent("sendDocument")] == [ALICE_ID]

    fake.not_started.add(BOB_ID)  # Bob never opened a private chat with the bot
    (refused,) = await say(fake, fake.message(group, bob, "/memory list"))
    assert "haven't started a chat with me" in refused
    assert f"@{BOT_USERNAME}" in refused
    assert not fake.sent(chat_id=BOB_ID)


# restarts, webhooks, failures -------------------------------------------------------------


async def test_a_restart_neither_loses_nor_repeats_updates(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    alice, _, dm, _ = people(fake)
    settings = make_settings(tmp_path, fake)
    first = [fake.message(dm, alice, f"message {i}") for i in range(3)]
    app = await app_with_speech(settings)
    try:
        async with running(app, fake):
            for message in first:
                await fake.enqueue(message)
            await fake.wait_for(lambda: len(fake.sent("sendMessage")) >= 3, what="3 replies")
            await fake.wait_for(lambda: fake.pending == [], what="the updates confirmed")
    finally:
        await app.aclose()

    later = [fake.message(dm, alice, f"message {i}") for i in range(3, 5)]
    for message in later:
        await fake.enqueue(message)  # while tomo is down
    app = await app_with_speech(settings)
    try:
        async with running(app, fake):
            await fake.wait_for(lambda: len(fake.sent("sendMessage")) >= 5, what="5 replies")
            await fake.wait_for(lambda: fake.pending == [], what="the updates confirmed")
    finally:
        await app.aclose()
    # The restarted bot was handed only what came while it was down (once each).
    assert sorted(fake.handed_out) == sorted(u["update_id"] for u in fake.delivered)

    # A crash before anything was confirmed: Telegram delivers all of it again.
    fake.forget_confirmations()
    last = fake.message(dm, alice, "message 5")
    await fake.enqueue(last)
    app = await app_with_speech(settings)
    try:
        async with running(app, fake):
            await fake.wait_for(lambda: len(fake.sent("sendMessage")) >= 6, what="6 replies")
            await fake.wait_for(lambda: fake.pending == [], what="the redelivery confirmed")
            await asyncio.sleep(0.2)
    finally:
        await app.aclose()
    answered = sorted(c.reply_to or 0 for c in fake.sent("sendMessage"))
    assert answered == sorted(m["message_id"] for m in [*first, *later, last])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_webhook_mode_checks_the_secret_and_answers_before_acknowledging(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    alice, _, dm, _ = people(fake)
    port = free_port()
    settings = make_settings(
        tmp_path,
        fake,
        webhook_url=f"http://127.0.0.1:{port}/telegram/hook",
        webhook_listen="127.0.0.1",
        webhook_port=port,
    )
    app = await app_with_speech(settings)
    try:
        async with running(app, fake):
            assert fake.webhook is not None
            assert fake.webhook["allowed_updates"] == ["message", "edited_message"]
            secret = fake.webhook["secret_token"]
            assert len(secret or "") >= 32
            update = {"update_id": 1, "message": fake.message(dm, alice, "over the webhook")}
            assert await fake.post_to_webhook(update, secret="wrong") == 403
            assert await fake.post_to_webhook(update) == 200
            (reply,) = fake.sent("sendMessage")  # already sent when the 200 came
            assert "over the webhook" in reply.text
            assert await fake.post_to_webhook(update) == 200  # Telegram retrying
            assert len(fake.sent("sendMessage")) == 1
    finally:
        await app.aclose()


class EditLog:
    def __init__(self) -> None:
        self.edits: list[Inbound] = []

    async def edit(self, inbound: Inbound) -> None:
        self.edits.append(inbound)


async def test_edited_messages_go_to_the_edit_sink_unanswered(app: App, fake: FakeTelegram) -> None:
    alice, _, dm, _ = people(fake)
    edits = EditLog()
    async with running(app, fake, edits=edits):
        original = fake.message(dm, alice, "I live in Kobe")
        await say(fake, original)
        changed = {**original, "text": "I live in Osaka", "edit_date": original["date"] + 5}
        await fake.enqueue(changed, edited=True)
        await fake.wait_for(lambda: bool(edits.edits), what="the edit")
    (edit,) = edits.edits
    assert (edit.id, edit.text) == (str(original["message_id"]), "I live in Osaka")
    assert len(fake.sent("sendMessage")) == 1


async def test_a_refused_token_is_a_clear_error_without_the_token(
    tmp_path: Path, fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "1234567:WRONG-token-never-to-be-shown"
    settings = make_settings(tmp_path, fake, token=wrong)
    app = await app_with_speech(settings)
    try:
        with pytest.raises(ConfigError) as caught:
            await build_telegram(app).run()
    finally:
        await app.aclose()
    assert str(caught.value) == BAD_TOKEN
    assert wrong not in caplog.text
    assert "WRONG" not in caplog.text


async def test_tomo_run_serves_telegram_until_stopped(tmp_path: Path, fake: FakeTelegram) -> None:
    alice, _, dm, _ = people(fake)
    settings = make_settings(tmp_path, fake)
    stop = asyncio.Event()
    task = asyncio.create_task(run_platforms(settings, stop=stop))
    message = fake.message(dm, alice, "are you running?")
    await say(fake, message)
    await fake.wait_for(lambda: fake.pending == [], what="the update confirmed")
    stop.set()
    await asyncio.wait_for(task, 10)  # a clean return: polling stopped, clients closed
    assert task.result() is None

    discord = Settings(  # an adapter's own error (the stub model: no model load to stop)
        data_dir=tmp_path,
        llm={"backend": "stub"},
        embed={"backend": "hash"},
        discord={"token": " "},
    )
    with pytest.raises(ConfigError, match="TOMO_DISCORD__TOKEN is empty"):
        await run_platforms(discord)


async def test_tomo_run_stops_cleanly_on_sigterm(tmp_path: Path, fake: FakeTelegram) -> None:
    """The real entry point: `tomo run` with a token serves Telegram (not the terminal
    chat), logs without the token, and SIGTERM stops it cleanly (exit status 0)."""
    alice, _, dm, _ = people(fake)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOMO_")}
    env.update(
        PYTHONPATH=str(REPO),
        TOMO_DATA_DIR=str(tmp_path / "data"),
        TOMO_LLM__BACKEND="stub",
        TOMO_EMBED__BACKEND="hash",
        TOMO_TTS__BACKEND="off",
        TOMO_STT__ENABLED="false",
        TOMO_STICKERS__ENABLED="false",
        TOMO_LOG_LEVEL="INFO",
        TOMO_TELEGRAM__TOKEN=fake.token,
        TOMO_TELEGRAM__API_BASE=fake.base,
        TOMO_TELEGRAM__POLL_TIMEOUT="1",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots",
        "run",
        env=env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        message = fake.message(dm, alice, "hello from the other side")
        await fake.enqueue(message)
        await fake.wait_for(
            lambda: bool(fake.sent("sendMessage")) or proc.returncode is not None,
            within=60,
            what="the reply",
        )
        await fake.wait_for(lambda: fake.pending == [], what="the update confirmed")
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    log_text = err.decode()
    assert proc.returncode == 0, log_text[-2000:]
    assert [c.reply_to for c in fake.sent("sendMessage")] == [message["message_id"]]
    assert "getUpdates" in log_text  # httpx logged the Bot API URLs...
    assert fake.token not in log_text  # ...without the token
    assert out == b""  # no terminal chat
