"""`tomo bench speech`: how fast the speech engines run on this machine.

- STT: real-time factor (transcription seconds / audio seconds) of faster-whisper on about
  ten seconds of piper speech, and the word error rate of what it heard.
- TTS: seconds to speak a 20-word sentence with piper and with espeak-ng.
- Codecs: seconds to encode/decode that speech as OGG/Opus and as SILK (QQ).
Model loads are timed once; every other figure is the median of `runs` runs after one
warm-up run. The issue's targets on 2 cores: STT RTF <= 0.15, piper < 1.5 s for 20 words.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from brain.speech.pcm import Pcm
from brain.speech.stt import WhisperSpeech
from brain.speech.tts import EspeakSpeech, PiperSpeech

T = TypeVar("T")

# About ten seconds of speech with the joe voice.
STT_TEXT = (
    "Yesterday I walked to the market and bought fresh bread, some apples and a bag of "
    "coffee. Then I met my sister at the station, and we talked about her new job in the "
    "city for an hour."
)
TTS_TEXT = (
    "The quick brown fox jumps over the lazy dog while the small cat watches from the warm "
    "kitchen window today."
)  # 20 words


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level edit distance / reference words, ignoring case and punctuation."""

    def words(text: str) -> list[str]:
        return re.findall(r"[\w']+", text.lower())

    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _median_s(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: first calls pay for lazy initialisation
    return statistics.median(_timed(fn)[0] for _ in range(runs))


def run_speech_bench(
    *, runs: int = 5, stt_model: Path | None = None, tts_voice: Path | None = None
) -> dict[str, float]:
    """Measure the speech engines and codecs; print a report and return the figures.

    Keys end in their unit: `_s` seconds, `_rtf` a ratio, `_wer` a fraction.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    figures: dict[str, float] = {}

    stt = WhisperSpeech(stt_model)
    figures["stt_load_s"], _ = _timed(stt.load)
    piper = PiperSpeech(tts_voice)
    figures["piper_load_s"], _ = _timed(piper.load)
    espeak = EspeakSpeech()

    speech = piper.synthesize_pcm(STT_TEXT)
    figures["stt_audio_s"] = speech.duration_s
    heard = stt.transcribe_pcm(speech)
    figures["stt_wer"] = word_error_rate(STT_TEXT, heard)
    stt_s = _median_s(lambda: stt.transcribe_pcm(speech), runs)
    figures["stt_rtf"] = stt_s / speech.duration_s

    figures["piper_20_words_s"] = _median_s(lambda: piper.synthesize_pcm(TTS_TEXT), runs)
    figures["espeak_20_words_s"] = _median_s(lambda: espeak.synthesize_pcm(TTS_TEXT), runs)

    codecs_note = _bench_codecs(speech, runs, figures)

    print(f"speech benchmark, medians of {runs} runs (after one warm-up run)")
    print(
        f"  STT   faster-whisper {stt.model_name} ({stt.compute_type}, "
        f"{stt.cpu_threads} threads, beam {stt.beam_size}): "
        f"RTF {figures['stt_rtf']:.3f} ({stt_s:.2f} s for {speech.duration_s:.1f} s of "
        f"speech; target <= 0.15), WER {figures['stt_wer']:.0%}, load {figures['stt_load_s']:.2f} s"
    )
    print(
        f"  TTS   {piper.name}: {figures['piper_20_words_s']:.2f} s for 20 words "
        f"(target < 1.5 s), load {figures['piper_load_s']:.2f} s"
    )
    print(f"  TTS   {espeak.name}: {figures['espeak_20_words_s']:.3f} s for 20 words")
    if codecs_note:
        print(f"  codecs: {codecs_note}")
    else:
        print(
            f"  codecs on {speech.duration_s:.1f} s of speech: "
            f"OGG/Opus encode {figures['ogg_encode_s'] * 1000:.0f} ms, "
            f"decode {figures['ogg_decode_s'] * 1000:.0f} ms; "
            f"SILK encode {figures['silk_encode_s'] * 1000:.0f} ms, "
            f"decode {figures['silk_decode_s'] * 1000:.0f} ms"
        )
    return figures


def _bench_codecs(speech: Pcm, runs: int, figures: dict[str, float]) -> str | None:
    """Time the codecs into `figures`; returns why they were skipped, if they were."""
    try:
        from brain.speech import codecs
    except ImportError as exc:
        return f"skipped (brain.speech.codecs is not available: {exc})"
    ogg = codecs.encode_ogg_opus(speech)
    silk = codecs.encode_silk(speech)
    figures["ogg_encode_s"] = _median_s(lambda: codecs.encode_ogg_opus(speech), runs)
    figures["ogg_decode_s"] = _median_s(lambda: codecs.decode(ogg, mime="audio/ogg"), runs)
    figures["silk_encode_s"] = _median_s(lambda: codecs.encode_silk(speech), runs)
    figures["silk_decode_s"] = _median_s(lambda: codecs.decode_silk(silk), runs)
    return None


__all__ = ["run_speech_bench", "word_error_rate"]
