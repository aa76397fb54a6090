"""Shared speech engines for tests: each model loads once per test process."""

from __future__ import annotations

from functools import cache

from bots.app import App, build_app
from bots.bench_speech import word_error_rate
from bots.settings import Settings
from brain.speech.service import Speech
from brain.speech.stt import WhisperSpeech
from brain.speech.tts import EspeakSpeech, PiperSpeech


@cache
def whisper() -> WhisperSpeech:
    """The bundled tiny.en model, loaded."""
    engine = WhisperSpeech()
    engine.load()
    return engine


@cache
def piper() -> PiperSpeech:
    """The bundled joe voice, loaded."""
    engine = PiperSpeech()
    engine.load()
    return engine


@cache
def espeak() -> EspeakSpeech:
    return EspeakSpeech("en-us")


__all__ = ["espeak", "piper", "whisper", "word_error_rate"]


async def app_with_speech(settings: Settings) -> App:
    """The app of `settings` with the shared, already loaded speech engines (each loads
    once per test process)."""
    return await build_app(settings, speech=Speech(stt=whisper(), tts=piper()))
