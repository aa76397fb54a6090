"""`/memory export`: everything tomo keeps about the person who asks, as one JSON file."""

from __future__ import annotations

import json
from datetime import UTC
from typing import TYPE_CHECKING, Any

from brain.memory.showing import Answer, all_about, count, iso
from brain.messages import Document, Text

if TYPE_CHECKING:
    from brain.commands import CommandContext


async def export(ctx: CommandContext) -> Answer:
    person = ctx.person
    now = ctx.clock.now()
    messages = await ctx.longterm.messages_by(person.id)
    memories = await all_about(ctx)
    histories = {m.id: await ctx.longterm.memory_history(m.id) for m in memories}
    profiles = await ctx.longterm.summary_versions(kind="profile", subject=str(person.id))
    document: dict[str, Any] = {
        "format": "tomo-export/1",
        "exported_at": iso(now),
        "person": {
            "id": person.id,
            "display_name": person.display_name,
            "first_seen_at": iso(person.first_seen_at),
        },
        "messages": [
            {
                "id": m.id,
                "chat": m.chat.key,
                "chat_kind": m.chat.kind,
                "sent_at": iso(m.sent_at),
                "text": m.text,
                "segments": [s.model_dump(mode="json") for s in m.segments],
            }
            for m in messages
        ],
        "memories": [
            {
                "id": m.id,
                "text": m.text,
                "scope": m.scope,
                "about": list(m.about),
                "source_message_ids": list(m.source_message_ids),
                "importance": m.importance,
                "created_at": iso(m.created_at),
                "updated_at": iso(m.updated_at),
                "last_recalled_at": iso(m.last_recalled_at) if m.last_recalled_at else None,
                "recall_count": m.recall_count,
                "history": [
                    {
                        "text": v.text,
                        "importance": v.importance,
                        "reason": v.reason,
                        "changed_at": iso(v.changed_at),
                    }
                    for v in histories[m.id]
                ],
            }
            for m in memories
        ],
        "profile_versions": [
            {"version": p.version, "text": p.text, "created_at": iso(p.created_at)}
            for p in profiles
        ],
    }
    data = json.dumps(document, ensure_ascii=False, indent=2).encode()
    key = await ctx.blobs.put(data, mime="application/json")
    return (
        Text(
            text=f"Everything I keep about you: {count(len(messages), 'message')}, "
            f"{count(len(memories), 'memory')}, {count(len(profiles), 'profile version')}."
        ),
        Document(
            blob_key=key,
            mime="application/json",
            filename=f"tomo-export-{person.id}-{now.astimezone(UTC):%Y-%m-%d}.json",
            size_bytes=len(data),
        ),
    )
