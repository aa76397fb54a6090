"""Commands (`/help`, `/memory ...`), parsed once for every platform.

Adapters map their own command syntax (Telegram's `/cmd@bot`, Discord's slash
commands, QQ's plain text) onto `parse_command`; the brain answers them with
`run_command`.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from brain.errors import TomoError
from brain.memory.commands import memory_command
from brain.memory.recall import Recall
from brain.messages import ChatRef, Inbound, Reply, Segment, Text
from brain.ports import BlobStore, Clock, LongTermStore, MemoryStore, Person
from brain.speech.service import Speech

log = logging.getLogger(__name__)

HELP_TEXT = (
    "I'm a companion: just talk to me.\n"
    "Commands:\n"
    "  /help            this text\n"
    "  /memory          what I remember about you: list, search, show, forget, export\n"
    "  /voice on|off    answer you with voice as well as text (or just ask for it)\n"
    "  /sticker on|off  my sticker replies; /sticker accessory turtle|ribbon|flower|none\n"
    "In the terminal chat, /quit leaves."
)

# Other names a command may be called by (the name a person types -> the command).
ALIASES = {
    "记忆": "memory",
    "記憶": "memory",
    "语音": "voice",
    "語音": "voice",
    "表情": "sticker",
    "贴纸": "sticker",
}

# Slashes a command may start with: ASCII, and the full-width one of CJK keyboards.
_SLASHES = ("/", "\uff0f")


@dataclass(frozen=True, kw_only=True)
class Command:
    name: str
    args: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class CommandContext:
    """What a command may use: the message that asked, who asked, and the stores."""

    inbound: Inbound
    person: Person
    scope: str
    store: MemoryStore
    longterm: LongTermStore
    recall: Recall
    blobs: BlobStore
    clock: Clock
    consolidate: Callable[[ChatRef], Awaitable[str]]
    """Consolidates a chat now; returns a one-line report."""
    rewrite_profile: Callable[[int], Awaitable[None]]
    """Regenerates a person's profile from what is remembered now."""


def parse_command(text: str, *, bot_username: str | None = None) -> Command | None:
    """`/name args...` -> Command; anything else -> None.

    `/name@bot` is accepted when `bot_username` matches (Telegram's group syntax).
    Arguments are split like a shell would, falling back to whitespace on bad quotes.
    Names are letters (any script), digits, `_` and `-`; aliases such as `/记忆` map to
    their command.
    """
    stripped = text.strip()
    if not stripped.startswith(_SLASHES) or len(stripped) < 2:
        return None
    head, _, rest = stripped[1:].partition(" ")
    name, _, target = head.partition("@")
    if target and bot_username is not None and target.lower() != bot_username.lower():
        return None
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        return None
    try:
        args = tuple(shlex.split(rest))
    except ValueError:
        args = tuple(rest.split())
    name = name.lower()
    return Command(name=ALIASES.get(name, name), args=args)


def plain_answer(command: Command) -> str | None:
    """The answer to a command that needs no memory; None for /memory."""
    if command.name in {"help", "start"}:
        return HELP_TEXT
    if command.name in {"memory", "voice", "sticker"}:
        return None
    return f"Unknown command /{command.name}. Try /help."


VOICE_USAGE = "Usage: /voice on | /voice off | /voice (shows the setting)"


async def voice_command(
    args: tuple[str, ...], *, person: Person, store: MemoryStore, speech: Speech | None
) -> str:
    """`/voice on|off`: voice replies for this person, everywhere (stored with them)."""
    if speech is None or not speech.can_speak:
        return "I have no voice here: text-to-speech is not set up (see TOMO_TTS__*)."
    choice = args[0].lower() if args else ""
    if len(args) > 1 or choice not in {"", "on", "off"}:
        return VOICE_USAGE
    if choice == "":
        state = "on" if person.voice_replies else "off"
        return (
            f"Voice replies are {state} for you. I also answer with voice when you send a "
            f"voice note or ask for one.\n{VOICE_USAGE}"
        )
    person = await store.set_voice_replies(person.id, on=choice == "on")
    if person.voice_replies:
        return "Voice replies are on: I'll answer you with a voice note as well as text."
    return "Voice replies are off: text only (unless you send a voice note or ask for one)."


async def run_command(command: Command, ctx: CommandContext) -> list[Reply]:
    """The replies to a command (plain text; /memory export adds a Document)."""
    plain = plain_answer(command)
    if plain is not None:
        return [_reply(ctx, Text(text=plain), private=False)]
    # /memory: what it shows is about the person who asked; in a group only they see it.
    private = ctx.inbound.chat.kind == "group"
    try:
        answers = await memory_command(command.args, ctx)
    except TomoError as exc:
        log.warning("memory command failed", extra={"error": str(exc)})
        answers = [(Text(text=f"Sorry, that did not work: {exc}"),)]
    return [_reply(ctx, *segments, private=private) for segments in answers]


def _reply(ctx: CommandContext, *segments: Segment, private: bool) -> Reply:
    return Reply(chat=ctx.inbound.chat, segments=segments, reply_to=ctx.inbound.id, private=private)
