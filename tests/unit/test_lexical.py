from __future__ import annotations

import numpy as np

from brain.memory.lexical import BM25, tokenize


def test_tokenize_stems_and_drops_stopwords() -> None:
    assert tokenize("When did Caroline go camping with her kids?") == [
        "carolin",
        "go",
        "camp",
        "kid",
    ]


def test_tokenize_keeps_numbers_and_splits_cjk_into_bigrams() -> None:
    assert tokenize("Room 7, 2023") == ["room", "7", "2023"]
    assert tokenize("我喜欢猫 and cats") == ["我喜", "喜欢", "欢猫", "cat"]
    assert tokenize("猫") == ["猫"]


def test_bm25_ranks_matching_and_rare_terms_first() -> None:
    docs = [tokenize(t) for t in ("cat sat", "dog barked", "cat dog ran home", "quiet day")]
    bm25 = BM25(docs)
    scores = bm25.scores(tokenize("cat"))
    assert set(np.flatnonzero(scores)) == {0, 2}
    assert scores[0] > scores[2]  # shorter document, same term count
    both = bm25.scores(tokenize("barked cat"))
    assert int(np.argmax(both)) == 1  # "barked" is rarer than "cat"


def test_bm25_empty_and_appends() -> None:
    bm25 = BM25()
    assert bm25.scores(["x"]).shape == (0,)
    bm25.add(["x", "y"])
    assert bm25.scores(["x"])[0] > 0
