from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError

from brain.messages import Document, Image, Inbound, Mention, Reply, Sticker, Text, Voice
from tests.conftest import ALICE, DM, GROUP, T0, inbound


def full_inbound() -> Inbound:
    return Inbound(
        id="m1",
        chat=GROUP,
        author=ALICE,
        segments=(
            Mention(user_id="999", display_name="tomo"),
            Text(text="hi こんにちは 🐢"),
            Voice(blob_key="b/voice", duration_s=2.5, transcript="hello there"),
            Image(blob_key="b/img", size_bytes=1234, width=10, height=20),
            Sticker(blob_key="b/st", size_bytes=99, emotion="happy"),
            Document(blob_key="b/doc", mime="application/pdf", filename="ノート.pdf", size_bytes=7),
        ),
        to_bot=True,
        reply_to="m0",
        sent_at=T0,
    )


def test_inbound_round_trips_through_json() -> None:
    original = full_inbound()
    again = Inbound.model_validate_json(original.model_dump_json())
    assert again == original
    assert [type(s) for s in again.segments] == [Mention, Text, Voice, Image, Sticker, Document]


def test_reply_round_trips_through_json() -> None:
    reply = Reply(
        chat=DM,
        segments=(
            Text(text="hey"),
            Sticker(blob_key="k", size_bytes=1, emotion="love"),
            Document(
                blob_key="e" * 64,
                mime="application/json",
                filename="tomo-export-1-2026-03-01.json",
                size_bytes=42,
            ),
        ),
        reply_to="m1",
        private=True,
    )
    assert Reply.model_validate_json(reply.model_dump_json()) == reply


def test_messages_are_frozen() -> None:
    msg = inbound("hi")
    with pytest.raises(ValidationError):
        msg.to_bot = False  # type: ignore[misc]


def test_text_joins_text_and_transcripts() -> None:
    assert full_inbound().text == "hi こんにちは 🐢 hello there"


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone-aware"):
        inbound("hi", sent_at=datetime(2026, 1, 1))


def test_invalid_utf8_text_is_refused_with_a_clear_reason() -> None:
    broken = b"caf\xff".decode("utf-8", errors="surrogateescape")
    with pytest.raises(ValidationError, match="not valid UTF-8"):
        Text(text=broken)


def test_blank_detection() -> None:
    assert inbound("   \n\t").is_blank
    assert not inbound(" x ").is_blank
    voice_only = Inbound(
        id="v",
        chat=DM,
        author=ALICE,
        segments=(Voice(blob_key="k", duration_s=1.0),),
        to_bot=True,
        sent_at=T0,
    )
    assert not voice_only.is_blank


def test_unknown_segment_kind_is_refused() -> None:
    data = full_inbound().model_dump(mode="json")
    data["segments"].append({"kind": "hologram"})
    with pytest.raises(ValidationError):
        Inbound.model_validate(data)


def test_document_needs_a_filename_and_counts_as_content() -> None:
    with pytest.raises(ValidationError):
        Document(blob_key="k", filename="", size_bytes=1)
    doc_only = Inbound(
        id="d",
        chat=DM,
        author=ALICE,
        segments=(Document(blob_key="k", filename="a.txt", size_bytes=1),),
        to_bot=True,
        sent_at=T0,
    )
    assert not doc_only.is_blank
    assert doc_only.text == ""
