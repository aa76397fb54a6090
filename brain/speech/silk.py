"""QQ voice notes: SILK v3 through silk-python (`pysilk`), with s16le PCM in the middle.

Why not graiax-silkcoder: its 0.3.6 decoder returns packet-loss concealment (near-silence)
for every stream, its own output included, and segfaults on a short or damaged stream.
Its encoder is fine, but one library that does both ways is simpler; silk-python raises
`SilkError` on bad data (a thousand fuzzed streams here: no crash).

The stream is still checked here before the decoder sees it: the end marker of the plain
variant and a last packet cut short are dropped (the decoder would refuse the whole note
for them), and packets too big for any SILK frame are refused.
"""

from __future__ import annotations

import functools
import importlib
import io
from types import ModuleType

import numpy as np

from brain.errors import ConfigError
from brain.speech.pcm import AudioError, Pcm

HEADER = b"#!SILK_V3"
TENCENT_HEADER = b"\x02" + HEADER  # what QQ sends and expects
# The rates the SILK SDK takes and gives at its API (it codes internally at up to 24 kHz).
RATES = frozenset({8000, 12000, 16000, 24000, 32000, 44100, 48000})
_PACKET_S = 0.02  # one packet is one 20 ms frame in the files QQ and this encoder write
# The encoder writes at most 250 bytes per 20 ms frame; pysilk refuses a packet bigger than
# its output buffer, 320 bytes when decoding at 8 kHz.
_MAX_PAYLOAD = 320


def is_silk(data: bytes) -> bool:
    """True for a SILK v3 stream, plain or with Tencent's leading 0x02."""
    return data.startswith(HEADER) or data.startswith(TENCENT_HEADER)


def _packets(data: bytes) -> tuple[bytes, int]:
    """The packets of a SILK stream, without header or end marker; and their count."""
    pos = len(TENCENT_HEADER) if data.startswith(TENCENT_HEADER) else len(HEADER)
    start, end, count = pos, len(data), 0
    while pos + 2 <= end:
        size = int.from_bytes(data[pos : pos + 2], "little", signed=True)
        if size < 0:
            break  # the end marker (-1) of the plain variant
        if size > _MAX_PAYLOAD:
            raise AudioError(
                "Could not read this QQ voice note: the SILK data is damaged "
                f"(a {size}-byte packet; a SILK packet holds at most {_MAX_PAYLOAD})."
            )
        if pos + 2 + size > end:
            break  # cut short: keep the whole packets before it
        pos += 2 + size
        count += 1
    return data[start:pos], count


def duration(data: bytes) -> float:
    """The length of a SILK stream from its packet count, without decoding it."""
    return _packets(data)[1] * _PACKET_S


def decode(data: bytes, *, rate: int = 24000) -> Pcm:
    """SILK v3 bytes -> mono PCM at `rate` (one of RATES). AudioError when empty or damaged."""
    if rate not in RATES:
        raise ValueError(f"SILK decodes at {sorted(RATES)} Hz, not {rate}")
    if not is_silk(data):
        raise AudioError("This is not a QQ voice note: it does not start with a SILK v3 header.")
    body, count = _packets(data)
    if count == 0:
        if len(data) > len(TENCENT_HEADER) + 2:
            raise AudioError("Could not read this QQ voice note: the SILK data is damaged.")
        raise AudioError("This QQ voice note is empty: it holds no sound.")
    out = io.BytesIO()
    try:
        _pysilk().decode(io.BytesIO(TENCENT_HEADER + body), out, rate)
    except _pysilk().SilkError as exc:
        raise AudioError("Could not read this QQ voice note: the SILK data is damaged.") from exc
    samples = np.frombuffer(out.getvalue(), dtype="<i2")
    return Pcm.from_int16(samples, rate)


def encode(pcm: Pcm, *, bitrate: int = 24000) -> bytes:
    """Mono PCM (at one of RATES) -> SILK v3 with Tencent's header, at about `bitrate` bits/s."""
    if pcm.rate not in RATES:
        raise ValueError(f"SILK encodes {sorted(RATES)} Hz PCM, not {pcm.rate}; resample first")
    if len(pcm.samples) == 0:
        raise AudioError("Nothing to encode: the audio is empty.")
    # The encoder drops a last frame shorter than 20 ms: pad it out with silence.
    frame = pcm.rate // 50
    samples = pcm.to_int16().astype("<i2")
    samples = np.pad(samples, (0, -len(samples) % frame))
    source = io.BytesIO(samples.tobytes())
    out = io.BytesIO()
    try:
        _pysilk().encode(source, out, pcm.rate, bitrate, tencent=True)
    except _pysilk().SilkError as exc:
        raise AudioError(f"Could not encode this audio as SILK (SILK error {exc}).") from exc
    return out.getvalue()


@functools.cache
def _pysilk() -> ModuleType:
    # Imported by name: the package ships no type information (py.typed), and a missing
    # codec should say what to install rather than fail at import time.
    try:
        return importlib.import_module("pysilk")
    except ImportError as exc:
        raise ConfigError("QQ voice notes need the SILK codec: pip install silk-python.") from exc


__all__ = ["HEADER", "RATES", "TENCENT_HEADER", "decode", "duration", "encode", "is_silk"]
