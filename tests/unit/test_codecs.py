"""Audio codecs on real speech (espeak-ng), real containers and real damage."""

from __future__ import annotations

import base64
import io
import struct
import subprocess
import time
import tracemalloc
import zlib
from fractions import Fraction
from typing import cast, get_args

import av
import numpy as np
import numpy.typing as npt
import pytest
from av.audio.frame import AudioFrame

from brain.speech.codecs import (
    MIME_BY_CONTAINER,
    Container,
    VoiceNote,
    decode,
    decode_silk,
    encode,
    encode_ogg_opus,
    encode_silk,
    probe_duration,
    sniff,
    voice_note,
    waveform,
)
from brain.speech.pcm import AudioError, Pcm

CONTAINERS: tuple[Container, ...] = get_args(Container)
SAYING = "Hello there. This is tomo, checking that voice notes survive every codec."


@pytest.fixture(scope="module")
def speech_wav() -> bytes:
    """About four seconds of real speech: espeak-ng's WAV (22050 Hz mono s16)."""
    done = subprocess.run(
        ["espeak-ng", "--stdout", SAYING], capture_output=True, check=True, timeout=30
    )
    return done.stdout


@pytest.fixture(scope="module")
def speech(speech_wav: bytes) -> Pcm:
    return decode(speech_wav, rate=16000)


def best_correlation(x: npt.NDArray[np.float32], y: npt.NDArray[np.float32], lag: int) -> float:
    """Pearson correlation of x and y at the best shift within +-lag samples (codec delay)."""
    n = min(len(x) - lag, len(y) - 2 * lag)
    a = x[lag : lag + n].astype(np.float64)
    best = -1.0
    for shift in range(-lag, lag + 1):
        b = y[lag + shift : lag + shift + n].astype(np.float64)
        best = max(best, float(np.corrcoef(a, b)[0, 1]))
    return best


