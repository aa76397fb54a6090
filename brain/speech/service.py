"""Speech as the brain uses it: voice notes in (bytes -> text), voice replies out
(text -> an OGG/Opus voice note), with the codecs between the bytes and the engines.

`Speech` implements the SpeechToText and TextToSpeech ports. `VoiceStream` speaks a
reply sentence by sentence while the model is still writing it, so that the voice note
is ready soon after the text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Protocol

import numpy as np

from brain.errors import ConfigError, InputError
from brain.speech import codecs
from brain.speech.codecs import VoiceNote
from brain.speech.pcm import AudioError, Pcm, resample
from brain.speech.sentences import SentenceBuffer
from brain.speech.tts import SpeechSynthesizer

log = logging.getLogger(__name__)

# Below this RMS (about -60 dBFS) a voice note is taken as silence, not sent to Whisper.
SILENCE_RMS = 1e-3
# The pause put between two spoken sentences of one reply.
SENTENCE_GAP_S = 0.15

# "reply with a voice message", "say it out loud", "用语音回答" ...: asking for voice.
_ASKS_FOR_VOICE = re.compile(
    r"\b(voice\s+(message|note|reply|memo)|say\s+it\s+(out\s+loud|aloud)|read\s+it\s+"
    r"(out\s+loud|aloud)|(send|reply|answer|respond|talk)\s+(to\s+me\s+)?(with|in|by|as)\s+"
    r"(a\s+)?voice|(your|with)\s+voice|speak\s+to\s+me|out\s+loud)\b"
    r"|语音|說話|说话|声で",
    re.IGNORECASE,
)


def asks_for_voice(text: str) -> bool:
    """True when a message asks for the answer as voice."""
    return bool(_ASKS_FOR_VOICE.search(text))


class Transcriber(Protocol):
    """A speech-to-text engine working on PCM (faster-whisper's WhisperSpeech)."""

    async def transcribe_pcm_async(self, pcm: Pcm, *, language: str | None = None) -> str: ...


class Speech:
    """Voice notes in and out. Either half may be missing (None): switched off."""

    def __init__(
        self,
        *,
        stt: Transcriber | None,
        tts: SpeechSynthesizer | None,
        max_seconds: float = 300.0,
        language: str | None = None,
    ) -> None:
        if max_seconds <= 0:
            raise ConfigError("TOMO_STT__MAX_SECONDS must be positive")
        self.stt = stt
        self.tts = tts
        self.max_seconds = max_seconds
        self.language = language

    @property
    def can_listen(self) -> bool:
        return self.stt is not None

    @property
    def can_speak(self) -> bool:
        return self.tts is not None

    async def transcribe(self, audio: bytes, *, mime: str, language: str | None = None) -> str:
        """The words of a voice note ("" for silence). AudioError for audio that cannot
        be used (corrupt, empty, unknown container, over `max_seconds`)."""
        if self.stt is None:
            raise InputError("I can't listen to voice notes here: speech to text is off.")
        pcm = await asyncio.to_thread(
            codecs.decode, audio, mime=mime, rate=16_000, max_seconds=self.max_seconds
        )
        if pcm.duration_s < 0.1 or pcm.rms() < SILENCE_RMS:
            return ""
        text = await self.stt.transcribe_pcm_async(pcm, language=language or self.language)
        return text.strip()

    async def synthesize(self, text: str) -> VoiceNote:
        """`text` spoken in the persona's voice, as an OGG/Opus voice note."""
        stream = self.stream()
        stream.feed(text)
        note = await stream.finish()
        if note is None:
            raise InputError("There is no text to speak")
        return note

    def stream(self) -> VoiceStream:
        if self.tts is None:
            raise ConfigError("Voice replies are off: no text-to-speech voice is configured.")
        return VoiceStream(self.tts)


class VoiceStream:
    """Speaks a streamed reply: each complete sentence is synthesized as soon as it is
    written (one at a time, in order, off the event loop); `finish` joins them into
    one voice note."""

    def __init__(self, tts: SpeechSynthesizer) -> None:
        self.tts = tts
        self._buffer = SentenceBuffer()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._spoken: list[Pcm] = []
        self._worker: asyncio.Task[None] | None = None

    def feed(self, piece: str) -> None:
        """Add streamed text; complete sentences start being spoken now."""
        for sentence in self._buffer.feed(piece):
            self._put(sentence)

    def _put(self, sentence: str) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._speak_all())
        self._queue.put_nowait(sentence)

    async def _speak_all(self) -> None:
        while (sentence := await self._queue.get()) is not None:
            if sentence.strip():
                self._spoken.append(await self.tts.synthesize_pcm_async(sentence))

    async def finish(self) -> VoiceNote | None:
        """The whole reply as one voice note (None when there was nothing to say).

        Errors of the voice engine come out here (ConfigError, ModelError, InputError).
        """
        for sentence in self._buffer.flush():
            self._put(sentence)
        if self._worker is None:
            return None
        self._queue.put_nowait(None)
        await self._worker
        if not self._spoken:
            return None
        return await asyncio.to_thread(_join_and_encode, self._spoken)

    async def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


def _join_and_encode(parts: list[Pcm]) -> VoiceNote:
    rate = parts[0].rate
    gap = np.zeros(int(rate * SENTENCE_GAP_S), dtype=np.float32)
    chunks: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if i:
            chunks.append(gap)
        chunks.append((part if part.rate == rate else resample(part, rate)).samples)
    joined = Pcm(np.concatenate(chunks).astype(np.float32), rate)
    if joined.duration_s <= 0:
        raise AudioError("The voice engine produced no audio")
    return codecs.voice_note(joined)


__all__ = ["Speech", "Transcriber", "VoiceStream", "asks_for_voice"]
