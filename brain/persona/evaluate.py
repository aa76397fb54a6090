"""`tomo persona eval`: persona consistency on a small fixed prompt set.

Each model (the base model, then the base with each LoRA adapter) answers the same
fixed prompts greedily (temperature 0, a fixed token budget) under the persona's system
prompt. Every reply is scored by style markers derived from the persona card, each a
named pure function returning a number from 0 to 1:

- non_empty: the model said something;
- length: the number of sentences is within the card's range ("one to three short
  sentences"; DEFAULT_SENTENCES when the style names none);
- no_list: no bullet or numbered lines (only when the style says "no lists");
- in_character: does not call itself an AI, an assistant or a language model, nor give
  another name than the card's;
- first_person: speaks as "I" / "me" / "my";
- vocabulary: shares words with the card's example replies (two distinct words: 1);
- asks_back: asks a question back (only when the card's example replies do).

An empty reply scores 0 on every marker. A prompt's score is the mean of its markers;
a model's score the mean over the prompts. The numbers compare models on the same card;
they are plumbing-level checks of style, not a measure of quality.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from brain.persona.card import PersonaCard
from brain.ports import ChatTurn, LanguageModel

# Fixed on purpose: the same prompts before and after training. Two of them tempt the
# model out of character (a request for a list, a question about being a program).
EVAL_PROMPTS: tuple[str, ...] = (
    "Hi! Who are you?",
    "I had a rough day at work today.",
    "Can you give me some tips for sleeping better?",
    "Are you a real person or a computer program?",
    "My cat knocked my coffee all over the table this morning.",
    "What did you do this weekend?",
    "I'm thinking about learning to play the guitar.",
    "I feel a bit lonely tonight.",
)
EVAL_MAX_TOKENS = 96
DEFAULT_SENTENCES = (1, 4)

_NUMBERS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_NUM = r"(\d+|" + "|".join(_NUMBERS) + r")"
_RANGE = re.compile(_NUM + r"\s*(?:to|-|–|or)\s*" + _NUM + r"\s+(?:[a-z]+\s+)?sentences?\b")
_AT_MOST = re.compile(
    r"(?:up to|at most|no more than|max(?:imum)?(?: of)?)\s+"
    + _NUM
    + r"\s+(?:[a-z]+\s+)?sentences?\b"
)
_EXACT = re.compile(r"\b" + _NUM + r"\s+(?:[a-z]+\s+)?sentences?\b")
_NO_LISTS = re.compile(
    r"\b(?:no|never|without|avoid(?:s|ing)?)\s+(?:any\s+)?(?:bullet(?:ed)?\s+)?"
    r"(?:lists?|bullet(?: points?)?|numbered lists?)\b"
)
_LIST_LINE = re.compile(r"^\s*(?:[-*•·]|\d+[.)])\s+\S", re.MULTILINE)
_SENTENCE_END = re.compile(r"[.!?…]+(?=\s|$)")
_AI_CLAIM = re.compile(
    r"\b(?:as an ai\b|i am an ai|i'm an ai|i’m an ai|(?:ai|virtual|digital) assistant"
    r"|language model|artificial intelligence|i am (?:just )?a (?:chat)?bot|i'm (?:just )?a "
    r"(?:chat)?bot|i am (?:just )?a (?:computer )?program|i'm (?:just )?a (?:computer )?program"
    r"|chatgpt|openai)"
)
_MY_NAME = re.compile(r"\b(?i:my name is|i'm called|i am called|call me)\s+([A-Z][\w-]*)")
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i’m|i've|i'd|i'll|me|my|mine|myself)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z][a-z']*")
_STOPWORDS = frozenset(
    """a about after again all also am an and any are as at be been but by can could did do
    does for from had has have he her here hers him his how i i'd i'll i'm i've if in into is
    it it's its just let me more my no not now of off oh on or our out over own really she so
    some than that that's the their them then there these they this those to too up us very
    was we were what what's when where which who why will with would yes you you'd you'll
    you're you've your yours""".split()
)


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word]


def sentence_range(style: str) -> tuple[int, int]:
    """The number of sentences a style asks for: "one to three short sentences" ->
    (1, 3), "at most 2 sentences" -> (1, 2), "one sentence" -> (1, 1); none named:
    DEFAULT_SENTENCES."""
    text = style.lower()
    if found := _RANGE.search(text):
        low, high = sorted((_number(found.group(1)), _number(found.group(2))))
        return max(1, low), high
    if found := _AT_MOST.search(text):
        return 1, max(1, _number(found.group(1)))
    if found := _EXACT.search(text):
        n = max(1, _number(found.group(1)))
        return n, n
    return DEFAULT_SENTENCES


def content_words(text: str) -> set[str]:
    return {w.strip("'") for w in _WORD.findall(text.lower()) if w not in _STOPWORDS} - {""}


@dataclass(frozen=True, kw_only=True)
class StyleMarkers:
    """What the card says about how the persona talks."""

    name: str
    min_sentences: int
    max_sentences: int
    no_lists: bool
    vocabulary: frozenset[str]
    asks_questions: bool

    @classmethod
    def from_card(cls, card: PersonaCard) -> StyleMarkers:
        low, high = sentence_range(card.speaking_style)
        replies = [ex.reply for ex in card.example_lines]
        vocabulary: set[str] = set()
        for reply in replies:
            vocabulary |= content_words(reply)
        return cls(
            name=card.name,
            min_sentences=low,
            max_sentences=high,
            no_lists=bool(_NO_LISTS.search(card.speaking_style.lower())),
            vocabulary=frozenset(vocabulary),
            asks_questions=any("?" in r for r in replies),
        )


# --- the markers: pure functions of a reply ----------------------------------------------


def count_sentences(reply: str) -> int:
    pieces = _SENTENCE_END.split(reply.strip())
    return sum(1 for p in pieces if any(ch.isalnum() for ch in p))


def non_empty(reply: str) -> float:
    return 1.0 if reply.strip() else 0.0


def length_ok(reply: str, *, low: int, high: int) -> float:
    return 1.0 if low <= count_sentences(reply) <= high else 0.0


def no_list(reply: str) -> float:
    return 0.0 if _LIST_LINE.search(reply) else 1.0


def in_character(reply: str, *, name: str) -> float:
    if _AI_CLAIM.search(reply.lower()):
        return 0.0
    named = _MY_NAME.search(reply)
    if named is not None and named.group(1).casefold() != name.casefold():
        return 0.0
    return 1.0


def first_person(reply: str) -> float:
    return 1.0 if _FIRST_PERSON.search(reply) else 0.0


def vocabulary_overlap(reply: str, *, vocabulary: frozenset[str], enough: int = 2) -> float:
    if not vocabulary:
        return 0.0
    shared = content_words(reply) & vocabulary
    return min(1.0, len(shared) / enough)


def asks_back(reply: str) -> float:
    return 1.0 if "?" in reply else 0.0


Marker = Callable[[str], float]


def markers_for(style: StyleMarkers) -> dict[str, Marker]:
    """The markers that apply to a card, by name (in table order)."""
    markers: dict[str, Marker] = {
        "non_empty": non_empty,
        "length": lambda r: length_ok(r, low=style.min_sentences, high=style.max_sentences),
    }
    if style.no_lists:
        markers["no_list"] = no_list
    markers["in_character"] = lambda r: in_character(r, name=style.name)
    markers["first_person"] = first_person
    if style.vocabulary:
        markers["vocabulary"] = lambda r: vocabulary_overlap(r, vocabulary=style.vocabulary)
    if style.asks_questions:
        markers["asks_back"] = asks_back
    return markers


def score_reply(reply: str, style: StyleMarkers) -> dict[str, float]:
    """Every marker of `style` on `reply` (all 0 for an empty reply)."""
    markers = markers_for(style)
    if not reply.strip():
        return dict.fromkeys(markers, 0.0)
    return {name: float(fn(reply)) for name, fn in markers.items()}


def average(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# --- running the models --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PromptResult:
    prompt: str
    reply: str
    markers: dict[str, float]

    @property
    def score(self) -> float:
        return average(list(self.markers.values()))


@dataclass(frozen=True, kw_only=True)
class ModelResult:
    label: str  # "base", or the adapter's file name
    model: str  # the model's own name
    results: tuple[PromptResult, ...]

    @property
    def mean(self) -> float:
        return average([r.score for r in self.results])


@dataclass
class EvalReport:
    prompts: tuple[str, ...]
    models: list[ModelResult] = field(default_factory=list)

    def rows(self) -> list[tuple[str, list[float]]]:
        """(prompt, score per model), in prompt order."""
        return [(p, [m.results[i].score for m in self.models]) for i, p in enumerate(self.prompts)]

    def as_text(self) -> str:
        """The table as plain text: prompt x model, then the mean per model."""
        labels = [m.label for m in self.models]
        width = max([len(p) for p in self.prompts] + [4])
        lines = ["prompt".ljust(width) + "".join(f"  {label:>10}" for label in labels)]
        for prompt, scores in self.rows():
            lines.append(prompt.ljust(width) + "".join(f"  {s:>10.2f}" for s in scores))
        lines.append("mean".ljust(width) + "".join(f"  {m.mean:>10.2f}" for m in self.models))
        return "\n".join(lines)


def eval_turns(card: PersonaCard, prompt: str) -> list[ChatTurn]:
    return [
        ChatTurn(role="system", content=card.system_prompt()),
        ChatTurn(role="user", content=prompt),
    ]


async def evaluate_model(
    card: PersonaCard,
    label: str,
    model: LanguageModel,
    *,
    prompts: Sequence[str] = EVAL_PROMPTS,
    max_tokens: int = EVAL_MAX_TOKENS,
    progress: Callable[[int, int], None] | None = None,
) -> ModelResult:
    """One model's replies to the fixed prompts (greedy) and their markers."""
    style = StyleMarkers.from_card(card)
    results: list[PromptResult] = []
    for done, prompt in enumerate(prompts, start=1):
        reply = await model.complete(
            eval_turns(card, prompt), max_tokens=max_tokens, temperature=0.0
        )
        reply = reply.strip()
        results.append(PromptResult(prompt=prompt, reply=reply, markers=score_reply(reply, style)))
        if progress is not None:
            progress(done, len(prompts))
    return ModelResult(label=label, model=model.name, results=tuple(results))


async def evaluate(
    card: PersonaCard,
    models: Mapping[str, LanguageModel],
    *,
    prompts: Sequence[str] = EVAL_PROMPTS,
    max_tokens: int = EVAL_MAX_TOKENS,
) -> EvalReport:
    """Every model (label -> model, e.g. "base" and each adapter) on the fixed prompts."""
    report = EvalReport(prompts=tuple(prompts))
    for label, model in models.items():
        report.models.append(
            await evaluate_model(card, label, model, prompts=prompts, max_tokens=max_tokens)
        )
    return report


__all__ = [
    "DEFAULT_SENTENCES",
    "EVAL_MAX_TOKENS",
    "EVAL_PROMPTS",
    "EvalReport",
    "ModelResult",
    "PromptResult",
    "StyleMarkers",
    "asks_back",
    "count_sentences",
    "evaluate",
    "evaluate_model",
    "first_person",
    "in_character",
    "length_ok",
    "markers_for",
    "no_list",
    "non_empty",
    "score_reply",
    "sentence_range",
    "vocabulary_overlap",
]
