"""Text to speech with coqui-tts (XTTS and the other Coqui models): the optional extra.

`pip install tomo[coqui]` brings coqui-tts, which needs torch and torchaudio; it is not
in the embedded install. Models load from a local folder only (config.json beside the
checkpoint, as the `tts` command downloads them), never by name from a hub at run time.
XTTS clones a voice from a short reference recording (`speaker_wav`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from brain.errors import ConfigError, InputError, ModelError
from brain.speech.pcm import Pcm
from brain.speech.tts import speakable

log = logging.getLogger(__name__)

SETTING = "TOMO_TTS__COQUI_MODEL"
INSTALL_HINT = (
    "coqui-tts is not installed; install the extra with `pip install 'tomo[coqui]'` "
    "(it needs torch and torchaudio, e.g. from https://pytorch.org for your platform)"
)
# Checkpoint file names the Coqui recipes and the `tts` downloader use.
_CHECKPOINTS = ("model.pth", "best_model.pth", "model_file.pth", "checkpoint.pth")


def _coqui_installed() -> bool:
    return importlib.util.find_spec("TTS") is not None


class CoquiSpeech:
    """Speaks with a local coqui-tts model folder (or checkpoint file with config.json).

    The model loads on first use (or with `load()`), on `device` ("cpu" or "cuda"); a lock
    keeps one synthesis at a time, as a torch model on a small machine gains nothing
    from two.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        speaker_wav: Path | None = None,
        language: str = "en",
        device: str = "cpu",
    ) -> None:
        if not _coqui_installed():
            raise ConfigError(INSTALL_HINT)
        self.model = Path(model)
        self.speaker_wav = Path(speaker_wav) if speaker_wav is not None else None
        self.language = language
        self.device = device
        self.config_path = self._config_path(self.model)
        if self.speaker_wav is not None and not self.speaker_wav.is_file():
            raise ConfigError(f"The coqui reference voice {self.speaker_wav} does not exist")
        try:
            config: dict[str, Any] = json.loads(self.config_path.read_text("utf-8"))
            audio = config.get("audio", {})
            self._rate = int(audio.get("output_sample_rate") or audio["sample_rate"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{self.config_path} is not a coqui-tts model config ({exc}); check {SETTING}"
            ) from exc
        self._kind = str(config.get("model", ""))
        self.checkpoint = self._checkpoint(self.model, xtts=self._kind.lower() == "xtts")
        self._tts: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def _config_path(model: Path) -> Path:
        """config.json in the model folder, or beside the checkpoint file."""
        if not model.exists():
            raise ConfigError(
                f"The coqui-tts model {model} does not exist; coqui models load from a "
                "local folder holding config.json and the checkpoint (download one once, "
                f"e.g. with coqui's `tts --model_name ...`), then set {SETTING} to it"
            )
        if model.is_file():
            config = model.parent / "config.json"
            if not config.is_file():
                raise ConfigError(f"The coqui-tts model {model} has no config.json beside it")
            return config
        config = model / "config.json"
        if not config.is_file():
            raise ConfigError(f"The coqui-tts model folder {model} has no config.json")
        return config

    @staticmethod
    def _checkpoint(model: Path, *, xtts: bool) -> Path:
        """What to hand coqui as the checkpoint: a .pth file, or XTTS's whole folder."""
        if model.is_file() or xtts:
            return model  # XTTS loads itself from its folder (model.pth, vocab.json, ...)
        for name in _CHECKPOINTS:
            if (model / name).is_file():
                return model / name
        found = sorted(model.glob("*.pth"))
        if len(found) == 1:
            return found[0]
        raise ConfigError(
            f"The coqui-tts model folder {model} holds {len(found)} .pth checkpoints and "
            f"none is named {' or '.join(_CHECKPOINTS)}; set {SETTING} to the checkpoint file"
        )

    @property
    def name(self) -> str:
        return f"coqui:{self.model.name}"

    @property
    def rate(self) -> int:
        return self._rate

    def load(self) -> None:
        """Load the model now (it is otherwise loaded on the first synthesis)."""
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._tts is not None:
            return
        try:
            from TTS.api import TTS
        except ImportError as exc:
            raise ConfigError(f"{INSTALL_HINT} ({exc})") from exc
        started = time.perf_counter()
        try:
            tts: Any = TTS(
                model_path=str(self.checkpoint),
                config_path=str(self.config_path),
                progress_bar=False,
            ).to(self.device)
        except Exception as exc:  # torch and coqui raise many kinds of errors
            raise ConfigError(
                f"Could not load the coqui-tts model {self.model} on {self.device} ({exc}); "
                f"check {SETTING}"
            ) from exc
        self._rate = int(tts.synthesizer.output_sample_rate)
        self._tts = tts
        log.info(
            "coqui-tts model loaded",
            extra={"model": str(self.model), "seconds": time.perf_counter() - started},
        )

    def synthesize_pcm(self, text: str) -> Pcm:
        """Speak `text` (blocking: seconds per sentence on a CPU)."""
        text = speakable(text)
        with self._lock:
            self._load_locked()
            tts = self._tts
            options: dict[str, Any] = {}
            if tts.is_multi_lingual:
                options["language"] = self.language
            if self.speaker_wav is not None:
                options["speaker_wav"] = str(self.speaker_wav)
            elif self._kind.lower() == "xtts":
                raise ConfigError(
                    "XTTS speaks in the voice of a reference recording; give CoquiSpeech a "
                    "speaker_wav (a few seconds of clean speech, WAV)"
                )
            try:
                wav: Any = tts.tts(text=text, **options)
            except Exception as exc:  # torch and coqui raise many kinds of errors
                raise ModelError(f"coqui-tts could not speak this text: {exc}") from exc
        samples = np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)
        if len(samples) == 0:
            raise InputError("The text has nothing that can be spoken")
        return Pcm(samples, self._rate)

    async def synthesize_pcm_async(self, text: str) -> Pcm:
        """`synthesize_pcm` in a worker thread."""
        return await asyncio.to_thread(self.synthesize_pcm, text)


__all__ = ["CoquiSpeech"]
