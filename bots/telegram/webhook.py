"""Webhook mode: a small aiohttp server Telegram posts updates to.

Each POST must carry the secret given to setWebhook in the
`X-Telegram-Bot-Api-Secret-Token` header (anything else is refused with 403). The answer
(200) is given only after the update has been handled, so Telegram delivers again
whatever a crash interrupted; the brain answers a message only once.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
MAX_UPDATE_BYTES = 1024 * 1024

UpdateSink = Callable[[dict[str, Any]], Awaitable[None]]


class WebhookServer:
    def __init__(
        self, *, listen: str, port: int, path: str, secret: str, on_update: UpdateSink
    ) -> None:
        self.listen = listen
        self.port = port
        self.path = path or "/"
        self._secret = secret.encode()
        self._on_update = on_update
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_UPDATE_BYTES)
        app.router.add_post(self.path, self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.listen, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            self._runner = None
            raise
        log.info("Telegram webhook listening on %s:%d%s", self.listen, self.port, self.path)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _receive(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "").encode()
        if not hmac.compare_digest(given, self._secret):
            log.warning("a webhook request without the right secret was refused")
            return web.Response(status=403)
        try:
            update = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=400, text="not JSON")
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return web.Response(status=400, text="not an update")
        await self._on_update(update)
        return web.Response(status=200)
