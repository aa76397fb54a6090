"""Slash commands: /memory (list, search, show, history, forget, forget-all, export,
profile, consolidate), /voice, /sticker and /link, answered ephemerally (only the
person who asked sees the answer).

Each slash command becomes the text command the brain reads (`/memory show id:12` ->
"/memory show 12"), so Discord answers exactly what Telegram and QQ answer. Discord wants
an answer to an interaction within 3 seconds: a command the brain answers in time is
answered at once; a slower one (and always /memory consolidate and /memory export) is
deferred ("tomo is thinking...") and answered with follow-ups, the export as an
ephemeral JSON file whose blob is deleted once it is delivered.

`/memory forget` previews what would go and offers a button that confirms it. The
button's custom id names what it forgets (`tomo:forget:12`, `tomo:forget:all`) and is
registered as a dynamic item, so it works after a restart too.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import Callable
from typing import Any, Literal, Protocol, runtime_checkable

import discord
from discord import app_commands

from bots.discord.send import RetryPolicy, with_retries
from bots.discord.translate import FORGET_PREFIX, command_text, forget_target, person_of, pieces
from brain.errors import TomoError
from brain.limits import LIMIT_NOTES, PERSON_TOO_FAST
from brain.messages import ChatRef, Document, Inbound, Reply, Text
from brain.ports import BlobStore

log = logging.getLogger(__name__)

Interaction = discord.Interaction[discord.Client]

# Memory ids are 32-bit in the database (the brain says "no such memory" past that).
MemoryId = app_commands.Range[int, 1, 2**31 - 1]


class Thinker(Protocol):
    """What the slash commands need of the brain (brain.mind.Brain is one)."""

    async def handle(self, inbound: Inbound) -> list[Reply]: ...


@runtime_checkable
class ConfirmsForget(Protocol):
    """A client whose forget buttons are answered (the adapter's client is one)."""

    async def confirm_forget(self, interaction: Interaction, target: str) -> None: ...


class ForgetButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
    template=re.escape(FORGET_PREFIX) + r"(?P<target>all|[0-9]+)",
):
    """The button under a `/memory forget` preview; pressing it confirms."""

    def __init__(self, target: str) -> None:
        label = "Forget everything about me" if target == "all" else f"Forget #{target}"
        super().__init__(
            discord.ui.Button(
                label=label,
                style=discord.ButtonStyle.danger,
                custom_id=f"{FORGET_PREFIX}{target}",
            )
        )
        self.target = target

    @classmethod
    async def from_custom_id(
        cls,
        interaction: Interaction,
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ForgetButton:
        return cls(match["target"])

    async def callback(self, interaction: Interaction) -> None:
        client = interaction.client
        if isinstance(client, ConfirmsForget):
            await client.confirm_forget(interaction, self.target)


def chat_of_interaction(interaction: Interaction) -> ChatRef:
    kind: Literal["dm", "group"] = "dm" if interaction.guild_id is None else "group"
    return ChatRef(platform="discord", chat_id=str(interaction.channel_id), kind=kind)


class SlashCommands:
    """Runs slash commands and forget buttons through the brain; answers ephemerally."""

    def __init__(
        self,
        *,
        brain: Thinker,
        blobs: BlobStore,
        retry: RetryPolicy | None = None,
        answer_within_s: float = 2.0,
        track: Callable[[], contextlib.AbstractContextManager[None]] | None = None,
    ) -> None:
        self.brain = brain
        self.blobs = blobs
        self.retry = retry or RetryPolicy()
        self.answer_within_s = answer_within_s
        # Marks a command under way (the adapter lets it finish before closing).
        self.track = track or contextlib.nullcontext

    # the commands -------------------------------------------------------------------

    def tree(self, client: discord.Client) -> app_commands.CommandTree[discord.Client]:
        """The command tree of `client`, with every tomo command on it."""
        tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
        tree.add_command(self._memory_group())
        run = self.run

        @tree.command(name="voice", description="Voice replies: on, off, or show the setting")
        @app_commands.describe(state="on: answer me with voice as well as text; off: text only")
        async def voice(
            interaction: Interaction, state: Literal["on", "off"] | None = None
        ) -> None:
            await run(interaction, command_text("voice", state))

        @tree.command(name="sticker", description="Sticker replies of my avatar")
        @app_commands.describe(setting="on, off, or accessory turtle|ribbon|flower|none")
        async def sticker(interaction: Interaction, setting: str | None = None) -> None:
            await run(interaction, " ".join(filter(None, ["/sticker", (setting or "").strip()])))

        @tree.command(name="link", description="Link your accounts on other platforms to this one")
        @app_commands.describe(code="The code another platform gave you")
        async def link(interaction: Interaction, code: str | None = None) -> None:
            await run(interaction, command_text("link", code))

        return tree

    def _memory_group(self) -> app_commands.Group:
        memory = app_commands.Group(
            name="memory", description="What I remember about you (only you see the answers)"
        )
        run = self.run

        @memory.command(name="list", description="Everything I remember about you")
        @app_commands.describe(page="Which page (10 memories a page)")
        async def list_(
            interaction: Interaction, page: app_commands.Range[int, 1, 100000] | None = None
        ) -> None:
            await run(interaction, command_text("memory", "list", page))

        @memory.command(name="search", description="Memories about you that match some words")
        @app_commands.describe(query="The words to look for")
        async def search(interaction: Interaction, query: str) -> None:
            await run(interaction, command_text("memory", "search", *query.split()))

        @memory.command(name="show", description="One memory and the messages it came from")
        @app_commands.describe(id="The memory's number (from /memory list)")
        async def show(interaction: Interaction, id: MemoryId) -> None:
            await run(interaction, command_text("memory", "show", id))

        @memory.command(name="history", description="How a memory changed over time")
        @app_commands.describe(id="The memory's number (from /memory list)")
        async def history(interaction: Interaction, id: MemoryId) -> None:
            await run(interaction, command_text("memory", "history", id))

        @memory.command(name="forget", description="Forget one memory (asks you to confirm)")
        @app_commands.describe(id="The memory's number (from /memory list)")
        async def forget(interaction: Interaction, id: MemoryId) -> None:
            await run(interaction, command_text("memory", "forget", id))

        @memory.command(
            name="forget-all", description="Forget everything about you (asks you to confirm)"
        )
        async def forget_all(interaction: Interaction) -> None:
            await run(interaction, "/memory forget all")

        @memory.command(name="export", description="Everything I keep about you, as a JSON file")
        async def export(interaction: Interaction) -> None:
            await run(interaction, "/memory export", defer=True)

        @memory.command(name="profile", description="What I have written about you")
        async def profile(interaction: Interaction) -> None:
            await run(interaction, "/memory profile")

        @memory.command(name="consolidate", description="Sort this chat into memories now")
        async def consolidate(interaction: Interaction) -> None:
            await run(interaction, "/memory consolidate", defer=True)

        return memory

    # running them -------------------------------------------------------------------

    async def run(self, interaction: Interaction, text: str, *, defer: bool = False) -> None:
        """Answer `interaction` with the brain's answer to the text command `text`."""
        with self.track():
            await self._run(interaction, text, defer=defer)

    async def _run(self, interaction: Interaction, text: str, *, defer: bool) -> None:
        inbound = Inbound(
            id=str(interaction.id),
            chat=chat_of_interaction(interaction),
            author=person_of(interaction.user),
            segments=(Text(text=text),),
            to_bot=True,
            sent_at=interaction.created_at,
        )
        if defer:
            await interaction.response.defer(ephemeral=True, thinking=True)
        replies = await self._in_time(interaction, inbound, update=False)
        if not replies:  # a rate limit's silence; an interaction still needs an answer
            replies = [Reply(chat=inbound.chat, segments=(Text(text=PERSON_TOO_FAST),))]
        await self._answer(interaction, replies)

    async def confirm_forget(self, interaction: Interaction, target: str) -> None:
        """The forget button was pressed: forget, and put the outcome in place of the
        preview (its button gone)."""
        with self.track():
            await self._confirm_forget(interaction, target)

    async def _confirm_forget(self, interaction: Interaction, target: str) -> None:
        inbound = Inbound(
            id=str(interaction.id),
            chat=chat_of_interaction(interaction),
            author=person_of(interaction.user),
            segments=(Text(text=f"/memory forget {target} confirm"),),
            to_bot=True,
            sent_at=interaction.created_at,
        )
        replies = await self._in_time(interaction, inbound, update=True)
        if all(r.text in LIMIT_NOTES for r in replies):
            # refused by a rate limit (its note, or silence): nothing was forgotten, so
            # the preview and its button stay; the note goes beside it
            note = replies[0].text if replies else PERSON_TOO_FAST
            if interaction.response.is_done():
                await self._followup(interaction, note)
            else:
                await interaction.response.send_message(note, ephemeral=True)
            return
        text = "\n\n".join(r.text for r in replies if r.text.strip()) or "Done."
        first, *rest = pieces(text) or ["Done."]
        if interaction.response.is_done():
            await interaction.edit_original_response(content=first, view=None)
        else:
            await interaction.response.edit_message(content=first, view=None)
        for piece in rest:
            await self._followup(interaction, piece)

    async def _in_time(
        self, interaction: Interaction, inbound: Inbound, *, update: bool
    ) -> list[Reply]:
        """The brain's replies; the interaction is deferred if they take too long."""
        task = asyncio.create_task(self._think(inbound))
        try:
            if not interaction.response.is_done():
                done, _ = await asyncio.wait({task}, timeout=self.answer_within_s)
                if not done:
                    if update:
                        await interaction.response.defer()
                    else:
                        await interaction.response.defer(ephemeral=True, thinking=True)
            return await task
        finally:
            if not task.done():
                task.cancel()

    async def _think(self, inbound: Inbound) -> list[Reply]:
        try:
            return await self.brain.handle(inbound)
        except TomoError as exc:
            log.warning("the brain could not answer a Discord command: %s", exc)
            text = f"Sorry, something went wrong on my side: {exc}"
            return [Reply(chat=inbound.chat, segments=(Text(text=text),), reply_to=inbound.id)]

    async def _answer(self, interaction: Interaction, replies: list[Reply]) -> None:
        messages: list[tuple[str, list[Document]]] = []
        for reply in replies:
            documents = [s for s in reply.segments if isinstance(s, Document)]
            parts = pieces(reply.text) or ([""] if documents else [])
            for index, part in enumerate(parts):
                messages.append((part, documents if index == len(parts) - 1 else []))
        if not messages:
            messages = [("Done.", [])]
        try:
            for text, documents in messages:
                files = [(d.filename, await self.blobs.get(d.blob_key)) for d in documents]
                target = forget_target(text)
                view = None
                if target is not None:
                    view = discord.ui.View(timeout=None)
                    view.add_item(ForgetButton(target))
                if not interaction.response.is_done():
                    kwargs: dict[str, Any] = {"view": view} if view is not None else {}
                    await interaction.response.send_message(
                        text,
                        files=[discord.File(io.BytesIO(b), filename=n) for n, b in files],
                        ephemeral=True,
                        **kwargs,
                    )
                else:
                    await self._followup(interaction, text, files=files, view=view)
        finally:
            for reply in replies:
                for segment in reply.segments:
                    if isinstance(segment, Document):
                        await self.blobs.delete(segment.blob_key)

    async def _followup(
        self,
        interaction: Interaction,
        text: str,
        *,
        files: list[tuple[str, bytes]] | None = None,
        view: discord.ui.View | None = None,
    ) -> None:
        async def send() -> None:
            kwargs: dict[str, Any] = {"view": view} if view is not None else {}
            await interaction.followup.send(
                text,
                files=[discord.File(io.BytesIO(b), filename=n) for n, b in files or []],
                ephemeral=True,
                **kwargs,
            )

        await with_retries(send, policy=self.retry, what="answer a slash command")
