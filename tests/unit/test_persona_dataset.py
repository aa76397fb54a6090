"""The persona LoRA's data: SFT from the card and stored replies, judged DPO pairs, JSONL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from bots.cli import app
from brain.errors import ConfigError, ModelError
from brain.memory.types import NewMemory, scope_of
from brain.messages import ChatRef, Text
from brain.mind import EMPTY_ANSWER
from brain.persona.card import PersonaCard, default_card_text
from brain.persona.dataset import (
    DPO_FILE,
    SFT_FILE,
    BuildReport,
    Dataset,
    DatasetConfig,
    Prompt,
    Reference,
    build_dataset,
    card_answers,
    card_examples,
    card_prompts,
    dataset_files,
    first_person,
    is_fallback,
    judge_turns,
    load_dpo,
    load_sft,
    parse_verdict,
    synthesize_pair,
    temperatures,
    write_dataset,
    write_jsonl,
)
from brain.ports import ChatTurn, NewMessage, Person, StoredMessage
from storage.longterm import SqlLongTermStore
from storage.migrate import upgrade
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, DM, GROUP, T0

CARD = PersonaCard.model_validate(yaml.safe_load(default_card_text()))


class CandidateModel:
    """Writes a different reply at each temperature (or always the same one)."""

    def __init__(self, *, same: bool = False, fail: bool = False) -> None:
        self.same = same
        self.fail = fail
        self.calls: list[tuple[float, int]] = []

    @property
    def name(self) -> str:
        return "writer"

    async def complete(
        self,
        turns: Sequence[ChatTurn],
        *,
        max_tokens: int,
        temperature: float = 0.7,
        json_schema: Mapping[str, Any] | None = None,
    ) -> str:
        assert json_schema is None
        assert turns[0].role == "system"
        assert turns[-1].role == "user"
        self.calls.append((temperature, max_tokens))
        if self.fail:
            raise ModelError("the writer is down")
        if self.same:
            return "Same answer."
        return f"Reply at {temperature}. How are you?"

    def stream(
        self, turns: Sequence[ChatTurn], *, max_tokens: int, temperature: float = 0.7
    ) -> AsyncIterator[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class Judge:
    """Answers each verdict from a script (strings as they are, the rest as JSON)."""

    def __init__(self, *answers: Any, name: str = "judge-1") -> None:
        self.answers = list(answers)
        self._name = name
        self.prompts: list[list[ChatTurn]] = []
        self.schemas: list[Mapping[str, Any]] = []

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
        assert json_schema is not None
        assert temperature == 0.0
        self.prompts.append(list(turns))
        self.schemas.append(json_schema)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer if isinstance(answer, str) else json.dumps(answer)

    def stream(
        self, turns: Sequence[ChatTurn], *, max_tokens: int, temperature: float = 0.7
    ) -> AsyncIterator[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


GOOD = {"best": 2, "worst": 1, "reasons": "2 asks back like Tomo; 1 is flat."}


def prompt(text: str = "I adopted a cat!") -> Prompt:
    return Prompt(
        turns=(
            ChatTurn(role="system", content=CARD.system_prompt()),
            ChatTurn(role="user", content=text),
        ),
        source="card",
    )


# --- the card ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        (
            "A warm, curious companion who lives in chat apps. Tomo remembers what friends "
            "tell it, asks about their day, and keeps answers short and kind.",
            "I'm a warm, curious companion who lives in chat apps. I remember what friends "
            "tell me, ask about their day, and keep answers short and kind.",
        ),
        (
            "Tomo is a retired sailor. Tomo's boat is small. Tomo fixes nets and watches ships.",
            "I am a retired sailor. My boat is small. I fix nets and watch ships.",
        ),
        ("Tomo loves cats, dogs and birds.", "I love cats, dogs and birds."),
        ("I'm Tomo and I love tea.", "I'm Tomo and I love tea."),
    ],
)
def test_first_person(description: str, expected: str) -> None:
    assert first_person(description, "Tomo") == expected


def test_card_examples_are_conversations_in_the_persona_voice() -> None:
    records = card_examples(CARD)
    assert {r["source"] for r in records} == {"card"}
    for record in records:
        roles = [m["role"] for m in record["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert record["messages"][0]["content"] == CARD.system_prompt()
    examples = [r for r in records if r["kind"] == "example"]
    assert [r["messages"][2]["content"] for r in examples] == [
        ex.reply for ex in CARD.example_lines
    ]
    answers = {q: a for _, q, a in card_answers(CARD)}
    assert answers["Who are you?"].startswith("I'm Tomo! I'm a warm, curious companion")
    assert "Casual and friendly, one to three short sentences" in answers["How do you talk?"]
    assert {r["kind"] for r in records} == {"example", "identity", "style"}


def test_a_card_without_style_or_examples_still_gives_identity_examples() -> None:
    card = PersonaCard(name="Mo", self_description="Mo is a quiet librarian.")
    records = card_examples(card)
    assert {r["kind"] for r in records} == {"identity"}
    assert records[0]["messages"][2]["content"] == "I'm Mo! I am a quiet librarian."
    assert all(p.source == "card" for p in card_prompts(card))


def test_fallback_replies_are_recognised() -> None:
    assert is_fallback(EMPTY_ANSWER)
    assert is_fallback("Sorry, something went wrong on my side: boom")
    assert is_fallback("I couldn't hear any words in that voice note.")
    assert not is_fallback("Sorry to hear that! Want to talk about it?")


# --- stored conversations ----------------------------------------------------------------


class Chat:
    """Messages stored a minute apart (or later), as the brain stores them."""

    def __init__(self, store: SqlMemoryStore) -> None:
        self.store = store
        self.minute = 0

    async def say(
        self,
        who: Person | None,
        text: str,
        *,
        chat: ChatRef = DM,
        answers: StoredMessage | None = None,
        gap: timedelta = timedelta(minutes=1),
    ) -> StoredMessage:
        self.minute += int(gap.total_seconds() // 60)
        msg, _ = await self.store.add_message(
            NewMessage(
                chat=chat,
                author=who,
                role="user" if who else "assistant",
                platform_message_id=f"m{self.minute}" if who else None,
                text=text,
                segments=(Text(text=text),),
                sent_at=T0 + timedelta(minutes=self.minute),
                answers_id=answers.id if answers else None,
            )
        )
        return msg

    async def exchange(
        self,
        who: Person,
        said: str,
        reply: str,
        *,
        chat: ChatRef = DM,
        gap: timedelta = timedelta(minutes=1),
    ) -> StoredMessage:
        msg = await self.say(who, said, chat=chat, gap=gap)
        return await self.say(None, reply, chat=chat, answers=msg)


async def fill(store: SqlMemoryStore) -> tuple[Person, Person]:
    alice = await store.resolve_person(ALICE, seen_at=T0)
    bob = await store.resolve_person(BOB, seen_at=T0)
    chat = Chat(store)
    await chat.exchange(alice, "hi there", "Hello Alice! How was your day?")
    await chat.exchange(alice, "I adopted a cat", "No way! What's their name?")
    await chat.exchange(alice, "hmm", "ok")  # too short
    await chat.exchange(alice, "??", EMPTY_ANSWER)  # fallback
    await chat.exchange(alice, "/memory", "Here is what I remember about you.")  # command
    await chat.exchange(alice, "another cat!", "no way!  what's their NAME?")  # duplicate
    await chat.exchange(alice, "x", "word " * 200)  # too long
    # a day later: the earlier conversation is not context any more
    await chat.exchange(
        alice, "Back again", "Welcome back! Did the cat settle in?", gap=timedelta(days=1)
    )
    await chat.say(bob, "morning all", chat=GROUP)
    await chat.exchange(
        bob,
        "tomo, tell us a joke",
        "Why did the cat sit on the laptop? To keep an eye on the mouse!",
        chat=GROUP,
    )
    return alice, bob


async def test_stored_replies_become_sft_examples_and_bad_ones_are_counted(
    sqlite_store: SqlMemoryStore,
) -> None:
    alice, bob = await fill(sqlite_store)
    built = await build_dataset(
        card=CARD, store=sqlite_store, model=None, config=DatasetConfig(dpo=False)
    )
    convo = [r for r in built.sft if r["source"] == "conversation"]
    replies = [r["messages"][-1]["content"] for r in convo]
    # newest first; the duplicate kept is the newest wording
    assert replies == [
        "Why did the cat sit on the laptop? To keep an eye on the mouse!",
        "Welcome back! Did the cat settle in?",
        "no way!  what's their NAME?",
        "Hello Alice! How was your day?",
    ]
    assert dict(built.report.sft_skipped) == {
        "too_short": 1,
        "fallback": 1,
        "command": 1,
        "duplicate": 1,
        "too_long": 1,
    }
    assert built.report.sft_card == len(card_examples(CARD))
    assert built.report.sft_conversation == 4
    assert built.dpo == []

    group, later, cat, first = convo
    assert group["messages"][0]["content"].endswith("each message starts with the speaker's name.")
    assert [m["content"] for m in group["messages"][1:-1]] == [
        "Bob: morning all\nBob: tomo, tell us a joke"
    ]
    assert group["person_id"] == bob.id
    assert group["chat"] == GROUP.key
    # after a day's silence only the new conversation is context
    assert [m["role"] for m in later["messages"]] == ["system", "user", "assistant"]
    assert later["messages"][1]["content"] == "Back again"
    # the earlier exchange is kept as context, user and assistant turns alternating
    roles = [m["role"] for m in cat["messages"]]
    assert roles[0] == "system"
    assert roles[1:] == ["user", "assistant"] * ((len(roles) - 1) // 2)
    assert len(cat["messages"]) == 1 + 7 + 1  # 8 earlier messages, the leading reply dropped
    assert cat["messages"][-2]["content"] == "another cat!"
    assert first["person_id"] == alice.id
    assert isinstance(first["message_id"], int)


async def test_max_conversations_caps_the_stored_replies(sqlite_store: SqlMemoryStore) -> None:
    await fill(sqlite_store)
    cfg = DatasetConfig(dpo=False, max_conversations=2, page_size=3)
    built = await build_dataset(card=CARD, store=sqlite_store, model=None, config=cfg)
    assert built.report.sft_conversation == 2
    none = await build_dataset(
        card=CARD,
        store=sqlite_store,
        model=None,
        config=DatasetConfig(dpo=False, max_conversations=0),
    )
    assert none.report.sft_conversation == 0


async def test_a_per_person_data_set_keeps_only_replies_to_that_person(
    sqlite_store: SqlMemoryStore, tmp_path: Path
) -> None:
    _alice, bob = await fill(sqlite_store)
    cfg = DatasetConfig(dpo=False, person_id=bob.id)
    built = await build_dataset(card=CARD, store=sqlite_store, model=None, config=cfg)
    convo = [r for r in built.sft if r["source"] == "conversation"]
    assert [r["person_id"] for r in convo] == [bob.id]
    assert built.report.sft_skipped["other_person"] == 4  # all of Alice's usable replies
    written = write_dataset(tmp_path, built, person_id=bob.id)
    assert written["sft"].name == f"person-{bob.id}-sft.jsonl"
    assert dataset_files(bob.id) == (f"person-{bob.id}-sft.jsonl", f"person-{bob.id}-dpo.jsonl")
    assert load_sft(written["sft"]) == built.sft


# --- DPO ---------------------------------------------------------------------------------


async def test_a_judged_pair_keeps_the_choice_and_the_reasons() -> None:
    model, judge = CandidateModel(), Judge(GOOD)
    cfg = DatasetConfig(candidates=3, min_temperature=0.2, max_temperature=1.0)
    pair = await synthesize_pair(
        prompt(), card=CARD, model=model, judge=judge, reference=Reference(), config=cfg
    )
    assert isinstance(pair, dict)
    assert [t for t, _ in model.calls] == [0.2, 0.6, 1.0]
    assert pair["chosen"] == [{"role": "assistant", "content": "Reply at 0.6. How are you?"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "Reply at 0.2. How are you?"}]
    assert pair["reasons"] == GOOD["reasons"]
    assert pair["judge"] == "judge-1"
    assert pair["person_id"] is None
    assert pair["source"] == "card"
    assert [m["role"] for m in pair["prompt"]] == ["system", "user"]
    assert (pair["chosen_temperature"], pair["rejected_temperature"]) == (0.6, 0.2)
    # the judge saw the card and the numbered candidates, and was given the schema
    shown = judge.prompts[0][-1].content
    assert CARD.speaking_style.strip() in shown
    assert "[3] Reply at 1.0. How are you?" in shown
    assert judge.schemas[0]["properties"]["best"]["maximum"] == 3
    assert judge.schemas[0]["required"] == ["best", "worst", "reasons"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("this is not json", "judge_invalid_json"),
        ('{"best": 1, "worst": 2', "judge_invalid_json"),
        ("[1, 2]", "judge_bad_fields"),
        ({"best": "one", "worst": 2, "reasons": ""}, "judge_bad_fields"),
        ({"best": True, "worst": 2, "reasons": ""}, "judge_bad_fields"),
        ({"best": 1, "worst": 2, "reasons": 7}, "judge_bad_fields"),
        ({"best": 0, "worst": 2, "reasons": ""}, "judge_out_of_range"),
        ({"best": 1, "worst": 9, "reasons": ""}, "judge_out_of_range"),
        ({"best": 2, "worst": 2, "reasons": "same"}, "judge_same_choice"),
        (ModelError("judge down"), "judge_failed"),
    ],
)
async def test_an_unusable_verdict_skips_the_pair(answer: Any, reason: str) -> None:
    pair = await synthesize_pair(
        prompt(),
        card=CARD,
        model=CandidateModel(),
        judge=Judge(answer),
        reference=Reference(),
        config=DatasetConfig(candidates=3),
    )
    assert pair == reason


async def test_identical_candidates_are_never_judged() -> None:
    judge = Judge(GOOD)
    pair = await synthesize_pair(
        prompt(),
        card=CARD,
        model=CandidateModel(same=True),
        judge=judge,
        reference=Reference(),
        config=DatasetConfig(),
    )
    assert pair == "identical_candidates"
    assert judge.prompts == []
    failed = await synthesize_pair(
        prompt(),
        card=CARD,
        model=CandidateModel(fail=True),
        judge=judge,
        reference=Reference(),
        config=DatasetConfig(),
    )
    assert failed == "generation_failed"


def test_parse_verdict_takes_json_wrapped_in_prose() -> None:
    verdict = parse_verdict('Sure!\n```json\n{"best": 3, "worst": 1.0, "reasons": " ok "}\n```', 3)
    assert not isinstance(verdict, str)
    assert (verdict.best, verdict.worst, verdict.reasons) == (2, 0, "ok")


def test_temperatures_spread_evenly() -> None:
    assert temperatures(4, low=0.3, high=1.2) == [0.3, 0.6, 0.9, 1.2]
    with pytest.raises(ConfigError):
        DatasetConfig(candidates=1)


async def test_the_judge_sees_the_persons_profile_and_memories_of_that_chat(
    sqlite_store: SqlMemoryStore,
) -> None:
    alice, bob = await fill(sqlite_store)
    lt = SqlLongTermStore(sqlite_store.db)
    await lt.put_summary(kind="profile", subject=str(alice.id), text="Alice loves cats.", at=T0)
    await lt.put_summary(kind="profile", subject=str(bob.id), text="Bob writes jokes.", at=T0)
    for text, person, chat in [
        ("Alice's cat is called Miso.", alice, DM),
        ("Alice told the group she moved.", alice, GROUP),
        ("Bob plays the drums.", bob, GROUP),
        ("Bob's DM secret.", bob, ChatRef(platform="telegram", chat_id="2", kind="dm")),
    ]:
        await lt.add_memory(
            NewMemory(
                scope=scope_of(chat, person_id=person.id),
                text=text,
                about=(person.id,),
                source_message_ids=(),
                created_at=T0,
            )
        )
    judge = Judge(GOOD, name="big-judge")
    built = await build_dataset(
        card=CARD,
        store=sqlite_store,
        longterm=lt,
        model=CandidateModel(),
        judge=judge,
        config=DatasetConfig(candidates=2),
    )
    card_count = len(card_prompts(CARD))
    assert built.report.dpo_prompts == card_count + 4
    assert built.report.dpo_pairs == card_count + 4
    assert {p["judge"] for p in built.dpo} == {"big-judge"}
    by_source = [p for p in built.dpo if p["source"] == "conversation"]
    assert [p["person_id"] for p in by_source] == [bob.id, alice.id, alice.id, alice.id]

    group_prompt, dm_prompt = judge.prompts[card_count][-1].content, judge.prompts[-1][-1].content
    # a DM prompt: Alice's profile and her DM memory, nothing from the group or Bob
    assert "Alice loves cats." in dm_prompt
    assert "Alice's cat is called Miso." in dm_prompt
    assert "moved" not in dm_prompt
    assert "Bob" not in dm_prompt
    assert "Alice: hi there" in dm_prompt
    # a group prompt: Bob's memories of that group only, and no profile (built from DMs)
    assert "Bob plays the drums." in group_prompt
    assert "Bob writes jokes." not in group_prompt
    assert "DM secret" not in group_prompt
    # the card prompts had no person to show
    assert "knows about" not in judge.prompts[0][-1].content


async def test_garbage_from_the_judge_is_counted_not_fatal() -> None:
    judge = Judge("nonsense")
    built = await build_dataset(
        card=CARD,
        store=None,
        model=CandidateModel(),
        judge=judge,
        config=DatasetConfig(candidates=2),
    )
    assert built.dpo == []
    assert dict(built.report.dpo_skipped) == {"judge_invalid_json": len(card_prompts(CARD))}


async def test_progress_is_reported_per_stage(sqlite_store: SqlMemoryStore) -> None:
    await fill(sqlite_store)
    seen: list[tuple[str, int, int | None]] = []
    await build_dataset(
        card=CARD,
        store=sqlite_store,
        model=CandidateModel(),
        judge=Judge(GOOD),
        config=DatasetConfig(candidates=2, max_dpo_prompts=3),
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert seen[0] == ("card", len(card_examples(CARD)), len(card_examples(CARD)))
    assert ("conversations", 9, None) in seen  # nine stored replies looked at
    assert [s for s in seen if s[0] == "dpo"] == [("dpo", 1, 3), ("dpo", 2, 3), ("dpo", 3, 3)]


def test_judge_turns_number_the_candidates_from_one() -> None:
    turns = judge_turns(card=CARD, prompt=prompt(), candidates=["a", "b"], reference=Reference())
    assert turns[0].role == "system"
    assert '"best"' in turns[0].content
    assert "[1] a\n[2] b" in turns[1].content


# --- JSONL -------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path: Path) -> None:
    built = asyncio.run(
        build_dataset(
            card=CARD,
            store=None,
            model=CandidateModel(),
            judge=Judge(GOOD),
            config=DatasetConfig(candidates=2),
        )
    )
    built.sft.append(
        {
            "messages": [
                {"role": "user", "content": "line\u2028separator and ünïcode 🐢"},
                {"role": "assistant", "content": "ok then"},
            ],
            "source": "card",
        }
    )
    written = write_dataset(tmp_path, built)
    assert written == {"sft": tmp_path / SFT_FILE, "dpo": tmp_path / DPO_FILE}
    assert load_sft(written["sft"]) == built.sft
    assert load_dpo(written["dpo"]) == built.dpo
    assert sorted(p.name for p in tmp_path.iterdir()) == [DPO_FILE, SFT_FILE]


def test_no_dpo_file_without_dpo(tmp_path: Path) -> None:
    built = Dataset(sft=card_examples(CARD), dpo=[], report=BuildReport())
    assert write_dataset(tmp_path, built) == {"sft": tmp_path / SFT_FILE}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"messages": [{"role": "user", "content": "hi"}], "source": "card"}', "messages"),
        (
            '{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}],'
            ' "source": "card"}',
            "assistant",
        ),
        (
            '{"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content":'
            ' "x"}], "source": "card"}',
            "role",
        ),
        (
            '{"messages": [{"role": "user", "content": "hi"}, '
            '{"role": "assistant", "content": "x"}]}',
            "source",
        ),
    ],
)
def test_a_malformed_sft_line_names_the_file_and_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    path = tmp_path / SFT_FILE
    good = json.dumps(card_examples(CARD)[0])
    path.write_text(f"{good}\n\n{line}\n{good}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=problem) as caught:
        load_sft(path)
    assert f"{path}:3:" in str(caught.value)


def test_a_malformed_dpo_line_names_the_file_and_line(tmp_path: Path) -> None:
    good = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "Hello! How are you?"}],
        "rejected": [{"role": "assistant", "content": "hello."}],
        "reasons": "",
        "judge": "j",
        "person_id": None,
        "source": "card",
    }
    path = tmp_path / DPO_FILE
    write_jsonl(path, [good])
    assert load_dpo(path) == [good]
    for bad, problem in [
        ({**good, "chosen": good["rejected"]}, "same reply"),
        ({**good, "prompt": [{"role": "assistant", "content": "x"}]}, "end with a user"),
        ({**good, "chosen": [{"role": "user", "content": "x"}]}, "assistant"),
        ({**good, "person_id": "7"}, "person_id"),
        ({k: v for k, v in good.items() if k != "judge"}, "judge"),
    ]:
        write_jsonl(path, [good, bad])
        with pytest.raises(ConfigError, match=problem) as caught:
            load_dpo(path)
        assert f"{path}:2:" in str(caught.value)


def test_missing_or_empty_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_sft(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no records"):
        load_dpo(tmp_path / "empty.jsonl")


def test_a_write_that_fails_midway_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / SFT_FILE

    def records(fail_after: int) -> Iterator[dict[str, Any]]:
        for i, record in enumerate(card_examples(CARD)):
            if i == fail_after:
                raise RuntimeError("crash while building")
            yield record

    with pytest.raises(RuntimeError):
        write_jsonl(path, records(3))
    assert list(tmp_path.iterdir()) == []
    # an earlier complete file survives a failed rewrite untouched
    write_jsonl(path, card_examples(CARD)[:2])
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        write_jsonl(path, records(1))
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


# --- the CLI -----------------------------------------------------------------------------


def cli_env(monkeypatch: pytest.MonkeyPatch, data: Path) -> None:
    monkeypatch.setenv("TOMO_DATA_DIR", str(data))
    monkeypatch.setenv("TOMO_LLM__BACKEND", "stub")
    monkeypatch.delenv("TOMO_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOMO_PERSONA", raising=False)


def seed(data: Path) -> None:
    url = f"sqlite:///{data / 'tomo.db'}"
    upgrade(url)

    async def go() -> None:
        store = SqlMemoryStore(url)
        try:
            await fill(store)
        finally:
            await store.aclose()

    asyncio.run(go())


def test_cli_dataset_writes_jsonl_and_prints_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, out = tmp_path / "data", tmp_path / "out" / "persona"
    cli_env(monkeypatch, data)
    seed(data)
    result = CliRunner().invoke(app, ["persona", "dataset", "--out", str(out), "--candidates", "2"])
    assert result.exit_code == 0, result.output
    sft, dpo = load_sft(out / SFT_FILE), (out / DPO_FILE)
    cards = len(card_examples(CARD))
    assert f"SFT examples: {cards} from the card, 4 from conversations" in result.output
    assert (
        "stored replies left out: command 1, duplicate 1, fallback 1, too_long 1, too_short 1"
        in result.output
    )
    assert len(sft) == cards + 4
    # the stub writes the same reply at every temperature: every pair is skipped, counted
    prompts = len(card_prompts(CARD)) + 4
    assert f"DPO pairs: 0 from {prompts} prompts" in result.output
    assert f"pairs skipped: identical_candidates {prompts}" in result.output
    assert dpo.read_text(encoding="utf-8") == ""


def test_cli_dataset_without_dpo_or_conversations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_env(monkeypatch, tmp_path / "data")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["persona", "dataset", "--out", str(out), "--no-dpo", "--max-conversations", "0"]
    )
    assert result.exit_code == 0, result.output
    assert "DPO pairs: not built (--no-dpo)" in result.output
    assert not (out / DPO_FILE).exists()
    assert len(load_sft(out / SFT_FILE)) == len(card_examples(CARD))


def test_cli_dataset_refuses_an_out_that_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_env(monkeypatch, tmp_path / "data")
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    for out, problem in [(blocker, "is a file"), (blocker / "sub", "Cannot create the folder")]:
        result = CliRunner().invoke(app, ["persona", "dataset", "--out", str(out), "--no-dpo"])
        assert isinstance(result.exception, ConfigError), result.output
        assert problem in str(result.exception)
    result = CliRunner().invoke(
        app, ["persona", "dataset", "--out", str(tmp_path / "o"), "--judge-model", "big"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "go together" in str(result.exception)
