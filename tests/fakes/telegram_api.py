"""A fake Telegram Bot API server on 127.0.0.1 (the wire protocol, nothing else).

It speaks what python-telegram-bot sends: POST /bot<token>/<method> with form fields
(nested values as JSON strings) or multipart uploads, and GET /file/bot<token>/<path>
for downloads; it answers with Telegram's shapes ({"ok": true, "result": ...}, Message
objects with message_id, date, chat, from; errors with error_code and description).

Tests enqueue updates (getUpdates long-polls for them, honouring the offset: asking
with offset N confirms every update below N), add files for getFile, make the next calls
of a method fail (429 with retry_after, or any other code), and mark users who never
started the bot (private sends to them answer 403). Every call is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

JSON = dict[str, Any]

TOKEN = "7301234567:AAH-fake_Token_for_tests_ONLY-0123456789"
BOT_ID = 7301234567
BOT_USERNAME = "tomo_test_bot"

# Methods whose fields hold JSON (PTB sends nested values as JSON strings).
_JSON_FIELDS = {"reply_parameters", "allowed_updates", "commands", "scope", "entities"}


@dataclass
class Call:
    """One Bot API call as the fake received it."""

    method: str
    params: JSON
    files: dict[str, bytes] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)
    status: int = 0  # 0 until answered

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    @property
    def reply_to(self) -> int | None:
        params = self.params.get("reply_parameters")
        return int(params["message_id"]) if isinstance(params, dict) else None

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))


def ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def error(code: int, description: str, *, retry_after: int | None = None) -> web.Response:
    body: JSON = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=code)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class FakeTelegram:
    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
        self.bot_user: JSON = {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "Tomo",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self.pending: list[JSON] = []  # updates not yet confirmed
        self.delivered: list[JSON] = []  # every update ever enqueued
        self.handed_out: list[int] = []  # update ids, each time getUpdates returned one
        self.not_started: set[int] = set()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.webhook: JSON | None = None
        self.commands: list[JSON] | None = None
        self.chats: dict[int, JSON] = {}
        self._failures: dict[str, list[tuple[int, str, int | None]]] = {}
        self._update_ids = itertools.count(5000)
        self._message_ids = itertools.count(100)
        self._file_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._closing = False
        self.app = web.Application(client_max_size=50 * 1024 * 1024)
        self.app.router.add_route("*", "/bot{token}/{method}", self._method)
        self.app.router.add_get("/file/bot{token}/{path:.+}", self._download)
        self.runner: web.AppRunner | None = None
        self.base = ""

    # server -----------------------------------------------------------------------------

    async def start(self) -> str:
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def stop(self) -> None:
        self._closing = True
        async with self._changed:
            self._changed.notify_all()
        if self.runner is not None:
            await self.runner.cleanup()

    # what tests arrange ---------------------------------------------------------------

    def fail_next(
        self, method: str, *, times: int = 1, code: int = 429, retry_after: int | None = 1
    ) -> None:
        """The next `times` calls of `method` fail (429 Too Many Requests by default)."""
        description = (
            f"Too Many Requests: retry after {retry_after}"
            if code == 429
            else {500: "Internal Server Error", 502: "Bad Gateway"}.get(code, "Error")
        )
        self._failures.setdefault(method, []).extend(
            [(code, description, retry_after if code == 429 else None)] * times
        )

    def add_file(self, data: bytes, *, path: str) -> str:
        file_id = f"file-{next(self._file_ids)}"
        self.files[file_id] = (data, f"{path}/file_{len(self.files)}")
        return file_id

    def user(self, user_id: int, first_name: str, last_name: str | None = None) -> JSON:
        user: JSON = {"id": user_id, "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        user["username"] = first_name.lower()
        return user

    def private_chat(self, user: JSON) -> JSON:
        chat = {"id": user["id"], "type": "private", "first_name": user["first_name"]}
        self.chats[user["id"]] = chat
        return chat

    def group(self, chat_id: int, title: str) -> JSON:
        chat = {"id": chat_id, "type": "supergroup", "title": title}
        self.chats[chat_id] = chat
        return chat

    def message(
        self,
        chat: JSON,
        user: JSON,
        text: str | None = None,
        *,
        reply_to: JSON | None = None,
        entities: list[JSON] | None = None,
        **media: Any,
    ) -> JSON:
        """A message from `user` in `chat`; @mentions and a leading /command get their
        entities as Telegram would set them."""
        msg: JSON = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": user,
        }
        if text is not None:
            key = "caption" if media else "text"
            msg[key] = text
            found = entities if entities is not None else auto_entities(text)
            if found:
                msg["caption_entities" if media else "entities"] = found
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        msg.update(media)
        return msg

    def voice(self, data: bytes, *, duration: int) -> JSON:
        file_id = self.add_file(data, path="voice")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "duration": duration,
            "mime_type": "audio/ogg",
            "file_size": len(data),
        }

    def photo(self, data: bytes, *, width: int, height: int) -> list[JSON]:
        small = self.add_file(data[: len(data) // 2], path="photos")
        large = self.add_file(data, path="photos")
        return [
            {"file_id": small, "file_unique_id": "s", "width": width // 4, "height": height // 4},
            {
                "file_id": large,
                "file_unique_id": "l",
                "width": width,
                "height": height,
                "file_size": len(data),
            },
        ]

    def sticker(self, data: bytes, *, emoji: str = "😀") -> JSON:
        file_id = self.add_file(data, path="stickers")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "file_size": len(data),
        }

    async def enqueue(self, message: JSON, *, edited: bool = False) -> JSON:
        update = {
            "update_id": next(self._update_ids),
            ("edited_message" if edited else "message"): message,
        }
        async with self._changed:
            self.pending.append(update)
            self.delivered.append(update)
            self._changed.notify_all()
        return update

    def forget_confirmations(self) -> None:
        """As if the bot had crashed before confirming: everything delivered comes again."""
        self.pending = list(self.delivered)

    async def post_to_webhook(self, update: JSON, *, secret: str | None = None) -> int:
        """Deliver `update` as Telegram would in webhook mode; the HTTP status."""
        assert self.webhook is not None, "no webhook set"
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret or self.webhook["secret_token"]}
        async with (
            aiohttp.ClientSession() as session,
            session.post(self.webhook["url"], json=update, headers=headers) as resp,
        ):
            return resp.status

    # what tests look at --------------------------------------------------------------

    def sent(self, method: str | None = None, *, chat_id: int | None = None) -> list[Call]:
        """Successful sends (everything but reads, chat actions and set-up)."""
        quiet = {
            "getMe",
            "getUpdates",
            "getFile",
            "setMyCommands",
            "deleteWebhook",
            "setWebhook",
            "sendChatAction",
        }
        return [
            c
            for c in self.calls
            if c.status == 200
            and c.method not in quiet
            and (method is None or c.method == method)
            and (chat_id is None or c.chat_id == chat_id)
        ]

    def actions(self, chat_id: int) -> list[str]:
        return [
            str(c.params["action"])
            for c in self.calls
            if c.method == "sendChatAction" and c.chat_id == chat_id
        ]

    async def wait_for(
        self, condition: Callable[[], bool], *, within: float = 15.0, what: str = "it"
    ) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                methods = [(c.method, c.status, c.params.get("text")) for c in self.calls[-15:]]
                raise AssertionError(f"timed out waiting for {what}; last calls: {methods}")
            await asyncio.sleep(0.02)

    # the wire -------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> tuple[JSON, dict[str, bytes], dict[str, str]]:
        params: JSON = dict(request.query)
        files: dict[str, bytes] = {}
        names: dict[str, str] = {}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params.update(await request.json())
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = value.file.read()
                        names[key] = value.filename
                    elif key in _JSON_FIELDS:
                        params[key] = json.loads(str(value))
                    else:
                        params[key] = value
        return params, files, names

    async def _method(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        try:
            params, files, names = await self._params(request)
        except ConnectionResetError:  # the client gave up mid-request (it was cancelled)
            return web.Response(status=499)
        call = Call(method=method, params=params, files=files, filenames=names)
        self.calls.append(call)  # recorded when it arrives (a long poll answers later)
        response = await self._answer(request, call)
        call.status = response.status
        return response

    async def _answer(self, request: web.Request, call: Call) -> web.Response:
        if request.match_info["token"] != self.token:
            return error(401, "Unauthorized")
        failures = self._failures.get(call.method)
        if failures:
            code, description, retry_after = failures.pop(0)
            return error(code, description, retry_after=retry_after)
        chat_id = call.chat_id
        if (
            call.method.startswith("send")
            and call.method != "sendChatAction"
            and chat_id is not None
            and chat_id in self.not_started
        ):
            return error(403, "Forbidden: bot can't initiate conversation with a user")
        handler = getattr(self, f"_api_{call.method}", None)
        if handler is None:
            return error(404, "Not Found")
        result: web.Response = await handler(call, request)
        return result

    async def _download(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return error(401, "Unauthorized")
        path = request.match_info["path"]
        for data, file_path in self.files.values():
            if file_path == path:
                return web.Response(body=data, content_type="application/octet-stream")
        return error(404, "Not Found")

    # methods ----------------------------------------------------------------------

    async def _api_getMe(self, call: Call, request: web.Request) -> web.Response:
        return ok(self.bot_user)

    async def _api_setMyCommands(self, call: Call, request: web.Request) -> web.Response:
        self.commands = call.params["commands"]
        return ok(True)

    async def _api_deleteWebhook(self, call: Call, request: web.Request) -> web.Response:
        self.webhook = None
        return ok(True)

    async def _api_setWebhook(self, call: Call, request: web.Request) -> web.Response:
        self.webhook = {
            "url": call.params["url"],
            "secret_token": call.params.get("secret_token"),
            "allowed_updates": call.params.get("allowed_updates"),
        }
        return ok(True)

    async def _api_getUpdates(self, call: Call, request: web.Request) -> web.Response:
        if self.webhook is not None:
            return error(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use "
                "deleteWebhook to delete the webhook first",
            )
        offset = int(call.params.get("offset") or 0)
        limit = int(call.params.get("limit") or 100)
        timeout = float(call.params.get("timeout") or 0)
        async with self._changed:
            if offset > 0:  # confirms every update below the offset
                self.pending = [u for u in self.pending if u["update_id"] >= offset]
            if not self.pending and timeout > 0 and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout)
            ready = [u for u in self.pending if u["update_id"] >= offset][:limit]
        if request.transport is not None and not request.transport.is_closing():
            # (a long poll whose client went away hands out nothing)
            self.handed_out.extend(u["update_id"] for u in ready)
        return ok(ready)

    async def _api_sendChatAction(self, call: Call, request: web.Request) -> web.Response:
        return ok(True)

    def _sent_message(self, call: Call, **content: Any) -> JSON:
        chat_id = call.chat_id
        assert chat_id is not None
        chat = self.chats.get(chat_id) or {
            "id": chat_id,
            "type": "private" if chat_id > 0 else "supergroup",
        }
        msg: JSON = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat,
            "from": self.bot_user,
        }
        msg.update(content)
        return msg

    async def _api_sendMessage(self, call: Call, request: web.Request) -> web.Response:
        text = call.text
        if not text.strip():
            return error(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            return error(400, "Bad Request: message is too long")
        if "parse_mode" in call.params:
            return error(400, "Bad Request: this fake expects plain text")
        return ok(self._sent_message(call, text=text))

    async def _api_sendVoice(self, call: Call, request: web.Request) -> web.Response:
        data = call.files.get("voice")
        if data is None or not (data[:4] == b"OggS" and b"OpusHead" in data[:512]):
            return error(400, "Bad Request: wrong voice: expected OGG/Opus")
        file_id = self.add_file(data, path="voice")
        voice = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "duration": int(call.params.get("duration") or 0),
            "mime_type": "audio/ogg",
            "file_size": len(data),
        }
        return ok(self._sent_message(call, voice=voice))

    async def _api_sendSticker(self, call: Call, request: web.Request) -> web.Response:
        data = call.files.get("sticker")
        if data is None or not (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            return error(400, "Bad Request: wrong sticker: expected WEBP")
        return ok(self._sent_message(call, sticker=self.sticker(data, emoji="🙂")))

    async def _api_sendDocument(self, call: Call, request: web.Request) -> web.Response:
        data = call.files.get("document")
        if data is None:
            return error(400, "Bad Request: there is no document in the request")
        file_id = self.add_file(data, path="documents")
        document = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": call.filenames.get("document", "file"),
            "file_size": len(data),
        }
        return ok(self._sent_message(call, document=document))

    async def _api_sendPhoto(self, call: Call, request: web.Request) -> web.Response:
        data = call.files.get("photo")
        if data is None:
            return error(400, "Bad Request: there is no photo in the request")
        return ok(self._sent_message(call, photo=self.photo(data, width=512, height=512)))

    async def _api_sendAudio(self, call: Call, request: web.Request) -> web.Response:
        data = call.files.get("audio")
        if data is None:
            return error(400, "Bad Request: there is no audio in the request")
        file_id = self.add_file(data, path="music")
        audio = {"file_id": file_id, "file_unique_id": f"u{file_id}", "duration": 1}
        return ok(self._sent_message(call, audio=audio))

    async def _api_getFile(self, call: Call, request: web.Request) -> web.Response:
        file_id = str(call.params.get("file_id"))
        if file_id not in self.files:
            return error(400, "Bad Request: invalid file_id")
        data, path = self.files[file_id]
        return ok(
            {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_size": len(data),
                "file_path": path,
            }
        )


def auto_entities(text: str) -> list[JSON]:
    """Entities Telegram would set: a /command at the start, and @mentions."""
    found: list[JSON] = []
    for match in re.finditer(r"(?:^/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?)|(?:@[A-Za-z0-9_]{5,})", text):
        kind = "bot_command" if match.group().startswith("/") else "mention"
        found.append(
            {
                "type": kind,
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group()),
            }
        )
    return found


__all__ = ["BOT_ID", "BOT_USERNAME", "TOKEN", "Call", "FakeTelegram", "auto_entities"]
