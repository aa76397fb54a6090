"""Long-running entry points: the terminal chat and the platform adapters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

from bots.app import build_app, build_discord, build_qq, build_telegram, hold_data_dir
from bots.console import ConsoleChat, stdin_lines
from bots.health import Platform, platforms_ready, serving
from bots.settings import Settings
from brain.clock import SystemClock
from brain.errors import ConfigError, TomoError
from brain.memory.consolidate import Consolidator

log = logging.getLogger(__name__)


async def run_console(settings: Settings, *, user_name: str) -> None:
    """The terminal chat on this data dir (one tomo per data dir)."""
    with hold_data_dir(settings.data_dir):
        app = await build_app(settings)
        # Load the model and the embedder while the person types their first line.
        warm = asyncio.ensure_future(app.warm())
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


def check_platforms_built(settings: Settings) -> None:
    """A clear error for credentials of a platform this version has no adapter for."""
    missing = [p for p in settings.configured_platforms() if p not in PLATFORMS_BUILT]
    if missing:
        raise ConfigError(
            f"Platform credentials are set for {', '.join(missing)}, but this version of tomo "
            "has no adapter for it yet: unset them."
        )


async def run_platforms(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run every configured platform until `stop` is set, Ctrl-C or SIGTERM; then stop
    receiving, finish cleanly (Telegram: confirm the handled updates) and close."""
    check_platforms_built(settings)
    stop = stop or asyncio.Event()
    with hold_data_dir(settings.data_dir), stop_on_signals(stop):
        app = await build_app(settings)
        for line in app.model_lines():
            log.info("answering with %s", line)
        warm = asyncio.ensure_future(app.warm())
        running: dict[str, tuple[asyncio.Task[None], Platform]] = {}
        idle = asyncio.ensure_future(consolidate_when_idle(app.consolidator))
        stopping = asyncio.ensure_future(stop.wait())
        checks = {"database": app.store.db.ping, "platforms": platforms_ready(running)}
        http = settings.http
        try:
            async with serving(
                http.listen, http.port, checks, draining=stop.is_set, metrics=app.telemetry
            ):
                if settings.telegram.token is not None:
                    telegram = build_telegram(app)
                    running["telegram"] = (
                        asyncio.create_task(telegram.run(), name="telegram"),
                        telegram,
                    )
                if settings.qq.onebot_url:
                    qq = build_qq(app)
                    running["qq"] = (asyncio.create_task(qq.run(), name="qq"), qq)
                if settings.discord.token is not None:
                    discord = build_discord(app)
                    running["discord"] = (
                        asyncio.create_task(discord.run(), name="discord"),
                        discord,
                    )
                adapters = [task for task, _ in running.values()]
                await asyncio.wait([stopping, *adapters], return_when=asyncio.FIRST_COMPLETED)
                for task in adapters:
                    if task.done():
                        task.result()  # an adapter that gave up: its error (e.g. a bad token)
        finally:
            background: list[asyncio.Future[Any]] = [
                *(task for task, _ in running.values()),
                idle,
                stopping,
            ]
            for future in background:
                future.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if not warm.done():
                warm.cancel()
                await asyncio.gather(warm, return_exceptions=True)
            else:
                warm.exception()  # a model that failed to load shows in replies
            await app.aclose()


# Platforms whose adapter this version has.
PLATFORMS_BUILT = frozenset({"telegram", "qq", "discord"})


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (a clean shutdown) instead of killing the process."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
