from __future__ import annotations

from datetime import timedelta

from brain.messages import ChatRef
from brain.persona.card import PersonaCard
from brain.ports import StoredMessage
from brain.prompt import TRUNCATION_MARK, TimeFacts, build_turns, truncate
from tests.conftest import DM, GROUP, T0

PERSONA = PersonaCard(name="Tomo", self_description="A friend.")
FACTS = TimeFacts(now=T0, conversation_started=T0 - timedelta(minutes=5), first_met=T0)


def msg(i: int, text: str, *, role: str = "user", chat: ChatRef = DM) -> StoredMessage:
    return StoredMessage(
        id=i,
        chat=chat,
        author_id=1 if role == "user" else None,
        author_name="Alice" if role == "user" else "",
        role="user" if role == "user" else "assistant",
        platform_message_id=str(i),
        text=text,
        sent_at=T0,
    )


def build(window: list[StoredMessage], *, chat: ChatRef = DM, **kw: int) -> list:  # type: ignore[type-arg]
    return build_turns(
        persona=PERSONA,
        chat=chat,
        window=window,
        facts=FACTS,
        person_name="Alice",
        max_message_chars=kw.get("max_message_chars", 2000),
        max_prompt_chars=kw.get("max_prompt_chars", 6000),
    )


def test_truncate_marks_the_cut() -> None:
    assert truncate("short", limit=10) == "short"
    cut = truncate("x" * 100_000, limit=500)
    assert len(cut) == 500
    assert cut.endswith(TRUNCATION_MARK)


def test_system_prompt_has_persona_and_time_facts() -> None:
    system = build([msg(1, "hi")])[0]
    assert system.role == "system"
    assert "You are Tomo" in system.content
    assert "Now: Sunday 01 March 2026, 12:00 UTC" in system.content
    assert "This conversation started: Sunday 01 March 2026, 11:55 UTC" in system.content
    assert "You first met Alice on 01 March 2026" in system.content


def test_huge_message_is_cut_for_the_model() -> None:
    turns = build([msg(1, "y" * 100_000)], max_message_chars=1000)
    assert len(turns[-1].content) == 1000


def test_oldest_messages_dropped_first_and_newest_kept() -> None:
    window = [
        msg(i, f"m{i} " + "z" * 300, role="user" if i % 2 else "assistant") for i in range(1, 30)
    ]
    turns = build(window, max_prompt_chars=2000)
    contents = [t.content for t in turns[1:]]
    assert contents[-1].startswith("m29")
    assert sum(len(c) for c in contents) <= 2000
    assert not any(c.startswith("m1 ") for c in contents)
    assert turns[1].role == "user"  # never starts with the assistant


def test_group_turns_name_the_speaker() -> None:
    turns = build([msg(1, "hello", chat=GROUP)], chat=GROUP)
    assert turns[-1].content == "Alice: hello"
    assert "group chat" in turns[0].content
