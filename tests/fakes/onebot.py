"""A fake OneBot v11 server (NapCat's forward WebSocket) on 127.0.0.1: the wire protocol,
nothing else.

A client connects to ws://127.0.0.1:<port>/ with `Authorization: Bearer <token>` (or
`?access_token=`); a wrong token gets HTTP 401 to the upgrade. On each connection the fake
sends the lifecycle meta event, then a heartbeat meta event every interval. Tests push
message events (segment arrays or CQ-code strings); the fake answers actions
(`{"action", "params", "echo"}`) with `{"status", "retcode", "data", "echo"}`: sends get a
message id, get_login_info the bot's QQ number, get_msg / get_record / get_image what it
holds, upload_private_file an empty success. Media files are served over HTTP.

Tests can make the next calls of an action fail (a retcode) or go unanswered, drop the
connection when an action arrives or at once, refuse new connections for a while, and fall
silent (no heartbeats, no answers: a half-open socket). Every action is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

JSON = dict[str, Any]

TOKEN = "napcat-FAKE-access-token-0123456789"
SELF_ID = 3889001234
NICKNAME = "Tomo"
SEND_ACTIONS = ("send_private_msg", "send_group_msg", "send_msg", "upload_private_file")


@dataclass
class Action:
    """One action as the fake received it, and its answer (None: never answered)."""

    action: str
    params: JSON
    echo: Any
    connection: int
    answer: JSON | None = None

    @property
    def ok(self) -> bool:
        return self.answer is not None and self.answer.get("retcode") == 0

    @property
    def message(self) -> list[JSON]:
        message = self.params.get("message")
        return message if isinstance(message, list) else []

    def segments(self, kind: str) -> list[JSON]:
        return [s["data"] for s in self.message if s.get("type") == kind]

    @property
    def text(self) -> str:
        return "".join(d.get("text", "") for d in self.segments("text"))

    @property
    def message_id(self) -> int | None:
        """The id the fake gave the message this action sent."""
        data = self.answer.get("data") if self.answer else None
        return data.get("message_id") if isinstance(data, dict) else None

    @property
    def reply_to(self) -> str | None:
        replies = self.segments("reply")
        return str(replies[0]["id"]) if replies else None

    @property
    def to(self) -> int | None:
        """The user (private) or group a send went to."""
        value = self.params.get("user_id" if "private" in self.action else "group_id")
        return int(value) if value is not None else None


def seg(kind: str, **data: Any) -> JSON:
    return {"type": kind, "data": {k: str(v) for k, v in data.items()}}


def cq(message: list[JSON]) -> str:
    """A segment array as a CQ-code string (OneBot's escaping)."""

    def esc(text: str, *, in_code: bool = False) -> str:
        text = text.replace("&", "&amp;").replace("[", "&#91;").replace("]", "&#93;")
        return text.replace(",", "&#44;") if in_code else text

    out: list[str] = []
    for item in message:
        if item["type"] == "text":
            out.append(esc(item["data"]["text"]))
        else:
            params = "".join(f",{k}={esc(v, in_code=True)}" for k, v in item["data"].items())
            out.append(f"[CQ:{item['type']}{params}]")
    return "".join(out)


def inline(file: str) -> bytes | None:
    if not file.startswith("base64://"):
        return None
    try:
        return base64.b64decode(file[len("base64://") :], validate=True)
    except (binascii.Error, ValueError):
        return None


class FakeOneBot:
    def __init__(
        self, *, token: str = TOKEN, self_id: int = SELF_ID, heartbeat_ms: int = 500
    ) -> None:
        self.token = token
        self.self_id = self_id
        self.heartbeat_ms = heartbeat_ms
        self.actions: list[Action] = []
        self.connections = 0  # connections accepted, ever
        self.refused = 0  # upgrades answered with an error status
        self.heartbeats: dict[int, int] = {}  # connection number -> heartbeats sent
        self.refuse_with: int | None = None  # answer upgrades with this status
        # A wrong token: HTTP 401 to the upgrade (go-cqhttp), or, as NapCat does, the
        # upgrade accepted, then a retcode 1403 answer to no action, and the socket closed.
        self.napcat_token_check = False
        self.not_friends: set[int] = set()  # send_private_msg to them fails
        self.file_uploads = True  # False: upload_private_file is not supported
        self.media: dict[str, bytes] = {}
        self.messages: dict[int, JSON] = {}  # message id -> what get_msg answers
        self._failures: dict[str, list[tuple[int, str]]] = {}
        self._stalls: dict[str, int] = {}
        self._drop_on: dict[str, int] = {}
        self._sockets: dict[int, web.WebSocketResponse] = {}
        self._silent: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._message_ids = itertools.count(880001)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_get("/", self._connect)
        self.app.router.add_get("/media/{name}", self._media)
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.base = ""

    # server -----------------------------------------------------------------------------

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"ws://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self.drop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.runner is not None:
            await self.runner.cleanup()

    # what tests arrange ---------------------------------------------------------------

    def add_media(self, data: bytes, *, name: str) -> str:
        """Serve `data`; its URL."""
        self.media[name] = data
        return f"{self.base}/media/{name}"

    def fail_next(
        self, action: str, *, times: int = 1, retcode: int = 1200, message: str = "发送失败"
    ) -> None:
        """The next `times` calls of `action` are answered with a failure."""
        self._failures.setdefault(action, []).extend([(retcode, message)] * times)

    def stall_next(self, action: str, *, times: int = 1) -> None:
        """The next `times` calls of `action` are never answered."""
        self._stalls[action] = self._stalls.get(action, 0) + times

    def drop_on(self, action: str, *, times: int = 1) -> None:
        """When `action` next arrives, the connection is closed instead of answering."""
        self._drop_on[action] = self._drop_on.get(action, 0) + times

    async def drop(self) -> None:
        """Close every connection now (as a NapCat restart would)."""
        for ws in list(self._sockets.values()):
            await ws.close(code=1001, message=b"going away")

    def silence(self) -> None:
        """The open connections go quiet (no heartbeats, no answers), but stay open."""
        self._silent.update(self._sockets)

    def user(self, user_id: int, nickname: str, *, card: str = "") -> JSON:
        return {"user_id": user_id, "nickname": nickname, "card": card, "sex": "unknown"}

    def private_message(
        self, sender: JSON, message: list[JSON], *, as_string: bool = False
    ) -> JSON:
        return self._message("private", sender, message, as_string=as_string)

    def group_message(
        self, group_id: int, sender: JSON, message: list[JSON], *, as_string: bool = False
    ) -> JSON:
        return self._message("group", sender, message, group_id=group_id, as_string=as_string)

    def _message(
        self,
        kind: str,
        sender: JSON,
        message: list[JSON],
        *,
        group_id: int | None = None,
        as_string: bool,
    ) -> JSON:
        message_id = next(self._message_ids)
        event: JSON = {
            "time": int(time.time()),
            "self_id": self.self_id,
            "post_type": "message",
            "message_type": kind,
            "sub_type": "friend" if kind == "private" else "normal",
            "message_id": message_id,
            "user_id": sender["user_id"],
            "message": cq(message) if as_string else message,
            "raw_message": cq(message),
            "font": 14,
            "sender": {**sender, "role": "member"} if group_id else sender,
        }
        if group_id is not None:
            event["group_id"] = group_id
        self.messages[message_id] = {
            "message_id": message_id,
            "user_id": sender["user_id"],
            "sender": sender,
            "message": message,
        }
        return event

    def past_bot_message(self, message: list[JSON]) -> int:
        """A message the bot sent before (say, before a restart); its id."""
        message_id = next(self._message_ids)
        self.messages[message_id] = {
            "message_id": message_id,
            "user_id": self.self_id,
            "sender": {"user_id": self.self_id, "nickname": NICKNAME},
            "message": message,
        }
        return message_id

    async def push(self, event: JSON, *, within: float = 10.0) -> None:
        """Send `event` to every connected client (waiting for one to connect)."""
        await self.wait_for(lambda: bool(self._live()), within=within, what="a client")
        for ws in self._live():
            await ws.send_str(json.dumps(event, ensure_ascii=False))

    # what tests look at --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return bool(self._live())

    def sent(self, action: str | None = None, *, to: int | None = None) -> list[Action]:
        """Successful sends, in order."""
        return [
            a
            for a in self.actions
            if a.action in SEND_ACTIONS
            and a.ok
            and (action is None or a.action == action)
            and (to is None or a.to == to)
        ]

    def answering(self, message_id: int) -> list[Action]:
        """Successful sends that answer message `message_id` (a reply segment to it)."""
        return [a for a in self.sent() if a.reply_to == str(message_id)]

    async def wait_for(
        self, condition: Callable[[], bool], *, within: float = 15.0, what: str = "it"
    ) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                last = [(a.action, a.ok, a.text[:60]) for a in self.actions[-12:]]
                raise AssertionError(f"timed out waiting for {what}; last actions: {last}")
            await asyncio.sleep(0.02)

    # the wire -------------------------------------------------------------------------

    def _live(self) -> list[web.WebSocketResponse]:
        return [ws for n, ws in self._sockets.items() if n not in self._silent and not ws.closed]

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header else ""
        given = given or request.query.get("access_token", "")
        return given == self.token

    async def _connect(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request) and self.napcat_token_check:
            self.refused += 1
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            refusal = {"status": "failed", "retcode": 1403, "data": None, "echo": None}
            await ws.send_json({**refusal, "message": "token验证失败", "wording": "token验证失败"})
            await ws.close()
            return ws
        if not self._authorized(request):
            self.refused += 1
            body = {"status": "failed", "retcode": 1403, "message": "token验证失败"}
            return web.json_response(body, status=401)
        if self.refuse_with is not None:
            self.refused += 1
            return web.Response(status=self.refuse_with, text="not now")
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024)
        await ws.prepare(request)
        self.connections += 1
        number = self.connections
        self._sockets[number] = ws
        await ws.send_json(self._meta("lifecycle", sub_type="connect"))
        beat = asyncio.create_task(self._heartbeats(number, ws))
        self._tasks.add(beat)
        beat.add_done_callback(self._tasks.discard)
        try:
            async for frame in ws:
                if frame.type is WSMsgType.TEXT:
                    await self._action(number, ws, json.loads(frame.data))
        finally:
            beat.cancel()
            self._sockets.pop(number, None)
        return ws

    def _meta(self, kind: str, **fields: Any) -> JSON:
        return {
            "time": int(time.time()),
            "self_id": self.self_id,
            "post_type": "meta_event",
            "meta_event_type": kind,
            **fields,
        }

    async def _heartbeats(self, number: int, ws: web.WebSocketResponse) -> None:
        while not ws.closed:
            await asyncio.sleep(self.heartbeat_ms / 1000)
            if number in self._silent or ws.closed:
                continue
            status = {"online": True, "good": True}
            with contextlib.suppress(ConnectionError):
                await ws.send_json(
                    self._meta("heartbeat", status=status, interval=self.heartbeat_ms)
                )
                self.heartbeats[number] = self.heartbeats.get(number, 0) + 1

    async def _action(self, number: int, ws: web.WebSocketResponse, frame: JSON) -> None:
        name = str(frame.get("action"))
        params = frame.get("params") or {}
        record = Action(action=name, params=params, echo=frame.get("echo"), connection=number)
        self.actions.append(record)
        if number in self._silent:
            return
        if self._drop_on.get(name):
            self._drop_on[name] -= 1
            await ws.close(code=1001, message=b"dropped")
            return
        if self._stalls.get(name):
            self._stalls[name] -= 1
            return
        failures = self._failures.get(name)
        if failures:
            retcode, message = failures.pop(0)
            answer = self._failed(retcode, message)
        else:
            handler = getattr(self, f"_do_{name}", None)
            answer = handler(params) if handler is not None else self._failed(1404, "不支持的Api")
        answer["echo"] = record.echo
        record.answer = answer
        with contextlib.suppress(ConnectionError):
            await ws.send_json(answer)

    @staticmethod
    def _ok(data: Any) -> JSON:
        return {"status": "ok", "retcode": 0, "data": data, "message": "", "wording": ""}

    @staticmethod
    def _failed(retcode: int, message: str) -> JSON:
        return {"status": "failed", "retcode": retcode, "data": None, "message": message}

    async def _media(self, request: web.Request) -> web.StreamResponse:
        data = self.media.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    # actions ----------------------------------------------------------------------

    def _do_get_login_info(self, params: JSON) -> JSON:
        return self._ok({"user_id": self.self_id, "nickname": NICKNAME})

    def _check_message(self, message: Any) -> str | None:
        """What is wrong with an outgoing message, as NapCat would refuse it."""
        if not isinstance(message, list) or not message:
            return "message must be a non-empty segment array"
        for item in message:
            if not isinstance(item, dict) or "type" not in item or "data" not in item:
                return "every segment needs type and data"
            kind, data = item["type"], item["data"]
            if kind == "text" and not isinstance(data.get("text"), str):
                return "a text segment without text"
            if kind in ("record", "image"):
                payload = inline(str(data.get("file", "")))
                if payload is None:
                    return f"{kind}: this fake takes base64:// files only"
                if kind == "record" and not payload.lstrip(b"\x02").startswith(b"#!SILK_V3"):
                    return "record: QQ voice must be SILK v3"
            if kind == "record" and len(message) > 1:
                return "a record must be the only segment of its message"
        if all(i["type"] == "text" and not i["data"]["text"].strip() for i in message):
            return "message is empty"
        return None

    def _sent(self, params: JSON) -> JSON:
        trouble = self._check_message(params.get("message"))
        if trouble is not None:
            return self._failed(100, trouble)
        message_id = next(self._message_ids)
        self.messages[message_id] = {
            "message_id": message_id,
            "user_id": self.self_id,
            "sender": {"user_id": self.self_id, "nickname": NICKNAME},
            "message": params["message"],
        }
        return self._ok({"message_id": message_id})

    def _do_send_private_msg(self, params: JSON) -> JSON:
        if int(params.get("user_id", 0)) in self.not_friends:
            return self._failed(1200, "对方不是你的好友")
        return self._sent(params)

    def _do_send_group_msg(self, params: JSON) -> JSON:
        return self._sent(params)

    def _do_get_msg(self, params: JSON) -> JSON:
        found = self.messages.get(int(params.get("message_id", 0)))
        return self._ok(found) if found else self._failed(1200, "消息不存在")

    def _do_get_record(self, params: JSON) -> JSON:
        data = self.media.get(str(params.get("file")))
        if data is None:
            return self._failed(1200, "文件不存在")
        b64 = base64.b64encode(data).decode()
        return self._ok({"file": f"/nonexistent/{params['file']}", "base64": b64})

    def _do_get_image(self, params: JSON) -> JSON:
        return self._do_get_record(params)

    def _do_upload_private_file(self, params: JSON) -> JSON:
        if not self.file_uploads:
            return self._failed(1404, "不支持的Api")
        if inline(str(params.get("file", ""))) is None or not params.get("name"):
            return self._failed(100, "file must be base64:// and name set")
        return self._ok({})


__all__ = ["NICKNAME", "SELF_ID", "TOKEN", "Action", "FakeOneBot", "cq", "inline", "seg"]
