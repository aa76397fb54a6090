"""`tomo persona eval`: style markers from the card, scored on a fixed prompt set."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bots.cli import app
from brain.errors import ConfigError, TomoError
from brain.persona.card import PersonaCard, default_card_text
from brain.persona.evaluate import (
    DEFAULT_SENTENCES,
    EVAL_MAX_TOKENS,
    EVAL_PROMPTS,
    StyleMarkers,
    asks_back,
    count_sentences,
    evaluate,
    first_person,
    in_character,
    length_ok,
    markers_for,
    no_list,
    non_empty,
    score_reply,
    sentence_range,
    vocabulary_overlap,
)
from brain.ports import ChatTurn

CARD = PersonaCard.model_validate(yaml.safe_load(default_card_text()))
STYLE = StyleMarkers.from_card(CARD)


class Scripted:
    """Answers every prompt with `reply`; records how it was asked."""

    def __init__(self, reply: str, name: str = "scripted") -> None:
        self.reply = reply
        self._name = name
        self.asked: list[tuple[list[ChatTurn], int, float]] = []

    @property
    def name(self) -> str:
        return self._name

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        self.asked.append((list(turns), max_tokens, temperature))
        return self.reply

    def stream(
        self, turns: Sequence[ChatTurn], *, max_tokens: int, temperature: float = 0.7
    ) -> AsyncIterator[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


IN_STYLE = "Oh no, that sounds tiring! I'm here for you. Want to tell me what happened?"
ASSISTANT = (
    "As an AI language model, here are some tips:\n"
    "1. Sleep early.\n2. Drink water.\n3. Exercise.\n4. Read.\n5. Relax."
)


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("Casual and friendly, one to three short sentences, no lists.", (1, 3)),
        ("2-4 sentences", (2, 4)),
        ("Answers in two or three sentences.", (2, 3)),
        ("at most 2 sentences, never more", (1, 2)),
        ("Replies in one short sentence.", (1, 1)),
        ("Playful.", DEFAULT_SENTENCES),
        ("", DEFAULT_SENTENCES),
    ],
)
def test_sentence_range_from_the_style(style: str, expected: tuple[int, int]) -> None:
    assert sentence_range(style) == expected


def test_style_markers_from_the_default_card() -> None:
    assert (STYLE.min_sentences, STYLE.max_sentences) == (1, 3)
    assert STYLE.no_lists
    assert STYLE.asks_questions
    assert STYLE.name == "Tomo"
    assert {"tiring", "unwind", "name", "hear"} <= STYLE.vocabulary
    assert "the" not in STYLE.vocabulary
    assert list(markers_for(STYLE)) == [
        "non_empty",
        "length",
        "no_list",
        "in_character",
        "first_person",
        "vocabulary",
        "asks_back",
    ]


def test_a_plain_card_gets_only_the_markers_it_supports() -> None:
    style = StyleMarkers.from_card(PersonaCard(name="Mo", self_description="A librarian."))
    assert list(markers_for(style)) == ["non_empty", "length", "in_character", "first_person"]
    assert (style.min_sentences, style.max_sentences) == DEFAULT_SENTENCES


def test_markers_on_hand_written_replies() -> None:
    assert count_sentences(IN_STYLE) == 3
    assert count_sentences("Hmm... okay! Really?") == 3
    assert count_sentences("3.5 is a number") == 1
    assert non_empty(" \n") == 0.0
    assert length_ok(IN_STYLE, low=1, high=3) == 1.0
    assert length_ok(ASSISTANT, low=1, high=3) == 0.0
    assert no_list(IN_STYLE) == 1.0
    assert no_list(ASSISTANT) == 0.0
    assert no_list("- tea\n- cake") == 0.0
    assert in_character(IN_STYLE, name="Tomo") == 1.0
    assert in_character(ASSISTANT, name="Tomo") == 0.0
    assert in_character("I'm just a program, sorry.", name="Tomo") == 0.0
    assert in_character("My name is Bard. Hi!", name="Tomo") == 0.0
    assert in_character("My name is Tomo. Hi!", name="Tomo") == 1.0
    assert first_person(IN_STYLE) == 1.0
    assert first_person("Tomo thinks that is nice.") == 0.0
    assert vocabulary_overlap(IN_STYLE, vocabulary=STYLE.vocabulary) == 1.0
    assert vocabulary_overlap("Quantum chromodynamics.", vocabulary=STYLE.vocabulary) == 0.0
    assert vocabulary_overlap("Tell me.", vocabulary=STYLE.vocabulary) == 0.5
    assert asks_back(IN_STYLE) == 1.0
    assert asks_back("Fine.") == 0.0


def test_scores_of_whole_replies() -> None:
    assert set(score_reply(IN_STYLE, STYLE).values()) == {1.0}
    bad = score_reply(ASSISTANT, STYLE)
    assert bad["in_character"] == bad["no_list"] == bad["length"] == bad["asks_back"] == 0.0
    assert set(score_reply("", STYLE).values()) == {0.0}


async def test_evaluate_compares_models_greedily_on_the_fixed_prompts() -> None:
    good, bad = Scripted(IN_STYLE, name="m"), Scripted(ASSISTANT, name="m")
    report = await evaluate(CARD, {"base": bad, "persona.gguf": good})
    assert [m.label for m in report.models] == ["base", "persona.gguf"]
    assert report.models[1].mean == 1.0
    assert report.models[0].mean < 0.5
    assert len(EVAL_PROMPTS) == 8
    for model in (good, bad):
        assert [turns[-1].content for turns, _, _ in model.asked] == list(EVAL_PROMPTS)
        assert {(tokens, temp) for _, tokens, temp in model.asked} == {(EVAL_MAX_TOKENS, 0.0)}
        assert model.asked[0][0][0].content == CARD.system_prompt()
    rows = report.rows()
    assert [p for p, _ in rows] == list(EVAL_PROMPTS)
    assert all(scores[1] == 1.0 for _, scores in rows)
    text = report.as_text()
    assert text.splitlines()[0].split()[-2:] == ["base", "persona.gguf"]
    assert text.splitlines()[-1].split()[-1] == "1.00"


def test_cli_eval_prints_a_table_for_the_base_and_each_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOMO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOMO_LLM__BACKEND", "stub")
    monkeypatch.delenv("TOMO_PERSONA", raising=False)
    adapter = tmp_path / "persona-lora.gguf"
    adapter.write_bytes(b"GGUF")
    result = CliRunner().invoke(
        app, ["persona", "eval", "--adapter", str(adapter), "--replies"], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "persona-lora.gguf" in result.output
    assert "base" in result.output
    assert "mean" in result.output
    assert "You said: Hi! Who are you?" in result.output  # --replies

    missing = CliRunner().invoke(app, ["persona", "eval", "--adapter", str(tmp_path / "no.gguf")])
    assert isinstance(missing.exception, ConfigError)
    assert "does not exist" in str(missing.exception)


def test_cli_eval_refuses_a_corrupt_adapter_instead_of_scoring_the_base_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOMO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TOMO_LLM__BACKEND", "llamacpp")
    monkeypatch.delenv("TOMO_LLM__MODEL_PATH", raising=False)
    adapter = tmp_path / "broken.gguf"
    adapter.write_bytes(b"GGUF" + b"\x00" * 60)
    result = CliRunner().invoke(app, ["persona", "eval", "--adapter", str(adapter)])
    assert isinstance(result.exception, TomoError), result.output
    assert str(adapter) in str(result.exception)
    assert "Persona consistency" not in result.output


def test_cli_eval_refuses_adapters_on_an_openai_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOMO_LLM__BACKEND", "openai")
    adapter = tmp_path / "a.gguf"
    adapter.write_bytes(b"GGUF")
    result = CliRunner().invoke(app, ["persona", "eval", "--adapter", str(adapter)])
    assert isinstance(result.exception, ConfigError)
    assert "TOMO_LLM__BACKEND=llamacpp" in str(result.exception)


@pytest.mark.model
async def test_the_bundled_model_is_scored_greedily_and_repeatably() -> None:
    from brain.llm.llamacpp import LlamaCppModel

    model = LlamaCppModel(n_threads=2)
    try:
        prompts = EVAL_PROMPTS[:2]
        first = await evaluate(CARD, {"base": model}, prompts=prompts, max_tokens=24)
        again = await evaluate(CARD, {"base": model}, prompts=prompts, max_tokens=24)
    finally:
        await model.aclose()
    replies = [r.reply for r in first.models[0].results]
    assert all(replies)
    assert replies == [r.reply for r in again.models[0].results]  # greedy
    assert 0.0 <= first.models[0].mean <= 1.0
