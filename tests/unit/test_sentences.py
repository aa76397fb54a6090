"""Cutting replies into sentences for text to speech, whole and streamed."""

from __future__ import annotations

import pytest

from brain.speech.sentences import SentenceBuffer, split_sentences

SAMPLES = [
    "Hello there! How are you doing today? I met Dr. Smith at 3.30 p.m. yesterday, "
    "e.g. at the park. It was nice...",
    "你好！今天天气很好。我们去公园吧？好的。",
    'She said "stop!" Then she left. J. R. R. Tolkien wrote books. So do I. Really?!',
    "First line of a list\nSecond line of the list\n\nA new paragraph starts here.",
    "word " * 100,
    "one, two, three " * 40 + "and the end of it all.",
    "x" * 700,
    "Mixed 中文 and English text. 然后是中文句子。Finally English again!",
]


def streamed(text: str, size: int, *, max_chars: int = 120) -> list[str]:
    buffer = SentenceBuffer(max_chars=max_chars)
    out: list[str] = []
    for start in range(0, len(text), size):
        out += buffer.feed(text[start : start + size])
    return out + buffer.flush()


def test_english_sentences_keep_their_punctuation() -> None:
    assert split_sentences("Hello there! How are you today? I am fine, thanks.") == [
        "Hello there!",
        "How are you today?",
        "I am fine, thanks.",
    ]


def test_abbreviations_initials_and_numbers_do_not_end_a_sentence() -> None:
    text = (
        "I met Dr. Smith and Mrs. Jones at 3.30 today. Bring snacks, e.g. apples or "
        "grapes. J. R. R. Tolkien wrote it. So do I. The end."
    )
    assert split_sentences(text) == [
        "I met Dr. Smith and Mrs. Jones at 3.30 today.",
        "Bring snacks, e.g. apples or grapes.",
        "J. R. R. Tolkien wrote it.",
        "So do I. The end.",  # "The end." alone is under min_chars, so it joins
    ]


def test_ellipsis_before_a_lower_case_word_runs_on() -> None:
    assert split_sentences("Well... maybe we could go tomorrow. Or not at all, really!") == [
        "Well... maybe we could go tomorrow.",
        "Or not at all, really!",
    ]


def test_chinese_splits_at_full_width_marks_without_spaces() -> None:
    text = "今天天气很好，我们去公园散步吧。你想一起来吗？太好了！"
    assert split_sentences(text, min_chars=4) == [
        "今天天气很好，我们去公园散步吧。",
        "你想一起来吗？",
        "太好了！",
    ]


def test_short_pieces_join_the_next_one() -> None:
    assert split_sentences("Hi! Ok. So what are we going to do this weekend?") == [
        "Hi! Ok. So what are we going to do this weekend?"
    ]
    # CJK pieces join without a space.
    assert split_sentences("好的。我明白你的意思了。") == ["好的。我明白你的意思了。"]


def test_closing_quotes_stay_with_their_sentence() -> None:
    assert split_sentences('He shouted "run away!" Then everyone ran off.') == [
        'He shouted "run away!"',
        "Then everyone ran off.",
    ]


def test_long_sentences_are_cut_at_commas_then_spaces() -> None:
    text = "one, two, three " * 40 + "and the end."
    parts = split_sentences(text, max_chars=100)
    assert all(len(p) <= 100 for p in parts)
    assert all(p.endswith(",") for p in parts[:-1])
    assert " ".join(parts).split() == text.split()
    words = split_sentences("word " * 100, max_chars=50)
    assert all(len(p) <= 50 for p in words)
    assert sum(len(p.split()) for p in words) == 100
    assert split_sentences("x" * 250, max_chars=100) == ["x" * 100, "x" * 100, "x" * 50]


def test_blank_text_gives_nothing() -> None:
    assert split_sentences("") == []
    assert split_sentences("  \n\n ") == []
    with pytest.raises(ValueError, match="max_chars"):
        split_sentences("Hello.", max_chars=0)


@pytest.mark.parametrize("text", SAMPLES)
@pytest.mark.parametrize("size", [1, 3, 7, 50, 10_000])
def test_streaming_gives_the_same_sentences_as_the_whole_text(text: str, size: int) -> None:
    assert streamed(text, size) == split_sentences(text, max_chars=120)


def test_buffer_hands_out_a_sentence_once_the_next_one_begins() -> None:
    buffer = SentenceBuffer()
    assert buffer.feed("I met Dr.") == []
    assert buffer.feed(" Smith today at the") == []  # "Dr." was no end
    assert buffer.feed(" park.") == []  # the stop may be "park.com" or "park. x"...
    assert buffer.feed(" What") == ["I met Dr. Smith today at the park."]
    assert buffer.feed(" a lovely day it was") == []
    assert buffer.flush() == ["What a lovely day it was"]
    assert buffer.flush() == []


def test_buffer_cuts_a_long_unfinished_sentence() -> None:
    buffer = SentenceBuffer(max_chars=40)
    out = buffer.feed("and then we walked and walked along the river for hours")
    assert out
    assert all(len(p) <= 40 for p in out)
    assert " ".join(out + buffer.flush()).split() == (
        "and then we walked and walked along the river for hours".split()
    )


def test_buffer_in_chinese() -> None:
    buffer = SentenceBuffer(min_chars=4)
    assert buffer.feed("你好，很高兴认识你。今天") == ["你好，很高兴认识你。"]
    assert buffer.feed("过得怎么样？") == []
    assert buffer.flush() == ["今天过得怎么样？"]
