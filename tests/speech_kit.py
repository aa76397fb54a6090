"""Shared speech engines for tests: each model loads once per test process."""

from __future__ import annotations

from functools import cache

from bots.bench_speech import word_error_rate
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
