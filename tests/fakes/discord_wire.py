"""Wire-level pieces of the fake Discord: ids, JSON answers, rate-limit headers, request
bodies (JSON or multipart), and Discord's own checks of a new message."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1420070400000
EPHEMERAL = 1 << 6
IS_VOICE_MESSAGE = 1 << 13

_snowflake_counter = itertools.count(1)


def snowflake() -> int:
    """A new id, as Discord makes them (milliseconds since 2015 in the top bits)."""
    ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | (next(_snowflake_counter) & 0x3FFFFF)


def iso_now() -> str:
    return datetime.now(UTC).isoformat()


def reply(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer; discord.py reads JSON only when the content type is exactly this."""
    out = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=out)


def error(status: int, message: str, *, code: int = 0) -> web.Response:
    return reply({"message": message, "code": code}, status=status)


@dataclass
class Call:
    """One REST call as the fake received it."""

    method: str
    route: str  # the path template, e.g. "POST /channels/{channel_id}/messages"
    path: str
    params: dict[str, str]
    payload: JSON = field(default_factory=dict)
    files: list[tuple[str, str, bytes, str]] = field(default_factory=list)  # (field, name, ...)
    authorization: str | None = None
    status: int = 0


CALL = web.RequestKey("call", Call)


@dataclass
class Posted:
    """A message the bot created (in a channel, or as an interaction answer)."""

    id: int
    channel_id: int
    content: str
    flags: int
    payload: JSON
    files: list[tuple[str, bytes, str]]  # (filename, bytes, content type)
    interaction_id: int | None = None
    edits: int = 0

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def reply_to(self) -> int | None:
        ref = self.payload.get("message_reference")
        return int(ref["message_id"]) if isinstance(ref, dict) else None

    @property
    def attachments(self) -> list[JSON]:
        found: list[JSON] = self.payload.get("attachments") or []
        return found

    @property
    def custom_ids(self) -> list[str]:
        return [
            str(item["custom_id"])
            for row in self.payload.get("components") or []
            for item in row.get("components", [])
            if "custom_id" in item
        ]


def options_for(declared: list[JSON], given: dict[str, Any]) -> list[JSON]:
    out = []
    names = {o["name"]: o for o in declared}
    for name, value in given.items():
        wire = name.replace("_", "-") if name not in names else name
        assert wire in names, f"no option {name} (declared: {list(names)})"
        option = names[wire]
        assert option["type"] in (3, 4, 5), "this fake sends strings, integers and booleans"
        out.append({"type": option["type"], "name": wire, "value": value})
    for option in declared:
        if option.get("required") and option["name"] not in {o["name"] for o in out}:
            raise AssertionError(f"option {option['name']} is required")
    return out


def edit_posted(
    posted: Posted, data: JSON, *, files: list[tuple[str, str, bytes, str]] | None = None
) -> None:
    if "content" in data:
        posted.content = str(data["content"] or "")
    if "components" in data:
        posted.payload = {**posted.payload, "components": data["components"]}
    if files:
        posted.files = [(name, b, ctype) for _, name, b, ctype in files]
    posted.edits += 1


def check_message(call: Call, *, payload: JSON | None = None) -> str | None:
    """Discord's own checks of a new message: the ones tomo could get wrong."""
    body = payload if payload is not None else call.payload
    content = str(body.get("content") or "")
    if len(content) > 2000:
        return "Invalid Form Body: content: Must be 2000 or fewer in length."
    flags = int(body.get("flags") or 0)
    attachments = body.get("attachments") or []
    if len(attachments) != len(call.files) and payload is None:
        return "Invalid Form Body: attachments do not match the files"
    if flags & IS_VOICE_MESSAGE:
        if content or len(call.files) != 1:
            return "Cannot send a voice message with content or more than one file"
        meta = attachments[0]
        if "duration_secs" not in meta or "waveform" not in meta:
            return "Voice messages need duration_secs and waveform"
    if not content and not call.files and not body.get("components") and payload is None:
        return "Cannot send an empty message"
    mentions = body.get("allowed_mentions")
    if "@everyone" in content and (mentions is None or "everyone" in mentions.get("parse", [])):
        return "this fake refuses a message that could ping @everyone"
    return None


def limit_headers(*, remaining: int, reset_after: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": "fakebucket",
    }


def too_many(retry_after: float) -> web.Response:
    return reply(
        {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
        status=429,
        headers={
            **limit_headers(remaining=0, reset_after=retry_after),
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Scope": "user",
            "Via": "1.1 google",
        },
    )


async def read_body(request: web.Request) -> tuple[JSON, list[tuple[str, str, bytes, str]]]:
    if not request.can_read_body:
        return {}, []
    if request.content_type == "application/json":
        data = await request.json()
        return (data if isinstance(data, dict) else {"_list": data}), []
    if request.content_type != "multipart/form-data":
        return {}, []
    payload: JSON = {}
    files: list[tuple[str, str, bytes, str]] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        assert not hasattr(part, "at_eof") or True
        name = part.name or ""  # type: ignore[union-attr]
        data = await part.read()  # type: ignore[union-attr]
        if name == "payload_json":
            payload = json.loads(bytes(data))
        elif part.filename:  # type: ignore[union-attr]
            ctype = part.headers.get("Content-Type", "application/octet-stream")
            files.append((name, part.filename, bytes(data), ctype))  # type: ignore[union-attr]
    return payload, files
