"""Voice through the brain: real piper speech in, real Whisper transcripts stored, real
OGG/Opus voice replies out; refusals that say why and still keep the message."""

from __future__ import annotations

import base64
import io
import uuid
from datetime import timedelta
from typing import Any

import av
import numpy as np
import pytest

from bots.app import build_speech
from bots.settings import Settings
from brain.blobs import MemoryBlobStore
from brain.clock import ManualClock
from brain.errors import ConfigError
from brain.llm.stub import StubModel
from brain.memory.showing import provenance
from brain.messages import Inbound, Text, Voice
from brain.mind import Brain, BrainConfig
from brain.persona.card import PersonaCard
from brain.speech import codecs
from brain.speech.pcm import Pcm
from brain.speech.service import Speech, asks_for_voice
from brain.speech.tts import EspeakSpeech
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, DM, GROUP, T0, inbound
from tests.speech_kit import piper, whisper, word_error_rate

PERSONA = PersonaCard(name="Tomo", self_description="A friend.")
SPOKEN = "I planted tomatoes in the garden this morning."


def make_brain(
    store: SqlMemoryStore, blobs: MemoryBlobStore, *, speech: Speech | None, **cfg: Any
) -> Brain:
    return Brain(
        store=store,
        model=StubModel(),
        persona=PERSONA,
        clock=ManualClock(T0 + timedelta(seconds=1)),
        config=BrainConfig(**cfg),
        speech=speech,
        blobs=blobs,
    )


def speech(**kw: Any) -> Speech:
    return Speech(stt=whisper(), tts=kw.pop("tts", piper()), **kw)


async def voice_inbound(
    blobs: MemoryBlobStore,
    data: bytes,
    *,
    duration_s: float,
    chat: Any = DM,
    to_bot: bool = True,
    mime: str = "audio/ogg",
) -> Inbound:
    key = await blobs.put(data, mime=mime)
    return Inbound(
        id=uuid.uuid4().hex,
        chat=chat,
        author=ALICE,
        segments=(Voice(blob_key=key, mime=mime, duration_s=duration_s),),
        to_bot=to_bot,
        sent_at=T0,
    )


@pytest.fixture(scope="module")
def spoken_ogg() -> tuple[bytes, float]:
    pcm = piper().synthesize_pcm(SPOKEN)
    return codecs.encode_ogg_opus(pcm), pcm.duration_s


async def test_a_voice_note_is_heard_stored_and_answered_by_voice(
    sqlite_store: SqlMemoryStore, spoken_ogg: tuple[bytes, float]
) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=speech())
    data, seconds = spoken_ogg
    [reply] = await brain.handle(await voice_inbound(blobs, data, duration_s=seconds))

    stored = await sqlite_store.recent_messages(DM, limit=10)
    heard = stored[0]
    assert heard.role == "user"
    [seg] = heard.segments
    assert isinstance(seg, Voice)
    assert seg.transcript == heard.text
    assert word_error_rate(SPOKEN, heard.text) < 0.2

    text, voice = reply.segments
    assert isinstance(text, Text)
    assert text.text == f"You said: {heard.text}"
    assert isinstance(voice, Voice)
    assert voice.transcript == text.text
    ogg = await blobs.get(voice.blob_key)
    with av.open(io.BytesIO(ogg)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate, stream.channels) == ("opus", 48000, 1)
    back = codecs.decode(ogg, rate=16000)
    assert abs(back.duration_s - voice.duration_s) < 0.1
    assert voice.waveform is not None
    assert len(base64.b64decode(voice.waveform)) == 256
    # The voice says what the text says.
    assert word_error_rate(text.text, await whisper().transcribe_pcm_async(back)) < 0.25
    # The reply, with its voice note, is stored as the answer.
    assert [type(s) for s in stored[1].segments] == [Text, Voice]
    # /memory show cites the transcript as a voice note.
    [cited] = provenance([heard])[1:]
    assert f"(voice note, 0:0{round(seconds)}) {heard.text}" in cited


async def test_voice_only_when_spoken_to_asked_or_turned_on(
    sqlite_store: SqlMemoryStore,
) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=speech())

    def voices(replies: list[Any]) -> int:
        return sum(isinstance(s, Voice) for r in replies for s in r.segments)

    assert voices(await brain.handle(inbound("how are you?"))) == 0
    assert voices(await brain.handle(inbound("Please say it out loud: good night"))) == 1
    [on] = await brain.handle(inbound("/voice on"))
    assert "on" in on.text
    person = await sqlite_store.resolve_person(ALICE, seen_at=T0)
    assert person.voice_replies
    assert voices(await brain.handle(inbound("what a day"))) == 1
    [status] = await brain.handle(inbound("/voice"))
    assert "Voice replies are on" in status.text
    await brain.handle(inbound("/voice off"))
    assert not (await sqlite_store.resolve_person(ALICE, seen_at=T0)).voice_replies
    assert voices(await brain.handle(inbound("and now?"))) == 0
    [usage] = await brain.handle(inbound("/voice loud please"))
    assert usage.text.startswith("Usage: /voice on")


