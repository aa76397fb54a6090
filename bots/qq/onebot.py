"""OneBotClient: one forward-WebSocket connection to a OneBot v11 server (NapCat).

Frames both ways are JSON. The server pushes events (`post_type`: message, notice,
request, meta_event); tomo sends actions (`{"action", "params", "echo"}`) and the server
answers each with `{"status", "retcode", "data", "echo"}` on the same socket, matched here
by echo. The client learns the bot's QQ number from the lifecycle event (or the
get_login_info action), watches the heartbeat events (none for about two intervals: the
connection is dead, even if TCP has not noticed) and reconnects with exponential backoff
whenever the connection ends. Actions called while it is down wait for the next
connection. A refused access token (HTTP 401/403 to the upgrade) is a ConfigError at
once: retrying cannot fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from brain.errors import ConfigError, TomoError

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# Events and answers are small, but get_record / get_image answers may carry base64 files.
MAX_FRAME_BYTES = 64 * 1024 * 1024


def bad_token(how: str, *, token_set: bool) -> str:
    unset = " (it is unset)" if not token_set else ""
    return (
        f"QQ: the OneBot server refused TOMO_QQ__ACCESS_TOKEN{unset} ({how}): set "
        "it to the token of NapCat's forward WebSocket server (in NapCat's network config)."
    )


class OneBotError(TomoError):
    """An action could not be done."""


class NotConnectedError(OneBotError):
    """No connection to the OneBot server came up in time for an action."""


class ConnectionLostError(OneBotError):
    """The connection ended before the action was answered (it may or may not be done)."""


class ActionTimeoutError(OneBotError):
    """The OneBot server did not answer an action in time (it may or may not be done)."""


class ActionFailedError(OneBotError):
    """The OneBot server answered an action with a failure."""

    def __init__(self, action: str, *, retcode: int | None, message: str) -> None:
        super().__init__(f"{action} failed (retcode {retcode}): {message or 'no reason given'}")
        self.action = action
        self.retcode = retcode


class Caller(Protocol):
    """What sending and fetching need of the connection (OneBotClient is one)."""

    async def call(
        self, action: str, params: JSON | None = None, *, timeout_s: float | None = None
    ) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class ConnectPolicy:
    """How the connection is made and kept."""

    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    # The very first connection: after this many failed tries, a ConfigError (the URL is
    # wrong or NapCat is not running). Once connected, reconnecting never gives up.
    startup_attempts: int = 5
    # No frame for this many heartbeat intervals: the connection is dead.
    heartbeat_misses: float = 2.0
    handshake_timeout_s: float = 10.0
    action_timeout_s: float = 30.0
    # How long an action waits for a connection before it fails (NotConnectedError).
    offline_wait_s: float = 600.0


def safe_url(url: str) -> str:
    """`url` without its query (NapCat also takes `?access_token=...`) and user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OneBotClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        on_event: Callable[[JSON], None],
        policy: ConnectPolicy | None = None,
        self_id: int | None = None,
    ) -> None:
        if urlsplit(url).scheme not in ("ws", "wss"):
            raise ConfigError(
                f"TOMO_QQ__ONEBOT_URL must be a ws:// or wss:// URL (NapCat's forward "
                f"WebSocket server, e.g. ws://127.0.0.1:3001), not {safe_url(url)!r}."
            )
        self.url = url
        self.token = token
        self.on_event = on_event
        self.policy = policy or ConnectPolicy()
        self.connections = 0  # how many times a connection came up
        self._self_id = self_id
        self._identity = asyncio.Event()
        if self_id is not None:
            self._identity.set()
        self._ready = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._pending: dict[str, asyncio.Future[JSON]] = {}
        self._echoes = itertools.count(1)
        self._heartbeat_s: float | None = None
        self._last_frame = 0.0
        self._refused: str | None = None  # how the server refused the token in-band

    @property
    def self_id(self) -> int | None:
        return self._self_id

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def identified(self) -> int:
        """The bot's own QQ number (waits until it is known)."""
        await self._identity.wait()
        assert self._self_id is not None
        return self._self_id

    # the connection -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect when the connection ends, until cancelled."""
        policy = self.policy
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=policy.handshake_timeout_s)
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        delay, tries, ever = policy.first_delay_s, 0, False
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    ws = await asyncio.wait_for(
                        session.ws_connect(
                            self.url,
                            headers=headers,
                            max_msg_size=MAX_FRAME_BYTES,
                            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                            autoping=True,
                        ),
                        policy.handshake_timeout_s,
                    )
                except aiohttp.WSServerHandshakeError as exc:
                    if exc.status in (401, 403):
                        raise ConfigError(
                            bad_token(f"HTTP {exc.status}", token_set=bool(self.token))
                        ) from None
                    trouble = f"HTTP {exc.status}"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    trouble = type(exc).__name__
                else:
                    ever, tries = True, 0
                    if await self._serve(ws):
                        delay = policy.first_delay_s  # it was up and talking: start over
                    if self._refused is not None:
                        raise ConfigError(bad_token(self._refused, token_set=bool(self.token)))
                    trouble = "the connection ended"
                tries += 1
                if not ever and tries >= policy.startup_attempts:
                    raise ConfigError(
                        f"Cannot connect to the OneBot server at {safe_url(self.url)} ({trouble}):"
                        " check TOMO_QQ__ONEBOT_URL and that NapCat runs with its forward "
                        "WebSocket server on."
                    )
                log.warning(
                    "QQ: OneBot server at %s: %s; reconnecting in %.1f s",
                    safe_url(self.url),
                    trouble,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, policy.max_delay_s)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Read frames until the connection ends; True when the server said anything."""
        loop = asyncio.get_running_loop()
        # (the heartbeat interval is kept from earlier connections: a server set-up)
        self._ws, self._last_frame = ws, loop.time()
        self.connections += 1
        self._ready.set()
        log.info("QQ: connected to the OneBot server at %s", safe_url(self.url))
        helpers = [asyncio.create_task(self._watch(ws))]
        if self._self_id is None:
            helpers.append(asyncio.create_task(self._identify()))
        heard = False
        try:
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    data: str = frame.data
                elif frame.type is aiohttp.WSMsgType.BINARY:
                    data = frame.data.decode("utf-8", "replace")
                else:  # ERROR
                    break
                heard = True
                self._last_frame = loop.time()
                self._frame(data)
                if self._refused is not None:
                    break
        finally:
            self._ready.clear()
            self._ws = None
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLostError("the connection to QQ ended"))
            self._pending.clear()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                await ws.close()
        return heard

    async def _watch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Close the connection when the heartbeats stop (a silent, half-open socket)."""
        loop = asyncio.get_running_loop()
        while True:
            interval = self._heartbeat_s
            await asyncio.sleep(min(max((interval or 4.0) / 4, 0.05), 5.0))
            if interval is None:
                continue
            silent = loop.time() - self._last_frame
            if silent > interval * self.policy.heartbeat_misses:
                log.warning("QQ: no heartbeat for %.1f s; reconnecting", silent)
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    await ws.close()
                return

    async def _identify(self) -> None:
        """Ask who we are, unless the lifecycle event says so first."""
        try:
            data = await self.call("get_login_info")
        except OneBotError as exc:
            log.warning("QQ: get_login_info failed: %s", exc)
            return
        if isinstance(data, dict) and str(data.get("user_id", "")).isdigit():
            self._learn(int(data["user_id"]))
            log.info("QQ: logged in as %s (%s)", data.get("nickname", ""), data["user_id"])

    def _learn(self, self_id: int) -> None:
        if self._self_id is None:
            self._self_id = self_id
            self._identity.set()

    def _frame(self, raw: str) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            log.warning("QQ: a frame that is not JSON was ignored")
            return
        if not isinstance(frame, dict):
            return
        if "post_type" not in frame and ("echo" in frame or "retcode" in frame):
            future = self._pending.pop(str(frame.get("echo")), None)
            if future is not None and not future.done():
                future.set_result(frame)
            elif frame.get("retcode") in (1401, 1403):
                # NapCat upgrades the connection, then refuses a wrong token with an
                # answer to no action (retcode 1403) and closes it.
                self._refused = f"retcode {frame['retcode']}: {frame.get('message', '')}"
            return
        post_type = frame.get("post_type")
        if post_type is None:
            return
        if str(frame.get("self_id", "")).isdigit():
            self._learn(int(frame["self_id"]))
        if post_type == "meta_event":
            if frame.get("meta_event_type") == "heartbeat":
                interval = frame.get("interval")
                if isinstance(interval, int | float) and interval > 0:
                    self._heartbeat_s = interval / 1000
            return
        self.on_event(frame)

    # actions --------------------------------------------------------------------------

    async def call(
        self, action: str, params: JSON | None = None, *, timeout_s: float | None = None
    ) -> Any:
        """Do `action` and return its `data`. Waits for a connection when there is none
        (NotConnectedError after the policy's offline_wait_s); ConnectionLostError,
        ActionTimeoutError or ActionFailedError when it did not go through."""
        ws = await self._connection()
        echo = f"tomo-{next(self._echoes)}"
        future: asyncio.Future[JSON] = asyncio.get_running_loop().create_future()
        self._pending[echo] = future
        frame = json.dumps(
            {"action": action, "params": params or {}, "echo": echo}, ensure_ascii=False
        )
        try:
            await ws.send_str(frame)
            answer = await asyncio.wait_for(future, timeout_s or self.policy.action_timeout_s)
        except (ConnectionError, aiohttp.ClientError) as exc:
            lost = f"the connection to QQ ended ({type(exc).__name__})"
            raise ConnectionLostError(lost) from None
        except TimeoutError:
            raise ActionTimeoutError(f"{action}: no answer from the OneBot server") from None
        finally:
            self._pending.pop(echo, None)
        retcode = answer.get("retcode")
        if answer.get("status") == "failed" or retcode not in (0, 1):
            message = str(answer.get("wording") or answer.get("message") or answer.get("msg") or "")
            raise ActionFailedError(
                action, retcode=retcode if isinstance(retcode, int) else None, message=message
            )
        return answer.get("data")

    async def _connection(self) -> aiohttp.ClientWebSocketResponse:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.offline_wait_s
        while True:
            ws = self._ws
            if ws is not None and not ws.closed and self._ready.is_set():
                return ws
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError
                await asyncio.wait_for(self._ready.wait(), left)
            except TimeoutError:
                raise NotConnectedError(
                    f"no connection to the OneBot server at {safe_url(self.url)} "
                    f"for {self.policy.offline_wait_s:.0f} s"
                ) from None
            if self._ws is None or self._ws.closed:
                await asyncio.sleep(0.01)  # it just went down again: wait for the next one
