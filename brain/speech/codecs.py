"""Audio codecs: platform bytes in, `Pcm` out, and back.

Decoding goes through PyAV (FFmpeg's libraries, with libopus, LAME and AAC bundled: no
ffmpeg binary, no temporary files): OGG/Opus from Telegram, Discord and WhatsApp-style
clients, MP3, M4A/AAC, WAV, WebM, and anything else FFmpeg opens. QQ's SILK v3 is told by
its header and goes through `brain.speech.silk`. Whatever goes wrong comes out as an
AudioError a person can read; no FFmpeg exception leaves this module.

Encoding makes what each platform wants for a voice message: OGG/Opus at 48 kHz mono
(Telegram sendVoice, Discord voice messages, with the waveform Discord shows) and SILK for
QQ. Everything here is synchronous and CPU-bound: callers run it in `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, NamedTuple

import av
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import InputContainer

from brain.speech import silk
from brain.speech.pcm import AudioError, Pcm, clock_text

Container = Literal["ogg", "mp3", "m4a", "wav", "webm"]

# The kinds `sniff` tells apart, and the mime type each is sent with.
MIME_BY_CONTAINER: dict[str, str] = {
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "wav": "audio/wav",
    "webm": "audio/webm",
    "silk": "audio/silk",
    "flac": "audio/flac",
    "aac": "audio/aac",
    "amr": "audio/amr",
}

# A stated length may run a little past the limit (codec padding, a rounded header).
_SLACK_S = 0.5
_CHUNK_S = 1.0  # PCM goes to FFmpeg one second at a time, so memory stays flat
_FIRST_GUESS_S = 600.0  # most samples allocated up front on a header's word


class _Spec(NamedTuple):
    format: str  # FFmpeg muxer
    codec: Literal["libopus", "libmp3lame", "aac", "pcm_s16le"]
    rates: tuple[int, ...] | None  # sample rates the codec takes; None: any


_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_SPECS: dict[Container, _Spec] = {
    "ogg": _Spec("ogg", "libopus", (48000,)),
    "webm": _Spec("webm", "libopus", (48000,)),
    "mp3": _Spec("mp3", "libmp3lame", _MP3_RATES),
    "m4a": _Spec("ipod", "aac", (*_MP3_RATES, 64000, 88200, 96000)),
    "wav": _Spec("wav", "pcm_s16le", None),
}

# What FFmpeg raises on bad input: its own errors (some are also ValueError or OSError),
# and the ValueError PyAV raises for a frame it cannot convert.
_AV_ERRORS = (av.FFmpegError, ValueError, OSError, EOFError)


def sniff(data: bytes) -> str | None:
    """The container of `data` from its magic bytes (a key of MIME_BY_CONTAINER), or None."""
    if silk.is_silk(data):
        return "silk"
    if data.startswith(b"OggS"):
        return "ogg"
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "wav"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if data[4:8] == b"ftyp":
        return "m4a"
    if data.startswith(b"fLaC"):
        return "flac"
    if data.startswith(b"#!AMR"):
        return "amr"
    if data.startswith(b"ID3"):
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        # A frame sync: layer bits 00 mean ADTS (AAC), anything else an MPEG audio layer.
        return "aac" if data[1] & 0x06 == 0 else "mp3"
    return None


def decode(
    data: bytes, *, mime: str | None = None, rate: int = 16000, max_seconds: float | None = None
) -> Pcm:
    """Any audio file's bytes -> mono PCM at `rate` Hz.

    The container is told from the bytes (FFmpeg's probe; SILK by its header), never from
    `mime`, which platforms get wrong; `mime` only shows in error messages.
    With `max_seconds`, longer audio is refused: from the container's stated length when
    it has one (a three-hour file is never decoded), else as soon as decoding passes it.
    """
    if rate <= 0:
        raise ValueError("sample rate must be positive")
    if not data:
        raise AudioError("This audio is empty (0 bytes).")
    if silk.is_silk(data):
        return decode_silk(data, rate=rate, max_seconds=max_seconds)
    with _open(data, mime) as container:
        stream = _audio_stream(container)
        known = _stated_duration(container, stream)
        if max_seconds is not None and known is not None and known > max_seconds + _SLACK_S:
            raise _too_long(max_seconds, known)
        guess = rate * min(known if known is not None else 10.0, _FIRST_GUESS_S)
        sink = _Samples(int(guess) + rate)
        try:
            for chunk in _decoded(container, stream, rate):
                sink.add(chunk)
                if max_seconds is not None and sink.size > (max_seconds + _SLACK_S) * rate:
                    raise _too_long(max_seconds, None)
        except _AV_ERRORS as exc:
            raise AudioError(f"Could not read this audio{_sent_as(mime)}: {_reason(exc)}.") from exc
    if sink.size == 0:
        raise AudioError("This audio holds no sound: it is 0 seconds long.")
    return Pcm(sink.array(), rate)


def probe_duration(data: bytes, *, mime: str | None = None) -> float | None:
    """The length in seconds the container states, without decoding; None when it states none.

    AudioError, as from `decode`, when the bytes are not audio at all.
    """
    if not data:
        raise AudioError("This audio is empty (0 bytes).")
    if silk.is_silk(data):
        return silk.duration(data)
    with _open(data, mime) as container:
        return _stated_duration(container, _audio_stream(container))


def encode(pcm: Pcm, *, container: Container, bitrate: int | None = None) -> bytes:
    """Mono PCM -> a file: ogg and webm hold Opus at 48 kHz, mp3 MP3, m4a AAC, wav s16le.

    The rate is kept where the codec takes it; otherwise the audio is resampled.
    """
    spec = _SPECS[container]
    if len(pcm.samples) == 0:
        raise AudioError("Nothing to encode: the audio is empty.")
    buffer = io.BytesIO()
    try:
        if spec.rates is not None and pcm.rate not in spec.rates:
            higher = [r for r in spec.rates if r >= pcm.rate]
            pcm = _resample(pcm, min(higher) if higher else max(spec.rates))
        with av.open(buffer, mode="w", format=spec.format) as out:
            stream: AudioStream = out.add_stream(spec.codec, rate=pcm.rate)
            stream.layout = "mono"
            if bitrate is not None and spec.rates is not None:
                stream.bit_rate = bitrate
            for frame in _frames(pcm):
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
    except _AV_ERRORS as exc:
        raise AudioError(f"Could not encode this audio as {container}: {_reason(exc)}.") from exc
    return buffer.getvalue()


def encode_ogg_opus(pcm: Pcm, *, bitrate: int = 32000) -> bytes:
    """OGG/Opus, 48 kHz mono: a Telegram or Discord voice message."""
    return encode(pcm, container="ogg", bitrate=bitrate)


def waveform(pcm: Pcm, *, points: int = 256) -> str:
    """Discord's voice-message waveform: one byte per time slice, base64.

    Each byte is the slice's RMS, scaled so the loudest slice is 255; silence is all zeros.
    Audio shorter than `points` samples still gives `points` bytes (slices repeat samples).
    """
    if points <= 0:
        raise ValueError("points must be positive")
    n = len(pcm.samples)
    levels = np.zeros(points, dtype=np.float64)
    if n:
        starts = (np.arange(points, dtype=np.int64) * n) // points
        ends = np.append(starts[1:], n)
        square = np.square(pcm.samples, dtype=np.float64)
        # reduceat gives the one sample at `start` for an empty slice (start == next start).
        sums = np.add.reduceat(square, starts)
        levels = np.sqrt(sums / np.maximum(ends - starts, 1))
    loudest = float(levels.max())
    if loudest < 1e-4:  # below -80 dBFS: nothing to draw
        scaled = np.zeros(points, dtype=np.uint8)
    else:
        scaled = np.round(levels / loudest * 255).astype(np.uint8)
    return base64.b64encode(scaled.tobytes()).decode("ascii")


@dataclass(frozen=True)
class VoiceNote:
    """A voice message ready to send: the file, its type, its length and Discord's waveform."""

    data: bytes
    mime: str
    duration_s: float
    waveform: str


def voice_note(pcm: Pcm) -> VoiceNote:
    """Speech -> an OGG/Opus voice message with its duration and waveform."""
    return VoiceNote(
        data=encode_ogg_opus(pcm),
        mime=MIME_BY_CONTAINER["ogg"],
        duration_s=pcm.duration_s,
        waveform=waveform(pcm),
    )


def encode_silk(pcm: Pcm, *, rate: int = 24000, bitrate: int = 24000) -> bytes:
    """Mono PCM -> a QQ voice note: SILK v3 (Tencent header) coded at `rate` Hz."""
    if rate not in silk.RATES:
        raise ValueError(f"SILK codes at {sorted(silk.RATES)} Hz, not {rate}")
    return silk.encode(_resample(pcm, rate), bitrate=bitrate)


def decode_silk(data: bytes, *, rate: int = 16000, max_seconds: float | None = None) -> Pcm:
    """A QQ voice note (SILK v3) -> mono PCM at `rate` Hz; `max_seconds` as in `decode`."""
    if max_seconds is not None:
        stated = silk.duration(data)
        if stated > max_seconds + _SLACK_S:
            raise _too_long(max_seconds, stated)
    pcm = silk.decode(data, rate=rate if rate in silk.RATES else 24000)
    if max_seconds is not None and pcm.duration_s > max_seconds + _SLACK_S:
        raise _too_long(max_seconds, pcm.duration_s)
    return _resample(pcm, rate)


def _resample(pcm: Pcm, rate: int) -> Pcm:
    """The same audio at `rate` Hz, through FFmpeg's resampler."""
    if rate == pcm.rate:
        return pcm
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    sink = _Samples(math.ceil(len(pcm.samples) * rate / pcm.rate) + 1024)
    for frame in _frames(pcm):
        sink.add_frames(resampler.resample(frame))
    sink.add_frames(resampler.resample(None))
    return Pcm(sink.array(), rate)


def _frames(pcm: Pcm) -> Iterator[AudioFrame]:
    """PCM as FFmpeg frames of about a second each."""
    step = max(1, int(pcm.rate * _CHUNK_S))
    for start in range(0, len(pcm.samples), step):
        chunk = pcm.samples[start : start + step].reshape(1, -1)
        frame = AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
        frame.sample_rate = pcm.rate
        frame.pts = start
        frame.time_base = Fraction(1, pcm.rate)
        yield frame


def _open(data: bytes, mime: str | None) -> InputContainer:
    """`data` opened by FFmpeg, which tells the container from the bytes themselves."""
    try:
        return av.open(io.BytesIO(data), mode="r", metadata_errors="replace")
    except _AV_ERRORS as exc:
        raise AudioError(f"Could not read this audio{_sent_as(mime)}: {_reason(exc)}.") from exc


def _sent_as(mime: str | None) -> str:
    return f" (sent as {mime[:60]})" if mime else ""


def _audio_stream(container: InputContainer) -> AudioStream:
    if not container.streams.audio:
        raise AudioError("This file holds no audio: there is no sound track in it.")
    return container.streams.audio[0]


def _stated_duration(container: InputContainer, stream: AudioStream) -> float | None:
    """The length the container or stream states, in seconds; None if neither does."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _decoded(
    container: InputContainer, stream: AudioStream, rate: int
) -> Iterator[npt.NDArray[np.float32]]:
    """The stream's samples, downmixed to mono float32 at `rate`, chunk by chunk.

    A few packets that fail to decode are skipped (a file cut short ends in half a packet);
    more than one in twenty means the file is damaged, and the first error is raised.
    A new resampler is set up whenever the frames change shape (rate, layout or format
    can change mid-stream, as in concatenated MP3s).
    """
    resampler: av.AudioResampler | None = None
    shape: tuple[str, str, int] | None = None
    packets, failed, first_error = 0, 0, None
    for packet in container.demux(stream):
        packets += 1
        try:
            frames = packet.decode()
        except av.InvalidDataError as exc:
            failed += 1
            first_error = first_error or exc
            continue
        for frame in frames:
            now = (frame.format.name, frame.layout.name, frame.sample_rate)
            if resampler is None or now != shape:
                if resampler is not None:
                    yield from _mono(resampler.resample(None))
                resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
                shape = now
            yield from _mono(resampler.resample(frame))
    if first_error is not None and failed > max(1, packets // 20):
        raise first_error
    if resampler is not None:
        yield from _mono(resampler.resample(None))


def _mono(frames: Iterable[AudioFrame]) -> Iterator[npt.NDArray[np.float32]]:
    for frame in frames:
        yield np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)


class _Samples:
    """A growing float32 buffer: amortised appends, one array at the end (no list to join)."""

    def __init__(self, capacity: int) -> None:
        self._buffer = np.empty(max(capacity, 1024), dtype=np.float32)
        self.size = 0

    def add(self, chunk: npt.NDArray[np.float32]) -> None:
        end = self.size + len(chunk)
        if end > len(self._buffer):
            self._buffer.resize(max(end, 2 * len(self._buffer)), refcheck=False)
        self._buffer[self.size : end] = chunk
        self.size = end

    def add_frames(self, frames: Iterable[AudioFrame]) -> None:
        for chunk in _mono(frames):
            self.add(chunk)

    def array(self) -> npt.NDArray[np.float32]:
        """The samples, clipped to [-1, 1] (a downmix can sum past full scale)."""
        self._buffer.resize(self.size, refcheck=False)
        np.clip(self._buffer, -1.0, 1.0, out=self._buffer)
        return self._buffer


def _too_long(limit_s: float, length_s: float | None) -> AudioError:
    """The refusal for audio over the limit; `length_s` None when only known to be over."""
    # Rounded up, so a note just over the limit never reads as exactly the limit.
    shown = "this one is longer" if length_s is None else f"this one is {clock_text(length_s)}"
    return AudioError(f"This audio is too long: voice notes up to {_spoken(limit_s)}; {shown}.")


def _spoken(seconds: float) -> str:
    """A limit as people say it: "5 minutes", "1 minute", "90 seconds", "2:30"."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return "1 minute" if minutes == 1 else f"{minutes} minutes"
    if seconds < 120 and seconds == int(seconds):
        return "1 second" if seconds == 1 else f"{int(seconds)} seconds"
    return clock_text(seconds)


def _reason(exc: BaseException) -> str:
    """What went wrong, for a person: a plain cause, then FFmpeg's own words."""
    words = str(getattr(exc, "strerror", None) or exc or type(exc).__name__).strip().rstrip(".")
    words = words[:1].lower() + words[1:]
    if isinstance(exc, EOFError):
        return f"the file ends too soon, it may be cut short ({words})"
    if isinstance(exc, av.InvalidDataError):
        return f"it is damaged or not a sound file ({words})"
    return words


__all__ = [
    "MIME_BY_CONTAINER",
    "Container",
    "VoiceNote",
    "decode",
    "decode_silk",
    "encode",
    "encode_ogg_opus",
    "encode_silk",
    "probe_duration",
    "sniff",
    "voice_note",
    "waveform",
]
