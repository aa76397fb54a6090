"""Raw audio as the speech engines see it: mono float32 samples at a known rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from brain.errors import InputError


def clock_text(seconds: float) -> str:
    """A length as people write it: "7:12", "1:02:03" (whole seconds, rounded up)."""
    hours, rest = divmod(math.ceil(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class AudioError(InputError):
    """Audio that cannot be used: corrupt, empty, silent, too long, unknown container."""


@dataclass(frozen=True, eq=False)
class Pcm:
    """Mono audio: float32 samples in [-1, 1] at `rate` Hz."""

    samples: npt.NDArray[np.float32]
    rate: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 1:
            raise ValueError("Pcm holds mono audio: a 1-D array of samples")
        if self.samples.dtype != np.float32:
            raise ValueError("Pcm samples are float32")
        if self.rate <= 0:
            raise ValueError("sample rate must be positive")

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.rate

    @classmethod
    def from_int16(cls, samples: npt.NDArray[np.int16], rate: int) -> Pcm:
        return cls((samples.astype(np.float32) / 32768.0).reshape(-1), rate)

    def to_int16(self) -> npt.NDArray[np.int16]:
        return (np.clip(self.samples, -1.0, 1.0) * 32767.0).astype(np.int16)

    def rms(self) -> float:
        if len(self.samples) == 0:
            return 0.0
        return float(np.sqrt(np.mean(np.square(self.samples, dtype=np.float64))))


def resample(pcm: Pcm, rate: int) -> Pcm:
    """The same audio at `rate` Hz (e.g. 16 kHz for Whisper, 48 kHz for Opus).

    Going down, a windowed-sinc low-pass first removes what the new rate cannot hold (else
    it folds back as noise); then samples are read off by linear interpolation. Good enough
    for speech engines and codecs, and numpy only.
    """
    if rate <= 0:
        raise ValueError("sample rate must be positive")
    if rate == pcm.rate:
        return pcm
    if len(pcm.samples) == 0:
        return Pcm(pcm.samples, rate)
    samples = pcm.samples
    ratio = rate / pcm.rate
    if ratio < 1.0:
        samples = np.convolve(samples, _lowpass(0.45 * ratio, ratio), mode="same")
    count = max(1, round(len(samples) * ratio))
    positions = np.arange(count, dtype=np.float64) / ratio
    out = np.interp(positions, np.arange(len(samples), dtype=np.float64), samples)
    return Pcm(out.astype(np.float32), rate)


def _lowpass(cutoff: float, ratio: float) -> npt.NDArray[np.float32]:
    """FIR taps passing frequencies below `cutoff` (in cycles per input sample)."""
    half = int(np.ceil(16 / ratio))
    k = np.arange(-half, half + 1, dtype=np.float64)
    taps = 2 * cutoff * np.sinc(2 * cutoff * k) * np.blackman(len(k))
    normalized: npt.NDArray[np.float32] = (taps / taps.sum()).astype(np.float32)
    return normalized


__all__ = ["AudioError", "Pcm", "resample"]
