"""The memory model's value types (L1 memories, their history, index entries, L2)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from brain.messages import ChatRef


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def scope_of(chat: ChatRef, *, person_id: int) -> str:
    """Where something said in `chat` may be recalled.

    A group's memories stay in that group; a DM's memories belong to the DMs with that
    one person (on any platform, once accounts are linked).
    """
    if chat.kind == "group":
        return f"group:{chat.platform}:{chat.chat_id}"
    return f"dm:{person_id}"


class NewMemory(_Frozen):
    scope: str
    text: str
    about: tuple[int, ...]
    source_message_ids: tuple[int, ...]
    importance: float = 0.5
    created_at: datetime
    embedding: bytes | None = None


class Memory(_Frozen):
    """An L1 memory as stored."""

    id: int
    scope: str
    text: str
    about: tuple[int, ...]
    source_message_ids: tuple[int, ...]
    importance: float
    created_at: datetime
    updated_at: datetime
    last_recalled_at: datetime | None
    recall_count: int


class MemoryVersion(_Frozen):
    """A memory's earlier text, and why it changed."""

    memory_id: int
    text: str
    importance: float
    reason: str
    changed_at: datetime


class IndexEntry(_Frozen):
    """One recallable item of a scope: an L0 message (by its context key) or an L1 memory.

    `key` is what lexical and dense search look at; `text` is what the model is shown;
    `source_message_ids` is the provenance an item cites.
    """

    kind: Literal["message", "memory"]
    id: int
    scope: str
    key: str
    text: str
    source_message_ids: tuple[int, ...]
    author_id: int | None
    author_name: str = ""
    at: datetime
    embedding: bytes | None


class Summary(_Frozen):
    """An L2 text: a chat's daily summary, a person's profile or the self-concept."""

    kind: Literal["daily", "profile", "self"]
    subject: str
    day: str
    version: int
    text: str
    created_at: datetime