def tone(seconds: float, *, rate: int = 16000, level: float = 0.3) -> Pcm:
    t = np.arange(int(seconds * rate)) / rate
    return Pcm((level * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)


def unseekable_webm(pcm: Pcm) -> bytes:
    """WebM written to a pipe-like sink: no duration in the header, as browsers record it."""

    class Sink:
        def __init__(self) -> None:
            self.data = bytearray()

        def write(self, chunk: bytes) -> int:
            self.data += chunk
            return len(chunk)

        def seekable(self) -> bool:
            return False

    sink = Sink()
    at_48k = decode(encode(pcm, container="wav"), rate=48000)
    with av.open(sink, mode="w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = AudioFrame.from_ndarray(at_48k.samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 48000
        frame.pts = 0
        frame.time_base = Fraction(1, 48000)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return bytes(sink.data)


def stereo_wav(left: Pcm, right: Pcm) -> bytes:
    out_buffer = io.BytesIO()
    with av.open(out_buffer, mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=left.rate)
        stream.layout = "stereo"
        both = np.stack([left.samples, right.samples]).T.copy()  # interleaved, packed
        frame = AudioFrame.from_ndarray(
            (both * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = left.rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return out_buffer.getvalue()


def png_bytes() -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = b"".join(b"\x00" + b"\x00\xff\x00" * 8 for _ in range(8))
    header = struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def zero_sample_wav() -> bytes:
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 16000, 32000, 2, 16)
    return b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", 0)


# --- decoding -------------------------------------------------------------------------


def test_espeak_speech_decodes_to_mono_pcm(speech_wav: bytes, speech: Pcm) -> None:
    assert sniff(speech_wav) == "wav"
    assert speech.rate == 16000
    assert speech.samples.dtype == np.float32
    assert 2.0 < speech.duration_s < 10.0
    stated = probe_duration(speech_wav)
    assert stated is not None
    assert speech.duration_s == pytest.approx(stated, abs=0.01)
    assert speech.rms() > 0.02
    assert float(np.abs(speech.samples).max()) <= 1.0


@pytest.mark.parametrize("container", CONTAINERS)
def test_each_container_round_trips(speech: Pcm, container: Container) -> None:
    data = encode(speech, container=container)
    assert sniff(data) == container
    again = decode(data, mime=MIME_BY_CONTAINER[container], rate=16000)
    assert again.rate == 16000
    # FFmpeg trims the encoders' priming and padding (Opus pre-skip, LAME and AAC delay).
    assert again.duration_s == pytest.approx(speech.duration_s, abs=0.05)
    stated = probe_duration(data)
    assert stated is not None
    assert stated == pytest.approx(speech.duration_s, abs=0.05)
    assert again.rms() == pytest.approx(speech.rms(), rel=0.15)
    assert best_correlation(speech.samples, again.samples, 80) > 0.9


def test_decode_resamples_to_the_rate_asked(speech_wav: bytes, speech: Pcm) -> None:
    for rate in (8000, 24000, 48000):
        pcm = decode(speech_wav, rate=rate)
        assert pcm.rate == rate
        assert pcm.duration_s == pytest.approx(speech.duration_s, abs=0.01)


def test_stereo_is_downmixed(speech: Pcm) -> None:
    quiet = Pcm((speech.samples * 0.5).astype(np.float32), speech.rate)
    pcm = decode(stereo_wav(speech, quiet), rate=16000)
    assert pcm.samples.ndim == 1
    assert pcm.duration_s == pytest.approx(speech.duration_s, abs=0.01)
    assert best_correlation(speech.samples, pcm.samples, 4) > 0.99


def test_the_bytes_decide_not_the_mime_type(speech: Pcm) -> None:
    mp3 = encode(speech, container="mp3")
    assert decode(mp3, mime="audio/ogg").duration_s == pytest.approx(speech.duration_s, abs=0.05)
    with pytest.raises(AudioError, match=r"Could not read this audio \(sent as audio/ogg\)"):
        decode(b"not audio" * 50, mime="audio/ogg")


@pytest.mark.parametrize("container", ["ogg", "mp3", "webm", "wav"])
def test_a_file_cut_short_gives_the_part_before_the_cut(speech: Pcm, container: Container) -> None:
    # The half packet at the cut is skipped (an interrupted download), not the whole note.
    data = encode(speech, container=container)
    part = decode(data[: len(data) // 2])
    assert 0.5 < part.duration_s < speech.duration_s - 1.0
    assert part.rms() > 0.01


# --- refusals -------------------------------------------------------------------------


BAD_AUDIO = {
    "empty": (b"", "empty"),
    "text": (b"this is not audio at all, only a sentence. " * 20, "could not read this audio"),
    "noise": (np.random.default_rng(7).bytes(50_000), "could not read this audio"),
    "png": (png_bytes(), "no audio"),
    "zero-sample wav": (zero_sample_wav(), "no sound"),
}


@pytest.mark.parametrize("name", list(BAD_AUDIO))
def test_bad_audio_is_refused_with_a_reason(name: str) -> None:
    data, words = BAD_AUDIO[name]
    with pytest.raises(AudioError, match=f"(?i){words}"):
        decode(data, mime="audio/ogg")


def test_an_ogg_cut_inside_its_headers_is_refused(speech: Pcm) -> None:
    ogg = encode_ogg_opus(speech)
    with pytest.raises(AudioError, match=r"(?i)could not read this audio: the file ends too soon"):
        decode(ogg[:60])
    with pytest.raises(AudioError, match=r"(?i)could not read this audio"):
        probe_duration(ogg[:60])


def test_an_ogg_with_garbage_after_its_first_page_is_refused(speech: Pcm) -> None:
    ogg = encode_ogg_opus(speech)
    garbled = ogg[:200] + np.random.default_rng(3).bytes(len(ogg) - 200)
    with pytest.raises(AudioError, match=r"(?i)could not read this audio"):
        decode(garbled)


@pytest.mark.parametrize("kind", [*CONTAINERS, "silk"])
def test_damaged_files_decode_or_raise_audio_error_only(speech: Pcm, kind: str) -> None:
    good = (
        encode_silk(speech) if kind == "silk" else encode(speech, container=cast(Container, kind))
    )
    messages: list[str] = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        damaged = bytearray(good)
        if seed % 2:
            start = int(rng.integers(0, len(damaged)))
            damaged[start : start + 300] = rng.bytes(300)
        else:
            for at in rng.integers(0, len(damaged), 12):
                damaged[at] = int(rng.integers(0, 256))
        try:
            pcm = decode(bytes(damaged), max_seconds=60)  # anything but AudioError fails here
        except AudioError as exc:
            messages.append(str(exc))
        else:
            assert pcm.duration_s <= speech.duration_s + 1.0
    assert all(m.startswith(("Could not read", "This ")) for m in messages), messages


def test_encoding_nothing_is_refused() -> None:
    empty = Pcm(np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        encode_ogg_opus(empty)
    with pytest.raises(AudioError, match="empty"):
        encode_silk(empty)


def test_a_long_file_is_refused_from_its_header_without_decoding() -> None:
    six_minutes = encode(Pcm(np.zeros(16000 * 360, dtype=np.float32), 16000), container="wav")
    assert probe_duration(six_minutes) == pytest.approx(360.0, abs=0.01)
    started = time.perf_counter()
    with pytest.raises(AudioError, match="voice notes up to 5 minutes; this one is 6:00"):
        decode(six_minutes, max_seconds=300)
    # The stated length answers at once; decoding five minutes first takes ~100x longer.
    assert time.perf_counter() - started < 0.25


def test_the_limit_message_says_both_lengths(speech_wav: bytes) -> None:
    with pytest.raises(AudioError, match=r"voice notes up to 2 seconds; this one is 0:0[45]\."):
        decode(speech_wav, max_seconds=2)
    assert decode(speech_wav, max_seconds=60).duration_s > 2


def test_without_a_stated_length_decoding_stops_at_the_limit() -> None:
    webm = unseekable_webm(tone(5.0))
    assert probe_duration(webm) is None
    with pytest.raises(AudioError, match="voice notes up to 2 seconds; this one is longer"):
        decode(webm, max_seconds=2)
    assert decode(webm).duration_s == pytest.approx(5.0, abs=0.05)


def test_decoding_holds_no_more_than_the_samples() -> None:
    minute = encode(tone(60.0), container="wav")
    tracemalloc.start()
    try:
        pcm = decode(minute, rate=16000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pcm.samples.nbytes == 16000 * 60 * 4
    assert peak < 1.2 * pcm.samples.nbytes


# --- voice messages -------------------------------------------------------------------


def test_ogg_opus_is_48k_mono_opus_at_the_bitrate(speech: Pcm) -> None:
    data = encode_ogg_opus(speech, bitrate=32000)
    assert data.startswith(b"OggS")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        assert stream.rate == 48000
        assert stream.channels == 1
    kbps = len(data) * 8 / speech.duration_s / 1000
    assert 16 < kbps < 48
    again = decode(data, rate=48000)
    assert again.duration_s == pytest.approx(speech.duration_s, abs=0.05)


def test_voice_note_is_ogg_with_duration_and_waveform(speech: Pcm) -> None:
    note = voice_note(speech)
    assert isinstance(note, VoiceNote)
    assert note.mime == "audio/ogg"
    assert note.duration_s == pytest.approx(speech.duration_s)
    assert sniff(note.data) == "ogg"
    assert decode(note.data).duration_s == pytest.approx(speech.duration_s, abs=0.05)
    assert len(base64.b64decode(note.waveform)) == 256


def test_waveform_of_speech_follows_its_loudness(speech: Pcm) -> None:
    levels = np.frombuffer(base64.b64decode(waveform(speech)), dtype=np.uint8)
    assert len(levels) == 256
    assert levels.max() == 255
    assert np.count_nonzero(levels) > 128
    # Loud buckets sit where the speech is loud.
    buckets = np.array_split(speech.samples, 256)
    rms = np.array([np.sqrt(np.mean(np.square(b, dtype=np.float64))) for b in buckets])
    assert np.corrcoef(rms, levels)[0, 1] > 0.95


def test_waveform_of_silence_is_zeros() -> None:
    silence = Pcm(np.zeros(48000, dtype=np.float32), 48000)
    assert base64.b64decode(waveform(silence)) == bytes(256)


def test_waveform_of_very_short_audio_still_has_256_points() -> None:
    blip = Pcm(np.array([0.0, 0.5, -0.25, 0.1, 0.0], dtype=np.float32), 16000)
    levels = base64.b64decode(waveform(blip))
    assert len(levels) == 256
    assert max(levels) == 255
    assert len(base64.b64decode(waveform(blip, points=64))) == 64
    empty = Pcm(np.zeros(0, dtype=np.float32), 16000)
    assert base64.b64decode(waveform(empty)) == bytes(256)


# --- QQ SILK --------------------------------------------------------------------------


def test_silk_round_trip(speech: Pcm) -> None:
    data = encode_silk(speech)
    assert data.startswith(b"\x02#!SILK_V3")
    assert sniff(data) == "silk"
    again = decode(data, rate=16000)  # told by its header
    # The encoder codes whole 20 ms frames: at most one frame of padding.
    assert again.duration_s == pytest.approx(speech.duration_s, abs=0.025)
    stated = probe_duration(data)
    assert stated is not None
    assert stated == pytest.approx(speech.duration_s, abs=0.025)
    assert again.rms() == pytest.approx(speech.rms(), rel=0.2)
    assert best_correlation(speech.samples, again.samples, 120) > 0.8


def test_silk_decodes_at_any_rate_and_in_both_variants(speech: Pcm) -> None:
    tencent = encode_silk(speech, rate=16000, bitrate=20000)
    plain = tencent[1:] + b"\xff\xff"  # no 0x02 in front; the end marker at the back
    for data in (tencent, plain):
        for rate in (16000, 22050):
            pcm = decode_silk(data, rate=rate)
            assert pcm.rate == rate
            assert pcm.duration_s == pytest.approx(speech.duration_s, abs=0.025)


def test_silk_cut_short_gives_the_whole_packets_before_the_cut(speech: Pcm) -> None:
    data = encode_silk(speech)
    part = decode(data[: len(data) // 2 + 3])
    assert 0.5 < part.duration_s < speech.duration_s - 1.0


def test_silk_refusals(speech: Pcm) -> None:
    data = encode_silk(speech)
    with pytest.raises(AudioError, match="empty"):
        decode(b"\x02#!SILK_V3")
    rng = np.random.default_rng(5)
    damaged = bytearray(data)
    pos = 10
    while pos + 2 <= len(damaged):  # keep the packet lengths, scramble the payloads
        size = int.from_bytes(damaged[pos : pos + 2], "little", signed=True)
        damaged[pos + 2 : pos + 2 + size] = rng.bytes(size)
        pos += 2 + size
    with pytest.raises(AudioError, match="SILK data is damaged"):
        decode(bytes(damaged))
    with pytest.raises(AudioError, match="SILK data is damaged"):
        decode(b"\x02#!SILK_V3\x00\x10" + rng.bytes(5000))
    with pytest.raises(AudioError, match=r"voice notes up to 2 seconds; this one is 0:0[45]\."):
        decode(data, max_seconds=2)


def test_sniff_knows_silk_and_nothing_else() -> None:
    assert sniff(b"#!SILK_V3\x00\x00") == "silk"
    assert sniff(png_bytes()) is None
    assert sniff(b"") is None
