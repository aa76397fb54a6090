"""OneBot v11 message events <-> tomo's Inbound, and outgoing messages as segment arrays.

Pure: no network, no clock. The adapter fetches the media this module names and builds
the Inbound from the result.

Who a group message is for (`to_bot`): an `at` segment names the bot's QQ number, a
`reply` segment answers one of the bot's own messages, or the text is a command
(`/memory list`, `/记忆 list`) and no one else is @mentioned. Every other group message is
passed on with to_bot=False, to be remembered but not answered. The bot's own @ is cut out
of the text the brain reads; other people's stay as `@name`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bots import incoming
from bots.qq.cq import to_segments
from bots.textsplit import split_text
from brain.commands import parse_command
from brain.messages import ChatRef, PersonRef

JSON = dict[str, Any]

# QQ takes about 4,500 characters in one message; stay well clear of it (counted in
# UTF-16 units by bots.textsplit: never fewer than characters).
TEXT_LIMIT = 3000


@dataclass(frozen=True, kw_only=True)
class MediaRef:
    """A file of a message, to be fetched (by its URL, or by asking OneBot for it)."""

    kind: Literal["voice", "image"]
    file: str  # OneBot's name for it (get_record / get_image take it), or base64://...
    url: str | None = None
    path: str | None = None  # NapCat: where the file lies on its own disk
    size_bytes: int | None = None


class Incoming(incoming.Incoming[MediaRef]):
    """A OneBot message event read into tomo's terms, its media not yet fetched."""


class OwnMessages:
    """The ids of the last messages the bot sent (a reply to one is meant for the bot)."""

    def __init__(self, *, keep: int = 5000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._keep = keep

    def add(self, message_id: object) -> None:
        key = str(message_id)
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self._keep:
            self._ids.popitem(last=False)

    def __contains__(self, message_id: object) -> bool:
        return str(message_id) in self._ids

    def __len__(self) -> int:
        return len(self._ids)


def chat_of(event: JSON) -> ChatRef | None:
    """Private messages are DMs (the chat is the person), group messages groups."""
    kind = event.get("message_type")
    if kind == "private" and event.get("user_id") is not None:
        return ChatRef(platform="qq", chat_id=str(event["user_id"]), kind="dm")
    if kind == "group" and event.get("group_id") is not None:
        return ChatRef(platform="qq", chat_id=str(event["group_id"]), kind="group")
    return None


def person_of(event: JSON) -> PersonRef:
    sender = event.get("sender")
    sender = sender if isinstance(sender, dict) else {}
    user_id = str(event.get("user_id") or sender.get("user_id") or "")
    name = str(sender.get("card") or "").strip() or str(sender.get("nickname") or "").strip()
    return PersonRef(platform="qq", user_id=user_id, display_name=name or user_id)


def sent_at(event: JSON) -> datetime:
    stamp = event.get("time")
    if isinstance(stamp, int | float) and stamp > 0:
        try:
            return datetime.fromtimestamp(stamp, UTC)
        except (OverflowError, ValueError, OSError):  # beyond the year 9999, or NaN
            pass
    return datetime.now(UTC)  # not pure, but only for a malformed event


def read_event(event: JSON, *, self_id: int, own: OwnMessages) -> Incoming | None:
    """A `message` event in tomo's terms, or None when it is not for tomo at all (the
    bot's own message, a message from a channel or a stranger type, nothing in it).
    InputError for an event whose fields are not what OneBot v11 documents."""
    with incoming.reading("QQ"):
        return _read_event(event, self_id=self_id, own=own)


def _read_event(event: JSON, *, self_id: int, own: OwnMessages) -> Incoming | None:
    if event.get("post_type") != "message" or event.get("message_id") is None:
        return None
    chat = chat_of(event)
    if chat is None or str(event.get("user_id")) == str(self_id):
        return None
    segments = to_segments(event.get("message", event.get("raw_message", "")))
    me = str(self_id)
    parts: list[str] = []
    media: list[MediaRef] = []
    mentioned_me = mentioned_other = False
    reply_to: str | None = None
    after_me = False  # the text right after the bot's @ loses its leading blanks
    for seg in segments:
        kind, data = seg["type"], seg["data"]
        if kind == "text":
            text = data.get("text", "")
            parts.append(_AFTER_MENTION.sub("", text, count=1) if after_me else text)
        elif kind == "at":
            if data.get("qq") == me:
                mentioned_me = True
                after_me = True
                continue
            mentioned_other = True
            who = data.get("name") or ("全体成员" if data.get("qq") == "all" else data.get("qq"))
            parts.append(f"@{who}")
        elif kind == "reply" and data.get("id"):
            reply_to = data["id"]
        elif kind == "record" and (data.get("url") or data.get("file")):
            media.append(_media("voice", data))
        elif kind == "image" and (data.get("url") or data.get("file")):
            media.append(_media("image", data))
        after_me = False
    text = "".join(parts).strip()
    if not text and not media:
        return None
    command = parse_command(text) is not None and not mentioned_other
    to_bot = (
        chat.kind == "dm" or mentioned_me or command or (reply_to is not None and reply_to in own)
    )
    return Incoming(
        id=str(event["message_id"]),
        chat=chat,
        author=person_of(event),
        text=text,
        media=tuple(media),
        to_bot=to_bot,
        reply_to=reply_to,
        sent_at=sent_at(event),
    )


_AFTER_MENTION = re.compile(r"^[\s,:;，：、]*")


def _media(kind: Literal["voice", "image"], data: dict[str, str]) -> MediaRef:
    size = data.get("file_size", "")
    return MediaRef(
        kind=kind,
        file=data.get("file", ""),
        url=data.get("url") or None,
        path=data.get("path") or None,
        size_bytes=int(size) if size.isdigit() else None,
    )


# outgoing -------------------------------------------------------------------------------


def text_segment(text: str) -> JSON:
    return {"type": "text", "data": {"text": text}}


def at_segment(user_id: str) -> JSON:
    return {"type": "at", "data": {"qq": user_id}}


def reply_segment(message_id: str) -> JSON:
    return {"type": "reply", "data": {"id": message_id}}


def record_segment(data_b64: str) -> JSON:
    return {"type": "record", "data": {"file": f"base64://{data_b64}"}}


def image_segment(data_b64: str, *, sticker: bool = False) -> JSON:
    data: dict[str, Any] = {"file": f"base64://{data_b64}"}
    if sticker:  # NapCat shows sub_type 1 as a sticker (表情), not a photo to open
        data.update(sub_type=1, summary="[动画表情]")
    return {"type": "image", "data": data}


def text_messages(
    text: str,
    *,
    reply_to: str | None = None,
    at: str | None = None,
    limit: int = TEXT_LIMIT,
) -> list[list[JSON]]:
    """`text` as one or more messages; the first answers `reply_to` and @s `at` (in a
    group, so the asker sees it is for them)."""
    messages: list[list[JSON]] = []
    for i, piece in enumerate(split_text(text, limit=limit)):
        head: list[JSON] = []
        if i == 0 and reply_to:
            head.append(reply_segment(reply_to))
        if i == 0 and at:
            head += [at_segment(at), text_segment(" ")]
        messages.append([*head, text_segment(piece)])
    return messages


def file_pieces(text: str, *, limit: int = TEXT_LIMIT) -> list[str]:
    """A text file in messages of at most `limit` characters, cut after a line end where
    one fits: the pieces put together are the file again, character for character."""
    pieces: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 1, limit) + 1 or limit
        pieces.append(text[:cut])
        text = text[cut:]
    if text:
        pieces.append(text)
    return pieces
