"""The gateway of the fake Discord: one websocket endpoint speaking what discord.py
expects.

HELLO, then IDENTIFY -> READY and one GUILD_CREATE per guild, or RESUME -> the missed
events and RESUMED (or INVALID_SESSION for an unknown session); heartbeats are ACKed.
With `compress=zlib-stream` in the URL every payload goes out through one zlib stream per
connection, each Z_SYNC_FLUSHed (ending in 00 00 ff ff). Events a test dispatches while
no connection is up are kept with the session and replayed on RESUME, as Discord does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

JSON = dict[str, Any]

HEARTBEAT_MS = 41250
MESSAGE_CONTENT_INTENT = 1 << 15


@dataclass
class Session:
    id: str
    seq: int = 0
    events: list[JSON] = field(default_factory=list)  # dispatched, with their "s"


class Connection:
    """One gateway websocket, compressed as the client asked."""

    def __init__(self, ws: web.WebSocketResponse, *, compress: str | None) -> None:
        self.ws = ws
        self.session: Session | None = None
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._lock = asyncio.Lock()

    async def send(self, payload: JSON) -> None:
        text = json.dumps(payload)
        async with self._lock:
            if self.ws.closed:
                return
            if self._zlib is not None:
                data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(text)


class FakeGateway:
    """Sessions and connections of one bot. `ready` makes the READY payload (given the
    session id); `guilds` the GUILD_CREATE payloads sent after it."""

    def __init__(
        self,
        *,
        token: str,
        ready: Callable[[str], JSON],
        guilds: Callable[[], list[JSON]],
    ) -> None:
        self.token = token
        self._ready = ready
        self._guilds = guilds
        self.sessions: dict[str, Session] = {}
        self.session: Session | None = None  # the bot's current session
        self.connections: list[Connection] = []
        self.identifies: list[JSON] = []
        self.resumes: list[JSON] = []
        self.replayed: list[JSON] = []  # events sent again on a RESUME
        self.paths: list[str] = []  # the URL path of each connection
        self.compressions: list[str | None] = []  # per connection, as the client asked
        # False: IDENTIFY with the Message Content intent is refused (close code 4014), as
        # when the intent is not switched on in the Developer Portal.
        self.message_content_allowed = True

    # from the test's side -------------------------------------------------------------

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send a DISPATCH to the bot's session (kept for a RESUME if it is offline)."""
        session = self.session
        assert session is not None, "the bot has not identified yet"
        session.seq += 1
        payload = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.events.append(payload)
        for conn in self.live():
            if conn.session is session:
                await conn.send(payload)

    def live(self) -> list[Connection]:
        return [c for c in self.connections if not c.ws.closed and c.session is not None]

    async def drop(self, *, code: int = 4000) -> None:
        """Close the bot's websocket (4000: an unknown error, which may be resumed)."""
        for conn in self.live():
            await conn.ws.close(code=code, message=b"dropped by the fake")

    async def invalidate(self) -> None:
        """Tell the bot its session is gone (INVALID_SESSION, not resumable)."""
        for conn in self.live():
            if conn.session is not None:
                self.sessions.pop(conn.session.id, None)
            await conn.send({"op": 9, "d": False})

    async def close(self) -> None:
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)

    # the wire ---------------------------------------------------------------------------

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        compress = request.query.get("compress")
        if compress not in (None, "zlib-stream"):
            await ws.close(code=4000, message=b"this fake speaks zlib-stream only")
            return ws
        conn = Connection(ws, compress=compress)
        self.paths.append(request.path)
        self.compressions.append(compress)
        self.connections.append(conn)
        try:
            await conn.send({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}})
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._op(conn, json.loads(msg.data))
        finally:
            self.connections.remove(conn)
        return ws

    async def _op(self, conn: Connection, payload: JSON) -> None:
        op, raw = payload.get("op"), payload.get("d")
        data: JSON = raw if isinstance(raw, dict) else {}
        if op == 1:  # HEARTBEAT
            await conn.send({"op": 11})
        elif op == 2:  # IDENTIFY
            await self._identify(conn, data)
        elif op == 6:  # RESUME
            await self._resume(conn, data)
        # op 3 (presence), 4 (voice), 8 (request members): nothing to do here

    async def _identify(self, conn: Connection, data: JSON) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        self.identifies.append(data)
        if not self.message_content_allowed and int(data.get("intents", 0)) & (
            MESSAGE_CONTENT_INTENT
        ):
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session = Session(id=secrets.token_hex(16))
        self.sessions[session.id] = session
        self.session = conn.session = session
        await self.dispatch("READY", self._ready(session.id))
        for guild in self._guilds():
            await self.dispatch("GUILD_CREATE", guild)

    async def _resume(self, conn: Connection, data: JSON) -> None:
        self.resumes.append(data)
        known = self.sessions.get(str(data.get("session_id")))
        if known is None or data.get("token") != self.token:
            await conn.send({"op": 9, "d": False})
            return
        self.session = conn.session = known
        seq = int(data.get("seq") or 0)
        for event in known.events:
            if event["s"] > seq:
                self.replayed.append(event)
                await conn.send(event)
        await self.dispatch("RESUMED", {})


__all__ = ["Connection", "FakeGateway", "Session"]
