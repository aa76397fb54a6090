"""Discord end to end: the real discord.py adapter against a fake Discord (REST, gateway
websocket with zlib-stream, CDN) on 127.0.0.1, with a real Brain on SQLite (stub model,
hash embeddings, real speech)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from bots.app import App, build_discord
from bots.delivery import Delivery
from bots.discord.adapter import BAD_TOKEN, NO_CONTENT_INTENT, DiscordAdapter
from bots.discord.send import RetryPolicy
from bots.runner import run_platforms
from bots.settings import LimitSettings, Settings
from brain.blobs import UnknownBlobError, blob_key
from brain.errors import ConfigError
from brain.limits import PERSON_TOO_FAST
from brain.memory.types import NewMemory, scope_of
from brain.messages import ChatRef, Image, PersonRef, Reply, Sticker, Text
from brain.speech import codecs
from tests.fakes.discord_api import IS_VOICE_MESSAGE, JSON, FakeDiscord, Posted
from tests.speech_kit import app_with_speech, piper

REPO = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(attempts=5, first_delay_s=0.05, max_delay_s=0.2)
MESSAGES = "POST /channels/{channel_id}/messages"


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def make_settings(
    tmp_path: Path, fake: FakeDiscord, *, stickers: bool = False, **discord: Any
) -> Settings:
    return Settings(
        data_dir=tmp_path,
        llm={"backend": "stub"},
        embed={"backend": "hash"},
        stickers={"enabled": stickers},  # random sticker replies: only where a test wants them
        discord={"token": fake.token, "api_base": fake.api_base, **discord},
        # these suites send many commands in a row; the limits have their own tests
        limits={"enabled": False},
    )


@contextlib.asynccontextmanager
async def running(app: App, **kw: Any) -> AsyncIterator[DiscordAdapter]:
    """The adapter connected (READY, commands synced) until the block ends."""
    adapter = DiscordAdapter(
        app.settings.discord,
        brain=app.brain,
        blobs=app.blobs,
        edits=app.brain,
        retry=FAST,
        typing_every_s=0.2,
        guild_ready_timeout_s=0.05,
        reidentify_delay_s=0.05,
        **kw,
    )
    task = asyncio.create_task(adapter.run())
    ready = asyncio.ensure_future(adapter.ready.wait())
    await asyncio.wait([task, ready], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # its error
    assert adapter.ready.is_set(), "the adapter did not connect"
    try:
        yield adapter
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not adapter.connected  # closed


@pytest.fixture
async def app(tmp_path: Path, fake: FakeDiscord) -> AsyncIterator[App]:
    the_app = await app_with_speech(make_settings(tmp_path, fake))
    try:
        yield the_app
    finally:
        await the_app.aclose()


@dataclass(frozen=True)
class World:
    alice: JSON
    bob: JSON
    dm: JSON  # Alice's DM with the bot
    guild: JSON
    general: JSON  # a text channel of the guild


@pytest.fixture
def world(fake: FakeDiscord) -> World:
    """People and places, made before the bot connects (READY names the guilds)."""
    alice = fake.user(1100000000000000101, "alice", global_name="Alice Liddell")
    bob = fake.user(1100000000000000102, "bob", global_name="Bob")
    guild = fake.guild("Tea club", channels=("general",))
    return World(
        alice=alice, bob=bob, dm=fake.dm_channel(alice), guild=guild, general=guild["channels"][0]
    )


@pytest.fixture
async def bot(app: App, fake: FakeDiscord, world: World) -> AsyncIterator[DiscordAdapter]:
    async with running(app) as adapter:
        yield adapter


def dm_ref(world: World) -> ChatRef:
    return ChatRef(platform="discord", chat_id=world.dm["id"], kind="dm")


def group_ref(world: World) -> ChatRef:
    return ChatRef(platform="discord", chat_id=world.general["id"], kind="group")


def alice_ref(world: World) -> PersonRef:
    return PersonRef(platform="discord", user_id=world.alice["id"], display_name="Alice Liddell")


async def say(fake: FakeDiscord, message: JSON, *, replies: int = 1) -> list[Posted]:
    """Post `message` and wait for `replies` messages of the bot referencing it."""
    await fake.post(message)
    await fake.wait_for(
        lambda: len(fake.replies_to(message)) >= replies,
        what=f"{replies} replies to {message.get('content')!r}",
    )
    return fake.replies_to(message)


def webp_bytes() -> bytes:
    out = io.BytesIO()
    PILImage.new("RGBA", (512, 512), (255, 160, 40, 200)).save(out, format="WEBP")
    return out.getvalue()


def png_bytes(width: int, height: int) -> bytes:
    out = io.BytesIO()
    PILImage.new("RGB", (width, height), (20, 120, 220)).save(out, format="PNG")
    return out.getvalue()


# conversation -----------------------------------------------------------------------------


async def test_dm_round_trip_with_typing_and_slash_commands_synced(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    message = fake.message(world.dm, world.alice, "Hello! I just got back from Kyoto.")
    (answer,) = await say(fake, message)
    assert answer.content.startswith("You said:")
    assert "Kyoto" in answer.content
    assert answer.payload["message_reference"]["fail_if_not_exists"] is False
    assert answer.payload["allowed_mentions"] == {"parse": []}  # nobody is pinged
    assert fake.typing(world.dm) >= 1
    # The gateway was compressed (zlib-stream) and identified with the intents asked for.
    assert fake.gateway.compressions == ["zlib-stream"]
    (identify,) = fake.gateway.identifies
    assert identify["intents"] == (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15)
    commands = {c["name"]: c for c in fake.commands[None]}
    assert sorted(commands) == ["link", "memory", "sticker", "voice"]
    assert [o["name"] for o in commands["memory"]["options"]] == [
        "list",
        "search",
        "show",
        "history",
        "forget",
        "forget-all",
        "export",
        "profile",
        "consolidate",
    ]
    stored = await app.store.recent_messages(dm_ref(world), limit=10)
    assert [(m.role, m.platform_message_id) for m in stored] == [
        ("user", message["id"]),
        ("assistant", None),
    ]
    assert stored[0].author_name == "Alice Liddell"
    assert stored[0].text == "Hello! I just got back from Kyoto."


async def test_guild_answers_only_when_addressed_and_remembers_the_rest(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    me, general = fake.bot_user, world.general
    helper = fake.user(1100000000000000199, "otherbot", bot=True)
    bot_said = fake.message(general, me, "Green tea is lovely.")
    overheard = fake.message(general, world.bob, "I think the meeting is on Friday")
    mentioned = fake.message(
        general, world.alice, f"{fake.mention(me)} what day is the meeting?", mentions=(me,)
    )
    replied = fake.message(general, world.bob, "and why green?", reply_to=bot_said)
    from_a_bot = fake.message(general, helper, f"{fake.mention(me)} hi", mentions=(me,))
    answered = [mentioned, replied]
    for message in [overheard, mentioned, replied, from_a_bot]:
        await fake.post(message)
    await fake.wait_for(lambda: len(fake.sent(general)) >= len(answered), what="replies")
    await asyncio.sleep(0.3)  # nothing more comes

    sent = fake.sent(general)
    assert sorted(p.reply_to or 0 for p in sent) == sorted(int(m["id"]) for m in answered)
    for posted in sent:  # a guild reply pings the person it answers, and nobody else
        assert posted.payload["allowed_mentions"] == {"parse": [], "replied_user": True}
    stored = await app.store.recent_messages(group_ref(world), limit=50)
    users = [(m.platform_message_id, m.text) for m in stored if m.role == "user"]
    assert users == [
        (overheard["id"], "I think the meeting is on Friday"),
        (mentioned["id"], "what day is the meeting?"),  # the mention is not part of it
        (replied["id"], "and why green?"),
        (from_a_bot["id"], "hi"),  # remembered, never answered
    ]
    assert len([m for m in stored if m.role == "assistant"]) == 2


async def test_images_are_kept_as_segments(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    photo = png_bytes(640, 480)
    attachment = fake.attachment(
        world.dm, photo, filename="cat.png", content_type="image/png", size=(640, 480)
    )
    await say(fake, fake.message(world.dm, world.alice, "my cat", attachments=(attachment,)))
    (stored,) = [
        m for m in await app.store.recent_messages(dm_ref(world), limit=10) if m.role == "user"
    ]
    assert stored.text == "my cat"
    image = next(s for s in stored.segments if isinstance(s, Image))
    assert (image.width, image.height, image.mime) == (640, 480, "image/png")
    assert await app.blobs.get(image.blob_key) == photo


async def test_an_edited_message_updates_what_was_stored_unanswered(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    original = fake.message(world.dm, world.alice, "I live in Kobe")
    await say(fake, original)
    await fake.edit(original, "I live in Osaka")

    async def stored_text() -> str:
        stored = await app.store.recent_messages(dm_ref(world), limit=10)
        return next(m.text for m in stored if m.platform_message_id == original["id"])

    deadline = asyncio.get_running_loop().time() + 10
    while await stored_text() != "I live in Osaka":
        assert asyncio.get_running_loop().time() < deadline, "the edit was not applied"
        await asyncio.sleep(0.05)
    assert len(fake.sent(world.dm)) == 1  # not answered again


# voice ------------------------------------------------------------------------------------


async def test_voice_message_heard_and_answered_with_text_and_a_voice_message(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    pcm = piper().synthesize_pcm("I planted tomatoes in the garden this morning.")
    ogg = codecs.encode_ogg_opus(pcm)
    voice = fake.attachment(
        world.dm,
        ogg,
        filename="voice-message.ogg",
        content_type="audio/ogg",
        voice=(round(pcm.duration_s, 2), codecs.waveform(pcm)),
    )
    note = fake.message(world.dm, world.alice, "", attachments=(voice,))
    text, spoken = await say(fake, note, replies=2)
    assert "tomato" in text.content.lower()
    assert spoken.flags == IS_VOICE_MESSAGE
    assert spoken.content == ""
    ((filename, data, content_type),) = spoken.files
    assert (filename, content_type) == ("voice-message.ogg", "audio/ogg")
    assert data[:4] == b"OggS"
    assert b"OpusHead" in data[:512]
    (meta,) = spoken.attachments
    assert len(base64.b64decode(meta["waveform"])) == 256
    assert 0.5 < meta["duration_secs"] < 30
    assert spoken.reply_to == int(note["id"])
    stored = await app.store.recent_messages(dm_ref(world), limit=10)
    assert "tomato" in stored[0].text.lower()  # the transcript is kept with the message


# sending ----------------------------------------------------------------------------------


async def test_the_brains_sticker_render_goes_out_as_a_webp_image(
    tmp_path: Path, fake: FakeDiscord, world: World
) -> None:
    card = (REPO / "brain" / "persona" / "default.yaml").read_text("utf-8")
    persona = tmp_path / "always-stickers.yaml"
    persona.write_text(card.replace("sticker_rate: 0.2", "sticker_rate: 1.0"), "utf-8")
    settings = make_settings(tmp_path, fake, stickers=True)
    settings.persona = persona
    app = await app_with_speech(settings)
    try:
        async with running(app):
            message = fake.message(world.dm, world.alice, "I passed my driving test today!")
            text, sticker = await say(fake, message, replies=2)
    finally:
        await app.aclose()
    assert text.content.startswith("You said:")
    ((filename, data, _),) = sticker.files
    assert filename == "sticker.webp"
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    assert sticker.reply_to == int(message["id"])


async def test_long_text_is_split_and_pings_nobody(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    sticker = webp_bytes()
    key = await app.blobs.put(sticker, mime="image/webp")
    segments = (Sticker(blob_key=key, size_bytes=len(sticker), emotion="happy"),)
    delivered = await bot.deliver(Reply(chat=dm_ref(world), segments=segments))
    assert delivered is Delivery.SENT
    ((filename, data, _),) = fake.sent(world.dm)[0].files
    assert (filename, data) == ("sticker.webp", sticker)

    paragraphs = [f"Paragraph {i}. " + "word " * 150 for i in range(12)]
    long_text = "@everyone listen: " + "\n\n".join(p.strip() for p in paragraphs)
    await bot.deliver(Reply(chat=group_ref(world), segments=(Text(text=long_text),)))
    pieces = [p.content for p in fake.sent(world.general)]
    assert len(pieces) >= 3
    assert all(len(p) <= 2000 for p in pieces)
    assert "\n\n".join(pieces) == long_text
    assert all(p.payload["allowed_mentions"]["parse"] == [] for p in fake.sent(world.general))


# /memory ----------------------------------------------------------------------------------


async def seed_memory(app: App, world: World) -> int:
    """Alice told tomo about her sister in their DM; consolidation made a memory of it
    (later corrected), and wrote her profile."""
    memory = app.brain.memory
    assert memory is not None
    person = await app.store.resolve_person(alice_ref(world), seen_at=datetime.now(UTC))
    source = next(
        m for m in await app.store.recent_messages(dm_ref(world), limit=10) if m.role == "user"
    )
    scope = scope_of(dm_ref(world), person_id=person.id)
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


async def blob_gone(app: App, key: str, *, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        try:
            await app.blobs.get(key)
        except UnknownBlobError:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"blob {key} was not deleted")


async def slash(
    fake: FakeDiscord, world: World, name: str, *args: str, answers: int = 1, **options: Any
) -> tuple[JSON, list[Posted]]:
    """Alice runs `/name [sub] option:value` in her DM; the bot's answers to it."""
    interaction = await fake.interact(fake.slash(world.alice, world.dm, name, *args, **options))
    await fake.wait_for(
        lambda: len(fake.answers(interaction)) >= answers, what=f"the answer to /{name} {args}"
    )
    found = fake.answers(interaction)
    assert all(p.ephemeral for p in found), "slash command answers are ephemeral"
    return interaction, found


