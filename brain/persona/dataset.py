"""Training data for the persona LoRA: SFT examples and judged DPO pairs, as JSONL.

SFT examples (trl's "conversational" form, one JSON object per line of `sft.jsonl`)::

    {"messages": [{"role": "system", ...}, {"role": "user", ...}, ...,
                  {"role": "assistant", "content": <the persona's reply>}],
     "source": "card" | "conversation", ...metadata}

come from the persona card (its example lines; questions about who it is and how it
talks, answered from the self-description and the speaking style in the persona's first
person, templated) and from stored conversations (the persona's own best replies, each
with the messages of its chat just before it).

DPO pairs (trl's conversational preference form, one per line of `dpo.jsonl`)::

    {"prompt": [system, user, ... messages], "chosen": [{"role": "assistant", ...}],
     "rejected": [{"role": "assistant", ...}], "reasons": str, "judge": str,
     "person_id": int | None, "source": "card" | "conversation", ...metadata}

are synthesized Second-Me style: for each prompt, N candidate replies from a model at
varied temperatures; a judge model (the same model or another) picks the best and the
worst (structured JSON output) with the persona card and, for a prompt from a
conversation with a person, that person's profile and a few of their memories as
reference. A judge answer that cannot be used skips the pair, counted by reason.

Files are written atomically (a temporary file renamed into place); `load_sft` and
`load_dpo` check every line and name the file and line of the first bad record.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from brain.errors import ConfigError, ModelError
from brain.memory.types import Memory, scope_of
from brain.messages import ChatRef
from brain.mind import EMPTY_ANSWER
from brain.persona.card import PersonaCard
from brain.ports import (
    ChatTurn,
    LanguageModel,
    LongTermStore,
    MemoryStore,
    ReplyInContext,
    StoredMessage,
)
from brain.prompt import truncate

Source = Literal["card", "conversation"]
Record = dict[str, Any]

# progress(stage, done, total): stage is "card", "conversations" or "dpo"; total is None
# while unknown (the stored conversations are paged through).
Progress = Callable[[str, int, int | None], None]

SFT_FILE = "sft.jsonl"
DPO_FILE = "dpo.jsonl"

JUDGE_REASONS_CHARS = 400
GROUP_NOTE = "This is a group chat; each message starts with the speaker's name."

# What the bot says when something went wrong rather than as itself (brain/mind.py,
# brain/commands.py, bots/delivery.py, bots/answering.py): never training data.
FALLBACK_PREFIXES: tuple[str, ...] = (
    EMPTY_ANSWER,
    "Sorry, something went wrong",
    "Sorry, that did not work",
    "I can't listen to voice notes",
    "I couldn't listen to that voice note",
    "I couldn't hear any words",
    "That voice note is",
    "(I couldn't say this out loud",
    "I couldn't get that from",
)


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """How the data set is built. The defaults suit a small local model."""

    # stored conversations -------------------------------------------------------------
    max_conversations: int | None = None  # at most this many stored replies (newest first)
    context_messages: int = 8  # earlier messages of the chat given with each reply
    conversation_gap: timedelta = field(default_factory=lambda: timedelta(hours=8))
    min_reply_chars: int = 8  # shorter replies ("ok") teach nothing
    max_reply_chars: int = 600  # longer ones break the card's "short" style
    max_message_chars: int = 1000  # each context message is cut to this
    page_size: int = 200
    # A per-person adapter (HiveMind): only replies to this person (tomo's person id).
    person_id: int | None = None
    # DPO ------------------------------------------------------------------------------
    dpo: bool = True
    candidates: int = 4  # replies generated per prompt (at least 2)
    min_temperature: float = 0.3
    max_temperature: float = 1.1
    max_reply_tokens: int = 160
    judge_max_tokens: int = 256
    judge_memories: int = 5  # memories of the person shown to the judge
    max_dpo_prompts: int | None = None  # None: every card prompt and stored reply

    def __post_init__(self) -> None:
        if self.candidates < 2:
            raise ConfigError("DPO needs at least 2 candidate replies per prompt (--candidates).")
        if self.max_conversations is not None and self.max_conversations < 0:
            raise ConfigError("--max-conversations cannot be negative.")


@dataclass
class BuildReport:
    """What a build produced and what it left out, by reason."""

    sft_card: int = 0
    sft_conversation: int = 0
    sft_skipped: Counter[str] = field(default_factory=Counter)
    dpo_prompts: int = 0
    dpo_pairs: int = 0
    dpo_skipped: Counter[str] = field(default_factory=Counter)


@dataclass
class Dataset:
    sft: list[Record]
    dpo: list[Record]
    report: BuildReport


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """A prompt to answer as the persona: system turn first, last turn the user's."""

    turns: tuple[ChatTurn, ...]
    source: Source
    person_id: int | None = None
    person_name: str | None = None
    chat: ChatRef | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