@pytest.mark.parametrize(
    ("text", "asks"),
    [
        ("send me a voice message", True),
        ("answer with your voice", True),
        ("用语音回答我", True),
        ("I lost my voice yesterday", False),
        ("what's the weather", False),
    ],
)
def test_asking_for_voice(text: str, asks: bool) -> None:
    assert asks_for_voice(text) is asks


async def test_a_long_voice_note_is_refused_without_decoding_and_kept(
    sqlite_store: SqlMemoryStore,
) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=speech(), max_voice_seconds=300)
    # Not audio at all: had it been decoded, the answer would be about corrupt audio.
    note = await voice_inbound(blobs, b"not audio", duration_s=432)
    [reply] = await brain.handle(note)
    assert "7:12" in reply.text
    assert "5:00" in reply.text
    assert not any(isinstance(s, Voice) for s in reply.segments)
    stored = await sqlite_store.recent_messages(DM, limit=10)
    assert [m.role for m in stored] == ["user", "assistant"]
    [seg] = stored[0].segments
    assert isinstance(seg, Voice)
    assert seg.transcript is None
    assert seg.duration_s == 432


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x00\x01garbage" * 50, "couldn't listen to that voice note"),
        (b"", "couldn't listen to that voice note"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "couldn't listen to that voice note"),
    ],
)
async def test_bad_audio_gets_a_clear_reply_and_is_kept(
    sqlite_store: SqlMemoryStore, data: bytes, says: str
) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=speech())
    [reply] = await brain.handle(await voice_inbound(blobs, data, duration_s=3))
    assert says in reply.text
    assert await sqlite_store.count_messages(DM) == 2


async def test_silence_and_a_missing_blob(sqlite_store: SqlMemoryStore) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=speech())
    silence = codecs.encode_ogg_opus(Pcm(np.zeros(48000 * 2, dtype=np.float32), 48000))
    [quiet] = await brain.handle(await voice_inbound(blobs, silence, duration_s=2))
    assert quiet.text == "I couldn't hear any words in that voice note."
    gone = await voice_inbound(blobs, b"soon gone", duration_s=2)
    await blobs.delete(gone.segments[0].blob_key)  # type: ignore[union-attr]
    [missing] = await brain.handle(gone)
    assert "couldn't listen to that voice note" in missing.text


async def test_without_speech_the_brain_says_so(
    sqlite_store: SqlMemoryStore, spoken_ogg: tuple[bytes, float]
) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=None)
    data, seconds = spoken_ogg
    [reply] = await brain.handle(await voice_inbound(blobs, data, duration_s=seconds))
    assert "can't listen to voice notes" in reply.text
    [voice] = await brain.handle(inbound("/voice on"))
    assert "no voice here" in voice.text


async def test_group_voice_notes_not_for_the_bot_are_kept_unheard(
    sqlite_store: SqlMemoryStore, spoken_ogg: tuple[bytes, float]
) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=speech())
    data, seconds = spoken_ogg
    note = await voice_inbound(blobs, data, duration_s=seconds, chat=GROUP, to_bot=False)
    assert await brain.handle(note) == []
    [stored] = await sqlite_store.recent_messages(GROUP, limit=5)
    assert stored.segments[0] == note.segments[0]


async def test_a_failing_voice_still_answers_in_text(sqlite_store: SqlMemoryStore) -> None:
    blobs = MemoryBlobStore()
    broken = EspeakSpeech("zz-no-such-voice")  # espeak-ng refuses it when asked to speak
    brain = make_brain(sqlite_store, blobs, speech=speech(tts=broken))
    [reply] = await brain.handle(inbound("say it out loud: hello"))
    assert reply.segments[0] == Text(text="You said: say it out loud: hello")
    assert "couldn't say this out loud" in reply.text
    assert not any(isinstance(s, Voice) for s in reply.segments)


async def test_streamed_reply_is_spoken_while_written(
    sqlite_store: SqlMemoryStore, spoken_ogg: tuple[bytes, float]
) -> None:
    blobs = MemoryBlobStore()
    brain = make_brain(sqlite_store, blobs, speech=speech())
    data, seconds = spoken_ogg
    pieces: list[str] = []

    async def sink(piece: str) -> None:
        pieces.append(piece)

    [reply] = await brain.handle(
        await voice_inbound(blobs, data, duration_s=seconds), on_token=sink
    )
    assert "".join(pieces).strip() == reply.segments[0].text  # type: ignore[union-attr]
    assert isinstance(reply.segments[1], Voice)


def test_settings_build_the_speech_parts(tmp_path: Any) -> None:
    built = build_speech(Settings(data_dir=tmp_path))
    assert built.can_listen
    assert built.can_speak
    off = build_speech(Settings(data_dir=tmp_path, tts={"backend": "off"}, stt={"enabled": False}))
    assert not off.can_listen
    assert not off.can_speak
    missing = tmp_path / "nobody.onnx"
    with pytest.raises(ConfigError, match=r"nobody\.onnx"):
        build_speech(Settings(data_dir=tmp_path, tts={"voice": missing}))
    with pytest.raises(ConfigError, match="TOMO_STT__MODEL"):
        build_speech(Settings(data_dir=tmp_path, stt={"model": tmp_path / "no-model"}))
