"""Long-running entry points: the terminal chat and the platform adapters."""

from __future__ import annotations

import asyncio
import logging
import sys

from bots.app import build_app, hold_data_dir
from bots.console import ConsoleChat, stdin_lines
from bots.settings import Settings
from brain.clock import SystemClock
from brain.errors import ConfigError, TomoError
from brain.memory.consolidate import Consolidator

log = logging.getLogger(__name__)


async def run_console(settings: Settings, *, user_name: str) -> None:
    """The terminal chat on this data dir (one tomo per data dir)."""
    with hold_data_dir(settings.data_dir):
        app = await build_app(settings)
        loader = getattr(app.model, "aload", None)
        # Load the model while the person types their first line.
        warm = asyncio.ensure_future(loader()) if loader is not None else None
        chat = ConsoleChat(
            app.brain,
            clock=SystemClock(),
            persona_name=app.persona.name,
            user_id=user_name,
            user_name=user_name,
            out=sys.stdout,
            err=sys.stderr,
            blobs=app.brain.memory.blobs if app.brain.memory else None,
            downloads=settings.data_dir / "exports",
        )
        idle = asyncio.ensure_future(consolidate_when_idle(app.consolidator))
        try:
            if sys.stdin.isatty() and sys.stdout.isatty():
                await chat.run_interactive(history_path=settings.data_dir / "chat_history")
            else:
                await chat.run_lines(stdin_lines())
        finally:
            idle.cancel()
            if warm is not None:
                if not warm.done():
                    warm.cancel()
                else:
                    warm.exception()  # a load error already reached the person via send
            await app.aclose()


async def consolidate_when_idle(consolidator: Consolidator, *, every_s: float = 60.0) -> None:
    """Consolidate chats that have been quiet long enough, once a minute, forever."""
    while True:
        await asyncio.sleep(every_s)
        try:
            for report in await consolidator.consolidate_due():
                log.info(
                    "consolidated", extra={"chat": report.chat.key, "line": report.summary_line}
                )
        except TomoError as exc:  # the database may be down for a while: try again later
            log.warning("consolidation failed: %s", exc)


async def run_platforms(settings: Settings) -> None:
    names = ", ".join(settings.configured_platforms())
    raise ConfigError(
        f"Platform credentials are set ({names}), but this version of tomo has no platform "
        "adapters yet: unset them to use the terminal chat."
    )
