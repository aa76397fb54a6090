"""Lexical search: tokenizing (Snowball stems; CJK as character bigrams) and BM25."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")

STOPWORDS = frozenset(
    """a an the and or but if then so of to in on at by for with from as is are was were be
    been being am do does did doing have has had having i me my mine you your yours he him
    his she her hers it its we us our they them their what which who whom whose this that
    these those there here when where why how all any both each few more most other some
    such no nor not only own same than too very can will just should would could might
    must shall may about into over under again further once up down out off s t d ll m
    re ve y o don didn doesn isn wasn weren won wouldn""".split()
)


@lru_cache(maxsize=1)
def _stemmer() -> object:
    import Stemmer  # PyStemmer: the Snowball stemmers in C

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    stem: str = _stemmer().stemWord(word)  # type: ignore[attr-defined]
    return stem


def tokenize(text: str) -> list[str]:
    """Lower-cased stems without stopwords; runs of CJK become character bigrams."""
    tokens: list[str] = []
    for word in _TOKEN.findall(text.lower()):
        for part in _split_cjk(word):
            if part.startswith("\x00"):
                tokens.append(part[1:])
            elif part not in STOPWORDS and (len(part) > 1 or part.isdigit()):
                tokens.append(_stem(part))
    return tokens


def _split_cjk(word: str) -> list[str]:
    """Latin parts as they are; CJK runs as unigrams (if alone) or bigrams, marked."""
    if not _CJK.search(word):
        return [word]
    out: list[str] = []
    pos = 0
    for m in _CJK.finditer(word):
        if m.start() > pos:
            out.append(word[pos : m.start()])
        run = m.group()
        if len(run) == 1:
            out.append("\x00" + run)
        else:
            out.extend("\x00" + run[i : i + 2] for i in range(len(run) - 1))
        pos = m.end()
    if pos < len(word):
        out.append(word[pos:])
    return out


class BM25:
    """Okapi BM25 over a growing list of documents.

    Postings are kept as lists while documents arrive and turned into numpy arrays,
    per term, the first time a query needs them.
    """

    def __init__(self, docs: Sequence[Sequence[str]] = (), *, k1: float = 1.2, b: float = 0.75):
        self.k1, self.b = k1, b
        self.postings: dict[str, list[tuple[int, int]]] = {}
        self.lengths: list[int] = []
        self._arrays: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]] = {}
        self._lengths: npt.NDArray[np.float64] | None = None
        for doc in docs:
            self.add(doc)

    def __len__(self) -> int:
        return len(self.lengths)

    def add(self, doc: Sequence[str]) -> int:
        index = len(self.lengths)
        self.lengths.append(len(doc))
        self._lengths = None
        for term, tf in Counter(doc).items():
            self.postings.setdefault(term, []).append((index, tf))
            self._arrays.pop(term, None)
        return index

    def _posting(self, term: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        cached = self._arrays.get(term)
        if cached is None:
            pairs = self.postings[term]
            docs = np.fromiter((d for d, _ in pairs), dtype=np.int64, count=len(pairs))
            tfs = np.fromiter((t for _, t in pairs), dtype=np.float64, count=len(pairs))
            cached = self._arrays[term] = (docs, tfs)
        return cached

    def scores(self, query: Sequence[str]) -> npt.NDArray[np.float32]:
        n = len(self.lengths)
        out = np.zeros(n, dtype=np.float64)
        if n == 0:
            return out.astype(np.float32)
        if self._lengths is None:
            self._lengths = np.asarray(self.lengths, dtype=np.float64)
        lengths = self._lengths
        avg = float(lengths.mean()) or 1.0
        for term in set(query):
            if term not in self.postings:
                continue
            docs, tfs = self._posting(term)
            idf = math.log(1.0 + (n - len(docs) + 0.5) / (len(docs) + 0.5))
            norm = tfs + self.k1 * (1 - self.b + self.b * lengths[docs] / avg)
            out[docs] += idf * tfs * (self.k1 + 1) / norm  # a term lists a document once
        return out.astype(np.float32)
