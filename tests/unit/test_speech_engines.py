"""Speech engines: their errors, silence, resampling; the real bundled models, no mocks."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from brain.errors import ConfigError, InputError
from brain.speech.pcm import Pcm, resample
from brain.speech.stt import WhisperSpeech, bundled_model_dir
from brain.speech.tts import (
    EspeakSpeech,
    PiperSpeech,
    SpeechSynthesizer,
    bundled_voice,
    pick_tts,
)
from tests.speech_kit import espeak, piper, whisper, word_error_rate


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 0.5) -> Pcm:
    t = np.arange(int(rate * seconds)) / rate
    return Pcm((amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate)


def peak_hz(pcm: Pcm) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.samples * np.hanning(len(pcm.samples))))
    return float(np.argmax(spectrum) * pcm.rate / len(pcm.samples))


# --- resampling


@pytest.mark.parametrize(
    ("src", "dst", "freq"),
    [(22050, 16000, 440), (48000, 16000, 3000), (8000, 16000, 300), (16000, 48000, 1000)],
)
def test_resample_keeps_pitch_length_and_level(src: int, dst: int, freq: float) -> None:
    out = resample(tone(freq, src, 2.0), dst)
    assert out.rate == dst
    assert len(out.samples) == 2 * dst
    assert out.samples.dtype == np.float32
    assert abs(peak_hz(out) - freq) < 2
    assert out.rms() == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_resample_removes_what_the_new_rate_cannot_hold() -> None:
    # 9 kHz cannot exist at 16 kHz; without a low-pass it would fold back to 7 kHz.
    assert resample(tone(9000, 22050), 16000).rms() < 0.01
    assert resample(tone(9000, 22050), 22050).rms() > 0.3  # same rate: untouched


def test_resample_edge_cases() -> None:
    empty = Pcm(np.zeros(0, dtype=np.float32), 22050)
    assert resample(empty, 16000).rate == 16000
    same = tone(440, 16000)
    assert resample(same, 16000) is same
    with pytest.raises(ValueError, match="positive"):
        resample(same, 0)


# --- speech to text: configuration


def test_missing_stt_model_folder_names_the_path_and_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="TOMO_STT__MODEL") as err:
        WhisperSpeech(missing)
    assert str(missing) in str(err.value)


def test_incomplete_stt_model_folder_is_refused_before_any_download(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"lacks model\.bin, tokenizer\.json"):
        WhisperSpeech(tmp_path)


def test_corrupt_stt_model_is_a_config_error(tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(bundled_model_dir() / name, tmp_path / name)
    (tmp_path / "model.bin").write_bytes(b"not a model" * 100)
    engine = WhisperSpeech(tmp_path)  # loads lazily
    with pytest.raises(ConfigError, match="Could not load") as err:
        engine.load()
    assert str(tmp_path) in str(err.value)


def test_english_only_model_refuses_other_languages() -> None:
    with pytest.raises(ConfigError, match="English only"):
        WhisperSpeech(language="zh")
    assert WhisperSpeech(language="en-US").language == "en"
    with pytest.raises(ConfigError, match="multilingual"):
        whisper().transcribe_pcm(tone(440, 16000), language="fr")


# --- speech to text: silence


def test_silence_and_empty_audio_are_heard_as_nothing() -> None:
    engine = whisper()
    assert engine.transcribe_pcm(Pcm(np.zeros(0, dtype=np.float32), 16000)) == ""
    assert engine.transcribe_pcm(Pcm(np.zeros(3 * 48000, dtype=np.float32), 48000)) == ""
    hiss = np.random.default_rng(7).standard_normal(3 * 16000) * 0.01
    assert engine.transcribe_pcm(Pcm(hiss.astype(np.float32), 16000)) == ""  # VAD: no speech


# --- text to speech: piper


def test_piper_speaks_the_bundled_voice() -> None:
    engine = piper()
    assert isinstance(engine, SpeechSynthesizer)
    assert engine.name == "piper:en_US-joe-medium"
    assert engine.rate == 22050
    assert engine.language == "en_US"
    pcm = engine.synthesize_pcm("Good morning, how did you sleep?")
    assert pcm.rate == 22050
    assert 1.0 < pcm.duration_s < 5.0
    assert pcm.rms() > 0.05
    assert float(np.abs(pcm.samples).max()) <= 1.0


def test_piper_refuses_blank_text() -> None:
    with pytest.raises(InputError, match="no text"):
        piper().synthesize_pcm("   \n")


def test_missing_piper_voice_names_the_path_and_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.onnx"
    with pytest.raises(ConfigError, match="TOMO_TTS__VOICE") as err:
        PiperSpeech(missing)
    assert str(missing) in str(err.value)


def test_piper_voice_without_its_json_names_the_json(tmp_path: Path) -> None:
    voice = tmp_path / "voice.onnx"
    voice.write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"voice\.onnx\.json"):
        PiperSpeech(voice)


def test_corrupt_piper_voice_is_a_config_error(tmp_path: Path) -> None:
    voice = tmp_path / "voice.onnx"
    voice.write_bytes(b"not an onnx model")
    shutil.copy(bundled_voice()[1], tmp_path / "voice.onnx.json")
    engine = PiperSpeech(voice)
    assert engine.rate == 22050  # the config is read at once, the model on first use
    with pytest.raises(ConfigError, match="Could not load piper voice"):
        engine.synthesize_pcm("Hello.")


def test_piper_speaker_must_exist() -> None:
    with pytest.raises(ConfigError, match="speaker 3"):
        PiperSpeech(speaker=3)


# --- text to speech: espeak-ng


def test_espeak_speaks_english_and_chinese() -> None:
    engine = espeak()
    assert isinstance(engine, SpeechSynthesizer)
    pcm = engine.synthesize_pcm("Hello, this is a test.")
    assert pcm.rate == engine.rate == 22050
    assert 0.5 < pcm.duration_s < 5.0
    assert pcm.rms() > 0.02
    chinese = EspeakSpeech("zh").synthesize_pcm("你好，今天天气很好。")
    assert chinese.duration_s > 0.5
    assert chinese.rms() > 0.02


def test_espeak_reads_text_as_text_not_options() -> None:
    pcm = espeak().synthesize_pcm("--help -v xx")
    assert pcm.duration_s > 0.3


async def test_espeak_async_runs_a_subprocess() -> None:
    pcm = await espeak().synthesize_pcm_async("Hello there.")
    assert pcm.duration_s > 0.3


def test_espeak_unknown_voice_names_it() -> None:
    with pytest.raises(ConfigError, match="no voice 'xx-nope'"):
        EspeakSpeech("xx-nope").synthesize_pcm("hello")


def test_espeak_missing_binary_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"apt-get install espeak-ng"):
        EspeakSpeech(binary=str(tmp_path / "espeak-ng"))


def test_espeak_rate_range_and_blank_text() -> None:
    with pytest.raises(ConfigError, match="80 to 450"):
        EspeakSpeech(rate_wpm=1000)
    with pytest.raises(InputError):
        espeak().synthesize_pcm("")
    slow = EspeakSpeech("en", rate_wpm=100).synthesize_pcm("one two three four five")
    fast = EspeakSpeech("en", rate_wpm=400).synthesize_pcm("one two three four five")
    assert slow.duration_s > 1.5 * fast.duration_s


def test_pick_tts_uses_piper_for_its_language_and_espeak_for_others() -> None:
    voice = piper()
    assert pick_tts(None, piper=voice) is voice
    assert pick_tts("en-GB", piper=voice) is voice
    other = pick_tts("zh-CN", piper=voice)
    assert isinstance(other, EspeakSpeech)
    assert other.voice == "zh"
    assert isinstance(pick_tts("en", piper=None), EspeakSpeech)


# --- coqui-tts (optional extra)


@pytest.mark.skipif(importlib.util.find_spec("TTS") is not None, reason="coqui-tts is installed")
def test_coqui_without_the_extra_says_how_to_install(tmp_path: Path) -> None:
    from brain.speech.coqui import CoquiSpeech

    with pytest.raises(ConfigError, match=r"pip install 'tomo\[coqui\]'"):
        CoquiSpeech(tmp_path)


def test_word_error_rate() -> None:
    assert word_error_rate("Hello, World!", "hello world") == 0
    assert word_error_rate("one two three four", "one too three") == 0.5
    assert word_error_rate("", "") == 0