# --- the persona card ------------------------------------------------------------------

IDENTITY_QUESTIONS: tuple[str, ...] = (
    "Who are you?",
    "Tell me about yourself.",
    "What's your name?",
)
STYLE_QUESTIONS: tuple[str, ...] = (
    "How do you talk?",
    "How would you describe the way you talk?",
)

_FIRST_PERSON = re.compile(r"\b(I|I'm|I've|I'd|I'll|me|my|myself|mine)\b")
_SENTENCES = re.compile(r"(?<=[.!?])\s+")
_IRREGULAR = {"is": "am", "has": "have", "does": "do", "goes": "go", "was": "was"}
_NOT_VERBS = {"and", "or", "but", "nor", "as", "is", "was", "has", "this", "its", "his", "hers"}
_NOUN_PHRASE_GOES_ON = {"and", "or", "are", "were", "of", "with", "than", "more", "too"}
_OBJECT_IT = re.compile(
    r"\b(tell|tells|ask|asks|give|gives|show|shows|teach|teaches|send|sends|call|calls)"
    r"\s+it\b"
)


def _base_verb(word: str) -> str:
    """'remembers' -> 'remember', 'carries' -> 'carry', 'is' -> 'am' (best effort)."""
    low = word.lower()
    if low in _IRREGULAR:
        return _IRREGULAR[low]
    if low.endswith("ies") and len(low) > 4:
        return low[:-3] + "y"
    if low.endswith(("sses", "shes", "ches", "xes", "zes", "oes")):
        return low[:-2]
    if low.endswith("s") and not low.endswith(("ss", "us")):
        return low[:-1]
    return low


def _coordinated_verbs(rest: str) -> str:
    """The verbs of a list after 'I': ', asks about', 'and keeps answers' lose their s.

    Only a word ending in s followed by another word that does not look like the rest of
    a noun phrase counts, so a list of nouns ('cats, dogs and birds.', 'cats and dogs
    are') keeps its plurals. Best effort.
    """

    def fix(match: re.Match[str]) -> str:
        word, after = match.group(2), match.group(3)
        if word.lower() in _NOT_VERBS or after.lower() in _NOUN_PHRASE_GOES_ON:
            return match.group(0)
        return f"{match.group(1)}{_base_verb(word)} {after}"

    return re.sub(r"(,\s+(?:and\s+)?|\s+and\s+)([a-z]+s)\s+([A-Za-z']+)", fix, rest)


def first_person(description: str, name: str) -> str:
    """The card's self-description in the persona's own voice (templated, best effort).

    A description already in the first person is kept as it is. Otherwise "A warm
    companion who ..." becomes "I'm a warm companion who ...", "Tomo remembers what
    friends tell it, asks ..." becomes "I remember what friends tell me, ask ...", and
    "Tomo's" becomes "my". Write the card in the first person where this falls short.
    """
    text = " ".join(description.split())
    if not text or _FIRST_PERSON.search(text):
        return text
    escaped = re.escape(name)
    out: list[str] = []
    for sentence in _SENTENCES.split(text):
        s = re.sub(rf"\b{escaped}'s\b", "my", sentence)
        if re.match(r"(A|An)\s", s):
            s = "I'm " + s[0].lower() + s[1:]
        else:
            subject = re.match(rf"(?:{escaped}|She|He)\s+([A-Za-z']+)(.*)$", s)
            if subject is not None:
                s = f"I {_base_verb(subject.group(1))}{_coordinated_verbs(subject.group(2))}"
            s = re.sub(rf"\b(and|but|so|because|when|while)\s+{escaped}\b", r"\1 I", s)
            s = re.sub(rf"\b{escaped}\b", "me", s)
        s = _OBJECT_IT.sub(r"\1 me", s)
        s = re.sub(r"^my\b", "My", s)
        out.append(s)
    return " ".join(out)


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text[-1] in ".!?" else text + "."


