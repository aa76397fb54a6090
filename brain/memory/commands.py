"""`/memory`: what tomo keeps about the person who asks, shown to them alone.

The subcommands that read are here; forgetting is in brain/memory/forget.py, the export
in brain/memory/export.py, and how things are shown in brain/memory/showing.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from brain.memory.export import export
from brain.memory.forget import forget
from brain.memory.lexical import tokenize
from brain.memory.showing import (
    NOTHING_YET,
    USAGE,
    Answer,
    all_about,
    clip,
    count,
    no_memory,
    number,
    own_memory,
    provenance,
    say,
    scope_text,
    when,
)

if TYPE_CHECKING:
    from brain.commands import CommandContext

PAGE_SIZE = 10
SEARCH_SHOWN = 10
SEARCH_CANDIDATES = 200


async def memory_command(args: Sequence[str], ctx: CommandContext) -> list[Answer]:
    """The answers to `/memory <args>` (each answer is one reply's segments)."""
    sub = args[0].lower() if args else "help"
    rest = tuple(args[1:])
    if sub == "list":
        return [await _list(ctx, rest)]
    if sub == "search":
        return [await _search(ctx, rest)]
    if sub == "show":
        return [await _show(ctx, rest)]
    if sub == "history":
        return [await _history(ctx, rest)]
    if sub == "forget":
        return [await forget(ctx, rest)]
    if sub == "profile" and not rest:
        return [await _profile(ctx)]
    if sub == "export" and not rest:
        return [await export(ctx)]
    if sub == "consolidate" and not rest:
        report = await ctx.consolidate(ctx.inbound.chat)
        return [say(report.strip() or "Done: this chat is sorted into memories.")]
    return [say(USAGE)]


async def _list(ctx: CommandContext, args: tuple[str, ...]) -> Answer:
    if len(args) > 1:
        return say(USAGE)
    page = number(args[0]) if args else 1
    if page is None:
        return say(USAGE)
    total = await ctx.longterm.count_memories_about(ctx.person.id)
    if total == 0:
        return say(NOTHING_YET)
    pages = math.ceil(total / PAGE_SIZE)
    if page > pages:
        return say(f"There is no page {page}: your memories fill {count(pages, 'page')}.")
    found = await ctx.longterm.memories_about(
        ctx.person.id, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE
    )
    lines = [f"What I remember about you ({count(total, 'memory')}), page {page} of {pages}:"]
    lines += [f"#{m.id} {clip(m.text)}" for m in found]
    if page < pages:
        lines.append(f"Next: /memory list {page + 1}")
    lines.append("More about one: /memory show <id>")
    return say("\n".join(lines))


async def _search(ctx: CommandContext, args: tuple[str, ...]) -> Answer:
    query = " ".join(args).strip()
    if not query:
        return say(USAGE)
    mine = {m.id: m for m in await all_about(ctx)}
    if not mine:
        return say(NOTHING_YET)
    hits = await ctx.recall.search(
        query, scopes=sorted({m.scope for m in mine.values()}), k=SEARCH_CANDIDATES
    )
    # Recall ranks every entry of the scopes; keep this person's memories that share a
    # word with the query (a ranking alone would "match" anything).
    words = set(tokenize(query))
    ranked = [
        mine[h.entry.id]
        for h in hits
        if h.entry.kind == "memory"
        and h.entry.id in mine
        and _matches(mine[h.entry.id].text, query=query, words=words)
    ]
    if not ranked:
        ranked = [m for m in mine.values() if query.casefold() in m.text.casefold()]
    ranked = list({m.id: m for m in ranked}.values())
    if not ranked:
        return say(f'Nothing I remember about you matches "{clip(query, 80)}".')
    lines = [f'What I remember about you that matches "{clip(query, 80)}":']
    lines += [f"#{m.id} {clip(m.text)}" for m in ranked[:SEARCH_SHOWN]]
    if len(ranked) > SEARCH_SHOWN:
        lines.append(f"...and {len(ranked) - SEARCH_SHOWN} more; try more words.")
    return say("\n".join(lines))


async def _show(ctx: CommandContext, args: tuple[str, ...]) -> Answer:
    if len(args) != 1 or (memory_id := number(args[0])) is None:
        return say(USAGE)
    memory = await own_memory(ctx, memory_id)
    if memory is None:
        return say(no_memory(memory_id))
    sources = await ctx.longterm.messages(memory.source_message_ids)
    changed = memory.updated_at != memory.created_at
    remembered = f"Remembered {when(memory.created_at)}"
    if changed:
        remembered += f", last changed {when(memory.updated_at)}"
    recalled = f"Recalled {count(memory.recall_count, 'time')}"
    if memory.last_recalled_at is not None:
        recalled += f", last {when(memory.last_recalled_at)}"
    lines = [
        f"#{memory.id} {memory.text}",
        f"{remembered}.",
        f"{recalled}.",
        f"Kept for {scope_text(memory.scope, ctx.person.id)}.",
        *provenance(sources),
    ]
    if changed:
        lines.append(f"Earlier versions: /memory history {memory.id}")
    return say("\n".join(lines))


async def _history(ctx: CommandContext, args: tuple[str, ...]) -> Answer:
    if len(args) != 1 or (memory_id := number(args[0])) is None:
        return say(USAGE)
    memory = await own_memory(ctx, memory_id)
    if memory is None:
        return say(no_memory(memory_id))
    versions = await ctx.longterm.memory_history(memory.id)
    if not versions:
        return say(
            f"#{memory.id} {memory.text}\n"
            f"It has not changed since I first remembered it, {when(memory.created_at)}."
        )
    lines = [f"#{memory.id} now: {memory.text} (since {when(memory.updated_at)})", "Before:"]
    for version in reversed(versions):
        reason = f" ({version.reason})" if version.reason else ""
        lines.append(f"  until {when(version.changed_at)}: {clip(version.text)}{reason}")
    lines.append(f"First remembered {when(memory.created_at)}.")
    return say("\n".join(lines))


async def _profile(ctx: CommandContext) -> Answer:
    profile = await ctx.longterm.latest_summary(kind="profile", subject=str(ctx.person.id))
    if profile is None or not profile.text.strip():
        return say(
            "I haven't written a profile of you yet. It comes once we've talked a while "
            "(or right after /memory consolidate)."
        )
    return say(
        f"What I have written about you (version {profile.version}, "
        f"{when(profile.created_at)}):\n{profile.text}"
    )


def _matches(text: str, *, query: str, words: set[str]) -> bool:
    return query.casefold() in text.casefold() or bool(words.intersection(tokenize(text)))
