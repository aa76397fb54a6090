"""Health and readiness over HTTP for orchestrators (TOMO_HTTP__PORT; off when unset).

- `GET /healthz` (liveness): 200 while the process's event loop answers.
- `GET /readyz` (readiness): 200 when every check passes (Redis, the database, the
  platform adapters, by process kind), 503 with what failed otherwise, and 503
  "draining" once the process is stopping (it finishes the messages in hand but takes no
  new ones).
- `GET /metrics`: Prometheus metrics (bots/metrics.py), when the process has them.

Answers are JSON and name only the check and a short reason: no URLs, no secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from aiohttp import web

from brain.errors import ConfigError, TomoError

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[object]]
CHECK_TIMEOUT_S = 2.0


class Metrics(Protocol):
    """What /metrics serves (bots.metrics.PrometheusTelemetry is one)."""

    content_type: str

    def render(self) -> bytes: ...


class HealthServer:
    """Serves /healthz and /readyz on `listen`:`port` while running."""

    def __init__(
        self,
        *,
        listen: str,
        port: int,
        checks: Mapping[str, Check],
        draining: Callable[[], bool] = lambda: False,
        timeout_s: float = CHECK_TIMEOUT_S,
        metrics: Metrics | None = None,
    ) -> None:
        self.listen, self.port = listen, port
        self.checks = dict(checks)
        self.draining = draining
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._runner: web.AppRunner | None = None

    @property
    def bound_port(self) -> int:
        """The port listened on (useful with port 0: one the system chose)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the health server is not running")
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        if self.metrics is not None:
            app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.listen, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"Cannot serve health checks on {self.listen}:{self.port} ({exc.strerror}): "
                "set TOMO_HTTP__PORT to a free port, or unset it."
            ) from None
        self._runner = runner
        log.info("health checks on http://%s:%d/healthz and /readyz", self.listen, self.port)

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _metrics(self, _request: web.Request) -> web.Response:
        assert self.metrics is not None
        response = web.Response(body=self.metrics.render())
        response.headers["Content-Type"] = self.metrics.content_type
        return response

    async def _readyz(self, _request: web.Request) -> web.Response:
        if self.draining():
            return web.json_response({"status": "draining"}, status=503)
        results = await self.run_checks()
        ready = all(r == "ok" for r in results.values())
        return web.json_response(
            {"status": "ready" if ready else "not ready", "checks": results},
            status=200 if ready else 503,
        )

    async def run_checks(self) -> dict[str, str]:
        names = list(self.checks)
        outcomes = await asyncio.gather(
            *(self._one(self.checks[n]) for n in names), return_exceptions=False
        )
        return dict(zip(names, outcomes, strict=True))

    async def _one(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), self.timeout_s)
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except Exception as exc:  # a readiness check reports, it never raises
            return _reason(exc)
        return "ok"


def _reason(exc: BaseException) -> str:
    """The first line of an error, short; TomoErrors are already free of secrets, other
    errors are named by type only (a driver's text may carry a URL)."""
    if isinstance(exc, TomoError):
        return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return type(exc).__name__


@contextlib.asynccontextmanager
async def serving(
    listen: str,
    port: int | None,
    checks: Mapping[str, Check],
    *,
    draining: Callable[[], bool] = lambda: False,
    metrics: Metrics | None = None,
) -> AsyncIterator[HealthServer | None]:
    """A HealthServer for the block when `port` is set; nothing otherwise."""
    if port is None:
        yield None
        return
    server = HealthServer(
        listen=listen, port=port, checks=checks, draining=draining, metrics=metrics
    )
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()


class Platform(Protocol):
    @property
    def connected(self) -> bool: ...


def platforms_ready(running: Mapping[str, tuple[asyncio.Task[Any], Platform]]) -> Check:
    """A check that fails while a platform adapter (by name: its task and the adapter)
    has ended or has no live connection to its platform."""

    async def check() -> None:
        ended = [name for name, (task, _) in running.items() if task.done()]
        if ended:
            raise AdapterStoppedError(f"stopped: {', '.join(ended)}")
        down = [name for name, (_, adapter) in running.items() if not adapter.connected]
        if down:
            raise PlatformDownError(f"not connected: {', '.join(down)}")

    return check


class AdapterStoppedError(TomoError):
    """A platform adapter of this process has ended (its error is in the log)."""


class PlatformDownError(TomoError):
    """A platform adapter is running but not connected to its platform (it retries)."""