def card_answers(card: PersonaCard) -> list[tuple[str, str, str]]:
    """(kind, question, answer): questions about the persona answered from its card."""
    about = first_person(card.self_description, card.name)
    found: list[tuple[str, str, str]] = []
    found.append(("identity", IDENTITY_QUESTIONS[0], f"I'm {card.name}! {about}".strip()))
    found.append(("identity", IDENTITY_QUESTIONS[1], about))
    found.append(("identity", IDENTITY_QUESTIONS[2], f"I'm {card.name}. What's yours?"))
    style = _sentence(card.speaking_style)
    if style:
        found.append(("style", STYLE_QUESTIONS[0], f"{style} That's just how I like to talk."))
        found.append(("style", STYLE_QUESTIONS[1], f"{style} That's me in a nutshell."))
    return found


def _message(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _messages(turns: Iterable[ChatTurn]) -> list[dict[str, str]]:
    return [_message(t.role, t.content) for t in turns]


def card_examples(card: PersonaCard) -> list[Record]:
    """SFT examples from the card: its example lines and its questions about itself."""
    system = card.system_prompt()
    records: list[Record] = []
    for i, line in enumerate(card.example_lines):
        records.append(
            {
                "messages": [
                    _message("system", system),
                    _message("user", line.user),
                    _message("assistant", line.reply),
                ],
                "source": "card",
                "kind": "example",
                "index": i,
            }
        )
    for kind, question, answer in card_answers(card):
        records.append(
            {
                "messages": [
                    _message("system", system),
                    _message("user", question),
                    _message("assistant", answer),
                ],
                "source": "card",
                "kind": kind,
            }
        )
    return records


def card_prompts(card: PersonaCard) -> list[Prompt]:
    """DPO prompts from the card: its example lines' openers and the questions about it."""
    system = ChatTurn(role="system", content=card.system_prompt())
    questions = [(line.user, "example") for line in card.example_lines]
    questions += [(q, "identity") for q in IDENTITY_QUESTIONS]
    if card.speaking_style.strip():
        questions += [(q, "style") for q in STYLE_QUESTIONS]
    return [
        Prompt(
            turns=(system, ChatTurn(role="user", content=q)),
            source="card",
            meta={"kind": kind},
        )
        for q, kind in questions
    ]


# --- stored conversations --------------------------------------------------------------


def normalized(text: str) -> str:
    """For duplicate checks: case and spacing do not make a reply different."""
    return " ".join(text.casefold().split())


def is_fallback(text: str) -> bool:
    """An error or fallback reply (not the persona speaking as itself)."""
    stripped = text.strip()
    return any(stripped.startswith(prefix) for prefix in FALLBACK_PREFIXES)


def persona_system(card: PersonaCard, chat: ChatRef | None) -> str:
    """The system turn of a training prompt: the card's, with the group note of
    brain/prompt.py in groups (time facts and memories are not kept with a message)."""
    system = card.system_prompt()
    if chat is not None and chat.kind == "group":
        system += "\n" + GROUP_NOTE
    return system


def _turns_of(
    messages: Sequence[StoredMessage], *, chat: ChatRef, max_chars: int
) -> list[ChatTurn]:
    """Stored messages as chat turns, like brain/prompt.py (speaker names in groups);
    consecutive turns of one role are joined, leading assistant turns dropped, so any
    chat template takes them."""
    turns: list[ChatTurn] = []
    for msg in messages:
        body = truncate(msg.text.strip(), limit=max_chars)
        if not body:
            continue
        if msg.role == "user" and chat.kind == "group":
            body = f"{msg.author_name}: {body}"
        if turns and turns[-1].role == msg.role:
            turns[-1] = ChatTurn(role=msg.role, content=f"{turns[-1].content}\n{body}")
        else:
            turns.append(ChatTurn(role=msg.role, content=body))
    while turns and turns[0].role == "assistant":
        turns.pop(0)
    return turns


def reply_prompt(
    item: ReplyInContext, *, card: PersonaCard, config: DatasetConfig
) -> tuple[Prompt, str] | str:
    """The prompt a stored reply answered and the reply, or why it is left out.

    Left out ("best replies" only): an empty, error or fallback reply; one shorter than
    `min_reply_chars` or longer than `max_reply_chars`; the answer to a command; one with
    no user message before it in its conversation (messages before a silence longer than
    `conversation_gap` belong to an earlier conversation and are not context).
    Duplicates are left out by the caller.
    """
    reply = item.reply
    text = reply.text.strip()
    if not text:
        return "empty"
    if is_fallback(text):
        return "fallback"
    if len(text) < config.min_reply_chars:
        return "too_short"
    if len(text) > config.max_reply_chars:
        return "too_long"
    context: list[StoredMessage] = []
    later = reply.sent_at
    for msg in reversed(item.before):
        if later - msg.sent_at > config.conversation_gap:
            break
        context.append(msg)
        later = msg.sent_at
    context.reverse()
    if reply.answers_id is not None:
        answered = next((i for i, m in enumerate(context) if m.id == reply.answers_id), None)
        if answered is not None:
            context = context[: answered + 1]
    users = [m for m in context if m.role == "user" and m.text.strip()]
    if users and users[-1].text.lstrip().startswith("/"):
        return "command"
    turns = _turns_of(context, chat=reply.chat, max_chars=config.max_message_chars)
    if not turns or turns[-1].role != "user":
        return "no_context"
    person = users[-1] if users else None
    prompt = Prompt(
        turns=(ChatTurn(role="system", content=persona_system(card, reply.chat)), *turns),
        source="conversation",
        person_id=person.author_id if person else None,
        person_name=person.author_name if person else None,
        chat=reply.chat,
        meta={"message_id": reply.id, "chat": reply.chat.key},
    )
    return prompt, text


async def conversation_replies(
    store: MemoryStore,
    *,
    card: PersonaCard,
    config: DatasetConfig,
    report: BuildReport,
    progress: Progress | None = None,
) -> list[tuple[Prompt, str]]:
    """The persona's best stored replies with their prompts, newest first."""
    cap = config.max_conversations
    kept: list[tuple[Prompt, str]] = []
    seen: set[str] = set()
    before: int | None = None
    looked = 0
    while cap is None or len(kept) < cap:
        page = await store.bot_replies(
            before_id=before, limit=config.page_size, context=config.context_messages
        )
        if not page:
            break
        for item in page:
            looked += 1
            found = reply_prompt(item, card=card, config=config)
            if isinstance(found, str):
                report.sft_skipped[found] += 1
                continue
            if config.person_id is not None and found[0].person_id != config.person_id:
                report.sft_skipped["other_person"] += 1
                continue
            key = normalized(found[1])
            if key in seen:
                report.sft_skipped["duplicate"] += 1
                continue
            seen.add(key)
            kept.append(found)
            if cap is not None and len(kept) >= cap:
                break
        before = page[-1].reply.id
        if progress is not None:
            progress("conversations", looked, None)
    if progress is not None:
        progress("conversations", looked, looked)
    return kept


def conversation_example(prompt: Prompt, reply: str) -> Record:
    return {
        "messages": [*_messages(prompt.turns), _message("assistant", reply)],
        "source": "conversation",
        "person_id": prompt.person_id,
        **prompt.meta,
    }


# --- DPO: candidates and the judge -----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Reference:
    """What the judge is told about the person the prompt came from."""

    person_name: str | None = None
    profile: str | None = None
    memories: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Verdict:
    best: int  # 0-based indices into the candidates
    worst: int
    reasons: str


def temperatures(n: int, *, low: float, high: float) -> list[float]:
    """`n` temperatures spread evenly from `low` to `high`."""
    if n == 1:
        return [low]
    return [round(low + (high - low) * i / (n - 1), 3) for i in range(n)]


def judge_schema(n: int) -> dict[str, Any]:
    number = {"type": "integer", "minimum": 1, "maximum": n}
    return {
        "type": "object",
        "properties": {
            "best": number,
            "worst": number,
            # bounded so that the JSON closes within the token budget
            "reasons": {"type": "string", "maxLength": JUDGE_REASONS_CHARS},
        },
        "required": ["best", "worst", "reasons"],
    }


def _card_text(card: PersonaCard) -> str:
    lines = [f"Name: {card.name}", f"Who they are: {card.self_description.strip()}"]
    if card.speaking_style.strip():
        lines.append(f"Speaking style: {card.speaking_style.strip()}")
    for ex in card.example_lines:
        lines.append(f'Example - someone says: "{ex.user}" - {card.name} says: "{ex.reply}"')
    return "\n".join(lines)


def _conversation_text(prompt: Prompt, *, name: str, person: str) -> str:
    group = prompt.chat is not None and prompt.chat.kind == "group"
    lines: list[str] = []
    for turn in prompt.turns:
        if turn.role == "assistant":
            lines.append(f"{name}: {turn.content}")
        elif turn.role == "user":
            # group turns already start with their speaker's name
            lines.append(turn.content if group else f"{person}: {turn.content}")
    return "\n".join(lines)


def judge_turns(
    *,
    card: PersonaCard,
    prompt: Prompt,
    candidates: Sequence[str],
    reference: Reference,
) -> list[ChatTurn]:
    """The judge's prompt: the card, the person (profile, memories), the conversation
    and the numbered candidates (1-based); it answers {"best", "worst", "reasons"}."""
    name = card.name
    person = reference.person_name or "the person"
    system = (
        f"You judge replies written for {name}, a chat companion. Pick the candidate reply "
        f"that sounds most like {name} (as the persona card describes them) and fits the "
        f"conversation and what {name} knows about {person} best, and the one that fits "
        'worst. Answer only JSON: {"best": <number>, "worst": <number>, "reasons": "<why, '
        'in one or two sentences>"}.'
    )
    parts = [f"Persona card:\n{_card_text(card)}"]
    if reference.profile:
        parts.append(f"What {name} knows about {person}:\n{reference.profile.strip()}")
    if reference.memories:
        lines = "\n".join(f"- {m}" for m in reference.memories)
        parts.append(f"Some of {name}'s memories about {person}:\n{lines}")
    said = _conversation_text(prompt, name=name, person=reference.person_name or "User")
    parts.append(f"Conversation so far:\n{said}")
    numbered = "\n".join(f"[{i}] {c}" for i, c in enumerate(candidates, start=1))
    parts.append(f"Candidate replies from {name}:\n{numbered}")
    parts.append(
        f"Which candidate (1-{len(candidates)}) is best and which is worst? They must differ."
    )
    return [
        ChatTurn(role="system", content=system),
        ChatTurn(role="user", content="\n\n".join(parts)),
    ]


def _json_object(raw: str) -> Any:
    """The JSON in a judge's answer, also when wrapped in prose or a code fence."""
    try:
        return json.loads(raw)
    except ValueError:
        start, end = raw.find("{"), raw.rfind("}")
        if start < 0 or end <= start:
            raise
        return json.loads(raw[start : end + 1])


def _index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_verdict(raw: str, n: int) -> Verdict | str:
    """The judge's choice among `n` candidates, or why it cannot be used:
    "judge_invalid_json", "judge_bad_fields", "judge_out_of_range", "judge_same_choice"."""
    try:
        data = _json_object(raw)
    except ValueError:
        return "judge_invalid_json"
    if not isinstance(data, dict):
        return "judge_bad_fields"
    best, worst = _index(data.get("best")), _index(data.get("worst"))
    reasons = data.get("reasons", "")
    if best is None or worst is None or not isinstance(reasons, str):
        return "judge_bad_fields"
    if not (1 <= best <= n and 1 <= worst <= n):
        return "judge_out_of_range"
    if best == worst:
        return "judge_same_choice"
    return Verdict(best=best - 1, worst=worst - 1, reasons=reasons.strip())


async def reference_for(
    longterm: LongTermStore | None, prompt: Prompt, *, memories: int
) -> Reference:
    """The person's profile and a few memories, within the scope rules of the brain: the
    profile only for a DM prompt (it is built from DMs too), memories only of the scope
    the prompt's chat may recall (the most important, then the newest)."""
    if longterm is None or prompt.person_id is None or prompt.chat is None:
        return Reference(person_name=prompt.person_name)
    pid = prompt.person_id
    profile = None
    if prompt.chat.kind == "dm":
        found = await longterm.latest_summary(kind="profile", subject=str(pid))
        profile = found.text if found and found.text.strip() else None
    picked: list[Memory] = []
    if memories > 0:
        scope = scope_of(prompt.chat, person_id=pid)
        total = await longterm.count_memories_about(pid)
        window = max(60, memories * 10)
        about = await longterm.memories_about(pid, offset=max(0, total - window), limit=window)
        in_scope = [m for m in about if m.scope == scope]
        in_scope.sort(key=lambda m: (m.importance, m.created_at), reverse=True)
        picked = in_scope[:memories]
    return Reference(
        person_name=prompt.person_name,
        profile=profile,
        memories=tuple(m.text for m in picked),
    )


async def _candidates(
    model: LanguageModel, prompt: Prompt, config: DatasetConfig
) -> list[tuple[str, float]]:
    """Distinct non-empty candidate replies with the temperature of each."""
    found: list[tuple[str, float]] = []
    seen: set[str] = set()
    temps = temperatures(config.candidates, low=config.min_temperature, high=config.max_temperature)
    for temp in temps:
        text = (
            await model.complete(prompt.turns, max_tokens=config.max_reply_tokens, temperature=temp)
        ).strip()
        key = normalized(text)
        if text and key not in seen:
            seen.add(key)
            found.append((text, temp))
    return found


async def synthesize_pair(
    prompt: Prompt,
    *,
    card: PersonaCard,
    model: LanguageModel,
    judge: LanguageModel,
    reference: Reference,
    config: DatasetConfig,
) -> Record | str:
    """One DPO pair for `prompt`, or why there is none ("generation_failed",
    "identical_candidates", "judge_failed" or a parse_verdict reason)."""
    try:
        candidates = await _candidates(model, prompt, config)
    except ModelError:
        return "generation_failed"
    if len(candidates) < 2:
        return "identical_candidates"
    texts = [c for c, _ in candidates]
    turns = judge_turns(card=card, prompt=prompt, candidates=texts, reference=reference)
    try:
        raw = await judge.complete(
            turns,
            max_tokens=config.judge_max_tokens,
            temperature=0.0,
            json_schema=judge_schema(len(texts)),
        )
    except ModelError:
        return "judge_failed"
    verdict = parse_verdict(raw, len(texts))
    if isinstance(verdict, str):
        return verdict
    chosen, rejected = candidates[verdict.best], candidates[verdict.worst]
    if normalized(chosen[0]) == normalized(rejected[0]):
        return "identical_candidates"
    return {
        "prompt": _messages(prompt.turns),
        "chosen": [_message("assistant", chosen[0])],
        "rejected": [_message("assistant", rejected[0])],
        "reasons": verdict.reasons,
        "judge": judge.name,
        "person_id": prompt.person_id,
        "source": prompt.source,
        "model": model.name,
        "candidates": len(texts),
        "chosen_temperature": chosen[1],
        "rejected_temperature": rejected[1],
        **prompt.meta,
    }


# --- the whole build -------------------------------------------------------------------


async def build_dataset(
    *,
    card: PersonaCard,
    store: MemoryStore | None,
    model: LanguageModel | None,
    judge: LanguageModel | None = None,
    longterm: LongTermStore | None = None,
    config: DatasetConfig | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """SFT examples (card, then stored conversations) and, unless `config.dpo` is off,
    DPO pairs for the card's prompts and the kept conversations' prompts, judged by
    `judge` (default: `model` judges its own candidates)."""
    cfg = config or DatasetConfig()
    report = BuildReport()
    sft = card_examples(card)
    report.sft_card = len(sft)
    if progress is not None:
        progress("card", len(sft), len(sft))
    replies: list[tuple[Prompt, str]] = []
    if store is not None and cfg.max_conversations != 0:
        replies = await conversation_replies(
            store, card=card, config=cfg, report=report, progress=progress
        )
    sft += [conversation_example(p, r) for p, r in replies]
    report.sft_conversation = len(replies)
    dpo: list[Record] = []
    if cfg.dpo:
        if model is None:
            raise ConfigError("DPO pairs need a model to write candidate replies.")
        the_judge = judge or model
        prompts = [*card_prompts(card), *(p for p, _ in replies)][: cfg.max_dpo_prompts]
        report.dpo_prompts = len(prompts)
        references: dict[tuple[int | None, str | None], Reference] = {}
        for done, prompt in enumerate(prompts, start=1):
            key = (prompt.person_id, prompt.chat.key if prompt.chat else None)
            if key not in references:
                references[key] = await reference_for(longterm, prompt, memories=cfg.judge_memories)
            pair = await synthesize_pair(
                prompt,
                card=card,
                model=model,
                judge=the_judge,
                reference=references[key],
                config=cfg,
            )
            if isinstance(pair, str):
                report.dpo_skipped[pair] += 1
            else:
                dpo.append(pair)
            if progress is not None:
                progress("dpo", done, len(prompts))
        report.dpo_pairs = len(dpo)
    return Dataset(sft=sft, dpo=dpo, report=report)


# --- JSONL files -------------------------------------------------------------------------


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write `records` one JSON object a line, atomically: into a temporary file in the
    same folder, renamed over `path` only once complete. Returns the number written."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def dataset_files(person_id: int | None = None) -> tuple[str, str]:
    """The SFT and DPO file names: sft.jsonl, or person-<id>-sft.jsonl for a person's."""
    if person_id is None:
        return SFT_FILE, DPO_FILE
    return f"person-{person_id}-{SFT_FILE}", f"person-{person_id}-{DPO_FILE}"


def write_dataset(
    out_dir: Path, dataset: Dataset, *, person_id: int | None = None
) -> dict[str, Path]:
    """sft.jsonl (and dpo.jsonl when DPO was built) in `out_dir`, each written atomically."""
    sft_name, dpo_name = dataset_files(person_id)
    written = {"sft": out_dir / sft_name}
    write_jsonl(written["sft"], dataset.sft)
    if dataset.report.dpo_prompts or dataset.dpo:
        written["dpo"] = out_dir / dpo_name
        write_jsonl(written["dpo"], dataset.dpo)
    return written


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str


class _SftRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    messages: list[_Message] = Field(min_length=2)
    source: str

    @model_validator(mode="after")
    def _shape(self) -> _SftRecord:
        roles = [m.role for m in self.messages]
        if "user" not in roles:
            raise ValueError("messages need a user turn")
        if roles[-1] != "assistant":
            raise ValueError("the last message must be the assistant's reply")
        if "system" in roles[1:]:
            raise ValueError("only the first message may be a system message")
        if not self.messages[-1].content.strip():
            raise ValueError("the assistant's reply is empty")
        return self


class _DpoRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    prompt: list[_Message] = Field(min_length=1)
    chosen: list[_Message] = Field(min_length=1, max_length=1)
    rejected: list[_Message] = Field(min_length=1, max_length=1)
    reasons: str
    judge: str
    person_id: int | None
    source: str

    @model_validator(mode="after")
    def _shape(self) -> _DpoRecord:
        if self.prompt[-1].role != "user":
            raise ValueError("the prompt must end with a user message")
        if "system" in [m.role for m in self.prompt[1:]]:
            raise ValueError("only the first prompt message may be a system message")
        for key, answer in (("chosen", self.chosen), ("rejected", self.rejected)):
            if answer[0].role != "assistant":
                raise ValueError(f"{key} must be one assistant message")
        if normalized(self.chosen[0].content) == normalized(self.rejected[0].content):
            raise ValueError("chosen and rejected are the same reply")
        return self


def _load(path: Path, model: type[BaseModel], what: str) -> list[Record]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"The {what} file {path} does not exist: run `tomo persona dataset`."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Cannot read the {what} file {path} ({exc.strerror}).") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The {what} file {path} is not UTF-8 text.") from None
    records: list[Record] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc}).") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: each line must be a JSON object.")
        try:
            model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"{where}: not a valid {what} record ({problems}).") from None
        records.append(data)
    if not records:
        raise ConfigError(f"The {what} file {path} has no records.")
    return records


def load_sft(path: Path) -> list[Record]:
    """The SFT examples of a `sft.jsonl`, each checked; ConfigError names the file and
    line of the first bad one."""
    return _load(path, _SftRecord, "SFT")


def load_dpo(path: Path) -> list[Record]:
    """The DPO pairs of a `dpo.jsonl`, each checked; ConfigError names the file and
    line of the first bad one."""
    return _load(path, _DpoRecord, "DPO")


__all__ = [
    "DPO_FILE",
    "SFT_FILE",
    "BuildReport",
    "Dataset",
    "DatasetConfig",
    "Progress",
    "Prompt",
    "Reference",
    "Verdict",
    "build_dataset",
    "card_answers",
    "card_examples",
    "card_prompts",
    "first_person",
    "is_fallback",
    "judge_schema",
    "judge_turns",
    "load_dpo",
    "load_sft",
    "parse_verdict",
    "reference_for",
    "synthesize_pair",
    "write_dataset",
    "write_jsonl",
]