async def test_every_memory_slash_command_answers_ephemerally(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    await say(fake, fake.message(world.dm, world.alice, "My sister May just moved to Osaka."))
    mid = await seed_memory(app, world)

    async def command(*args: str, **options: Any) -> str:
        interaction, (answer,) = await slash(fake, world, "memory", *args, **options)
        assert fake.callback_types(interaction) == [4]  # answered at once
        return answer.content

    assert f"#{mid} Alice's sister May moved to Osaka" in await command("list")
    assert "no page 2" in await command("list", page=2)
    assert f"#{mid}" in await command("search", query="sister Osaka")
    shown = await command("show", id=mid)
    assert "moved to Osaka" in shown
    assert f"/memory history {mid}" in shown
    assert "lives in Kobe" in await command("history", id=mid)
    assert "sister, May" in await command("profile")
    assert "I have no memory #999" in await command("show", id=999)

    interaction, (exported_message,) = await slash(fake, world, "memory", "export")
    assert fake.callback_types(interaction) == [5]  # deferred ("thinking..."), then a follow-up
    assert "Everything I keep about you" in exported_message.content
    ((filename, data, _),) = exported_message.files
    assert filename.endswith(".json")
    exported = json.loads(data)
    assert exported["format"] == "tomo-export/1"
    assert [m["text"] for m in exported["memories"]] == [
        "Alice's sister May moved to Osaka in June."
    ]
    await blob_gone(app, blob_key(data))  # delivered, then deleted

    interaction, (consolidated,) = await slash(fake, world, "memory", "consolidate")
    assert fake.callback_types(interaction) == [5]
    assert consolidated.content

    # Forget one: a preview with a button; the button confirms.
    _, (preview,) = await slash(fake, world, "memory", "forget", id=mid)
    assert f"/memory forget {mid} confirm" in preview.content
    assert preview.custom_ids == [f"tomo:forget:{mid}"]
    pressed = await fake.interact(fake.press(world.alice, preview, f"tomo:forget:{mid}"))
    await fake.wait_for(lambda: preview.edits > 0, what="the preview replaced")
    assert fake.callback_types(pressed) == [7]  # the preview itself is updated...
    assert preview.content.startswith(f"Forgotten: #{mid}")
    assert preview.custom_ids == []  # ...and its button is gone
    assert f"#{mid}" not in await command("list")

    # Forget everything: the same, with its own button.
    await say(fake, fake.message(world.dm, world.alice, "I like green tea."))
    _, (preview_all,) = await slash(fake, world, "memory", "forget-all")
    assert "/memory forget all confirm" in preview_all.content
    pressed = await fake.interact(fake.press(world.alice, preview_all, "tomo:forget:all"))
    await fake.wait_for(lambda: preview_all.edits > 0, what="forget all")
    assert preview_all.content.startswith("Done: I forgot everything about you")

    # The other commands go through the same path.
    _, (voice,) = await slash(fake, world, "voice", state="on")
    assert "Voice replies are on" in voice.content
    _, (sticker,) = await slash(fake, world, "sticker")
    assert sticker.content
    _, (link,) = await slash(fake, world, "link", code="ABC 123")
    assert "Unknown command /link" in link.content


async def test_slash_commands_over_the_rate_limit_say_so_and_forget_nothing(
    tmp_path: Path, fake: FakeDiscord, world: World
) -> None:
    settings = make_settings(tmp_path, fake).model_copy(
        update={"limits": LimitSettings(person_burst=3, person_per_minute=0.1)}
    )
    app = await app_with_speech(settings)
    try:
        async with running(app):
            await say(fake, fake.message(world.dm, world.alice, "My sister May moved."))  # 1
            mid = await seed_memory(app, world)
            _, (preview,) = await slash(fake, world, "memory", "forget", id=mid)  # 2
            _, (listed,) = await slash(fake, world, "memory", "list")  # 3: the last token
            assert f"#{mid}" in listed.content
            pressed = await fake.interact(fake.press(world.alice, preview, f"tomo:forget:{mid}"))
            await fake.wait_for(lambda: len(fake.answers(pressed)) >= 1, what="the note")
            [note] = fake.answers(pressed)
            assert (note.content, note.ephemeral) == (PERSON_TOO_FAST, True)
            assert preview.custom_ids == [f"tomo:forget:{mid}"]  # the button stays
            memory = app.brain.memory
            assert memory is not None
            assert await memory.longterm.get_memory(mid) is not None  # nothing forgotten
            # the brain is silent from here on, but an interaction needs an answer: the
            # note again, never a "Done." for something not done
            _, (again,) = await slash(fake, world, "memory", "list")
            assert again.content == PERSON_TOO_FAST
    finally:
        await app.aclose()


async def test_memory_asked_in_a_guild_message_is_answered_by_dm(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    await say(fake, fake.message(world.dm, world.alice, "My sister May just moved to Osaka."))
    mid = await seed_memory(app, world)
    me = fake.bot_user
    asked = fake.message(
        world.general, world.alice, f"{fake.mention(me)} /memory list", mentions=(me,)
    )
    (note,) = await say(fake, asked)
    assert "answered you in a DM" in note.content
    private = [p for p in fake.sent(world.dm) if f"#{mid}" in p.content]
    assert len(private) == 1
    assert private[0].reply_to is None  # not threaded to a message of another channel
    assert not [p for p in fake.sent(world.general) if f"#{mid}" in p.content]


async def test_slash_commands_synced_to_guilds_answer_privately_there(
    tmp_path: Path, fake: FakeDiscord, world: World
) -> None:
    guild_id = int(world.guild["id"])
    app = await app_with_speech(make_settings(tmp_path, fake, guild_ids=[guild_id]))
    try:
        async with running(app):
            assert list(fake.commands) == [guild_id]  # shown at once, in that guild only
            asked = fake.slash(world.bob, world.general, "memory", "list")
            await fake.interact(asked)
            await fake.wait_for(lambda: bool(fake.answers(asked)), what="the answer")
    finally:
        await app.aclose()
    (answer,) = fake.answers(asked)
    assert answer.ephemeral
    assert "I don't remember anything about you yet" in answer.content
    assert not fake.sent(world.general)  # nothing in the channel itself


# connection, rate limits, failures --------------------------------------------------------


async def test_a_dropped_gateway_is_resumed_and_nothing_is_lost(
    app: App, fake: FakeDiscord, world: World, bot: DiscordAdapter
) -> None:
    await say(fake, fake.message(world.dm, world.alice, "before the drop"))
    assert bot.connected  # what readiness reports
    session = fake.gateway.session
    assert session is not None
    seq_before = session.seq
    await fake.gateway.drop(code=4000)  # resumable
    # Said while the bot is away: Discord keeps it for the session and replays it.
    missed = fake.message(world.dm, world.alice, "while you were away")
    await fake.post(missed)
    await fake.wait_for(lambda: bool(fake.gateway.resumes), what="RESUME")
    (resume,) = fake.gateway.resumes
    assert resume["session_id"] == session.id
    assert resume["seq"] == seq_before
    assert resume["token"] == fake.token
    assert fake.gateway.paths == ["/gateway", "/resume-gateway"]  # resume_gateway_url
    await fake.wait_for(lambda: bool(fake.replies_to(missed)), what="the missed message")
    (answer,) = fake.replies_to(missed)
    assert "while you were away" in answer.content
    assert missed["id"] in [e["d"].get("id") for e in fake.gateway.replayed]  # replayed on RESUME
    assert len(fake.gateway.identifies) == 1  # resumed, not identified anew
    assert bot.connected

    # A session Discord dropped is not resumed: the bot identifies anew and goes on.
    await fake.gateway.invalidate()
    await fake.wait_for(lambda: len(fake.gateway.identifies) == 2, what="a new IDENTIFY")
    assert fake.gateway.session is not session
    (back,) = await say(fake, fake.message(world.dm, world.alice, "are you back?"))
    assert "are you back" in back.content


async def test_a_rate_limited_send_waits_and_is_delivered_once(
    app: App,
    fake: FakeDiscord,
    world: World,
    bot: DiscordAdapter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_next(MESSAGES, retry_after=0.6)
    loop = asyncio.get_running_loop()
    started = loop.time()
    message = fake.message(world.dm, world.alice, "hi there")
    (answer,) = await say(fake, message)
    assert loop.time() - started >= 0.6
    assert answer.content.startswith("You said:")
    assert [c.status for c in fake.calls_to(MESSAGES)] == [429, 200]
    await asyncio.sleep(0.2)
    assert len(fake.replies_to(message)) == 1
    # A send whose answer is lost (Discord posted it, then failed) is retried with
    # backoff and the same nonce: Discord hands back the message it has, posted once.
    fake.fail_next(MESSAGES, times=2, status=503, after_handling=True)
    delivered = await bot.deliver(Reply(chat=dm_ref(world), segments=(Text(text="later"),)))
    assert delivered is Delivery.SENT
    assert [c.status for c in fake.calls_to(MESSAGES)][-3:] == [503, 503, 200]
    assert [p.content for p in fake.sent(world.dm)].count("later") == 1
    assert "retry 2" in caplog.text
    assert "rate limited" in caplog.text
    assert fake.token not in caplog.text  # the token is never logged


async def test_a_refused_token_is_a_clear_error_without_the_token(
    tmp_path: Path, fake: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.WRONG.token-never-to-be-shown"
    app = await app_with_speech(make_settings(tmp_path, fake, token=wrong))
    try:
        with pytest.raises(ConfigError) as caught:
            await build_discord(app).run()
    finally:
        await app.aclose()
    assert str(caught.value) == BAD_TOKEN
    assert wrong not in caplog.text
    assert "WRONG" not in caplog.text


async def test_an_unreachable_api_is_a_clear_error(tmp_path: Path, fake: FakeDiscord) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(tmp_path, fake, api_base=f"http://127.0.0.1:{port}/api/v10")
    app = await app_with_speech(settings)
    try:
        adapter = DiscordAdapter(settings.discord, brain=app.brain, blobs=app.blobs, retry=FAST)
        with pytest.raises(ConfigError, match="Cannot reach the Discord API at http://127"):
            await adapter.run()
    finally:
        await app.aclose()


async def test_a_refused_message_content_intent_is_a_clear_error(
    tmp_path: Path, fake: FakeDiscord, world: World
) -> None:
    fake.gateway.message_content_allowed = False
    app = await app_with_speech(make_settings(tmp_path, fake))
    try:
        with pytest.raises(ConfigError) as caught:
            await asyncio.wait_for(build_discord(app).run(), 15)
        assert str(caught.value) == NO_CONTENT_INTENT
        # Without the intent tomo runs, answering what is said to it.
        settings = make_settings(tmp_path, fake, message_content_intent=False)
        app.settings = settings
        async with running(app):
            assert not fake.gateway.identifies[-1]["intents"] & (1 << 15)
            message = fake.message(world.dm, world.alice, "still there?")
            (answer,) = await say(fake, message)
            assert "still there" in answer.content
    finally:
        await app.aclose()


async def test_tomo_run_serves_discord_until_stopped(
    tmp_path: Path, fake: FakeDiscord, world: World
) -> None:
    settings = make_settings(tmp_path, fake, gateway_url=fake.gateway_url)
    stop = asyncio.Event()
    task = asyncio.create_task(run_platforms(settings, stop=stop))
    await fake.wait_for(lambda: bool(fake.gateway.live()) or task.done(), what="the gateway")
    message = fake.message(world.dm, world.alice, "are you running?")
    (answer,) = await say(fake, message)
    assert "are you running" in answer.content
    stop.set()
    await asyncio.wait_for(task, 10)  # a clean return: gateway closed, sessions closed
    assert task.result() is None
    assert not fake.calls_to("GET /gateway/bot")  # TOMO_DISCORD__GATEWAY_URL was used
