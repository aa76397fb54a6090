"""Commands (`/help`, `/memory ...`), parsed once for every platform.

Adapters map their own command syntax (Telegram's `/cmd@bot`, Discord's slash
commands, QQ's plain text) onto `parse_command`; the brain answers them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

HELP_TEXT = (
    "I'm a companion: just talk to me.\n"
    "Commands:\n"
    "  /help            this text\n"
    "In the terminal chat, /quit leaves."
)


@dataclass(frozen=True, kw_only=True)
class Command:
    name: str
    args: tuple[str, ...]


def parse_command(text: str, *, bot_username: str | None = None) -> Command | None:
    """`/name args...` -> Command; anything else -> None.

    `/name@bot` is accepted when `bot_username` matches (Telegram's group syntax).
    Arguments are split like a shell would, falling back to whitespace on bad quotes.
    """
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2:
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
    return Command(name=name.lower(), args=args)


def run_command(command: Command) -> str:
    """The text answer to a command."""
    if command.name in {"help", "start"}:
        return HELP_TEXT
    return f"Unknown command /{command.name}. Try /help."
