"""`/memory forget`: forgetting one memory, or everything about a person.

Both ask for a confirmation first. Then the memory goes with its history and provenance
links, the messages it came from (with their recall keys and the bot's replies), the
cached recall indexes of the scopes involved, the daily summaries and self-concepts of the
chats involved, the voice, images and files of those messages, and the old profile
versions of the people it was about, whose profiles are then written again without it.
Forgetting everything about a person also destroys their encryption key (the store's
crypto-shredding), so nothing of theirs can be read back from an older copy either.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from brain.errors import TomoError
from brain.memory.showing import (
    USAGE,
    Answer,
    all_about,
    clip,
    count,
    message_scope,
    no_memory,
    number,
    own_memory,
    provenance,
    say,
)
from brain.memory.types import Memory
from brain.messages import Document, Image, Voice
from brain.ports import StoredMessage

if TYPE_CHECKING:
    from brain.commands import CommandContext

log = logging.getLogger(__name__)


async def forget(ctx: CommandContext, args: tuple[str, ...]) -> Answer:
    if not args or len(args) > 2 or (len(args) == 2 and args[1].lower() != "confirm"):
        return say(USAGE)
    confirmed = len(args) == 2
    if args[0].lower() == "all":
        return await (_forget_all(ctx) if confirmed else _forget_all_preview(ctx))
    memory_id = number(args[0])
    if memory_id is None:
        return say(USAGE)
    memory = await own_memory(ctx, memory_id)
    if memory is None:
        return say(no_memory(memory_id))
    sources = await ctx.longterm.messages(memory.source_message_ids)
    if not confirmed:
        lines = [f"I would forget #{memory.id} {memory.text}"]
        lines += provenance(sources, heading="and the messages it came from (with my replies):")
        lines.append(f"To forget it for good, send: /memory forget {memory.id} confirm")
        return say("\n".join(lines))
    replies = await _replies_to(ctx, sources)
    report = await ctx.longterm.forget_memory(memory.id)
    if not report.memory_ids:
        return say(no_memory(memory_id))
    notes = await _clean_up(ctx, memories=[memory], messages=[*sources, *replies])
    said = (
        f" and {count(len(report.message_ids), 'message')} it came from"
        if report.message_ids
        else ""
    )
    return say(f"Forgotten: #{memory.id} {clip(memory.text)}{said}.{notes}")


async def _forget_all_preview(ctx: CommandContext) -> Answer:
    memories = await ctx.longterm.count_memories_about(ctx.person.id)
    said = len(await ctx.longterm.messages_by(ctx.person.id))
    if not memories and not said:
        return say("I keep nothing about you.")
    return say(
        f"I would forget everything about you: {count(memories, 'memory')}, "
        f"{count(said, 'message')} you sent me (and my replies), and your profile. "
        "This cannot be undone.\n"
        "To do it, send: /memory forget all confirm"
    )


async def _forget_all(ctx: CommandContext) -> Answer:
    person_id = ctx.person.id
    about = await all_about(ctx)
    said = await ctx.longterm.messages_by(person_id)
    sources = await ctx.longterm.messages(sorted({i for m in about for i in m.source_message_ids}))
    said_ids = {m.id for m in said}
    # memories about others that were drawn from what this person said go too
    derived = [
        m
        for scope in sorted({message_scope(m, person_id) for m in said})
        for m in await ctx.longterm.memories_in_scope(scope)
        if said_ids.intersection(m.source_message_ids)
    ]
    messages = list({m.id: m for m in [*said, *sources]}.values())
    replies = await _replies_to(ctx, messages)
    report = await ctx.longterm.forget_person(person_id)
    notes = await _clean_up(
        ctx, memories=[*about, *derived], messages=[*messages, *replies], skip_profile=person_id
    )
    return say(
        f"Done: I forgot everything about you: {count(len(report.memory_ids), 'memory')}, "
        f"{count(len(report.message_ids), 'message')} and your profile.{notes}"
    )


async def _clean_up(
    ctx: CommandContext,
    *,
    memories: Sequence[Memory],
    messages: Sequence[StoredMessage],
    skip_profile: int | None = None,
) -> str:
    """After a forget: drop cached indexes, summaries, media and profiles that held it.

    Returns a note for the person when part of it has to wait.
    """
    person_id = ctx.person.id
    scopes = {m.scope for m in memories} | {message_scope(m, person_id) for m in messages}
    for scope in sorted(scopes):
        ctx.recall.invalidate(scope)
    chats = {m.chat.key for m in messages}
    chats |= {s.removeprefix("group:") for s in scopes if s.startswith("group:")}
    if f"dm:{person_id}" in scopes and ctx.inbound.chat.kind == "dm":
        chats.add(ctx.inbound.chat.key)
    for chat in sorted(chats):
        await ctx.longterm.delete_summaries(kind="daily", subject=chat)
        await ctx.longterm.delete_summaries(kind="self", subject=chat)
    for key in sorted(_media_keys(messages)):
        try:
            await ctx.blobs.delete(key)
        except TomoError as exc:
            log.warning("could not delete a forgotten blob", extra={"error": str(exc)})
    # Old profile versions may quote what was forgotten: drop them, then write anew.
    people = sorted({p for m in memories for p in m.about} | {person_id})
    late = False
    for pid in people:
        await ctx.longterm.delete_summaries(kind="profile", subject=str(pid))
        if pid == skip_profile:
            continue
        try:
            await ctx.rewrite_profile(pid)
        except TomoError as exc:
            log.warning("profile rewrite failed after a forget", extra={"error": str(exc)})
            late = pid == person_id or late
    await ctx.longterm.scrub_deleted()
    return " Your profile will be written again later." if late else ""


async def _replies_to(
    ctx: CommandContext, messages: Iterable[StoredMessage]
) -> list[StoredMessage]:
    found = [await ctx.store.answer_to(m.id) for m in messages if m.role == "user"]
    return [r for r in found if r is not None]


def _media_keys(messages: Iterable[StoredMessage]) -> set[str]:
    """Blob keys of a person's voice, images and files (stickers are shared renders)."""
    return {
        s.blob_key for m in messages for s in m.segments if isinstance(s, Voice | Image | Document)
    }
