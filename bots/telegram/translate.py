"""Telegram messages <-> tomo's Inbound, and outgoing text cut to Telegram's limits.

Pure: no network, no clock. The adapter fetches the media this module names and builds
the Inbound from the result.

Who a group message is for (`to_bot`): the bot is @mentioned by username or by a
text_mention, the message replies to one of the bot's, or it is a command (`/cmd@bot`,
or a bare `/cmd` at the start, which in a group can only be meant for bots). Commands
for another bot (`/cmd@otherbot`) are not ours at all and are dropped; every other group
message is passed on with to_bot=False, to be remembered but not answered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from telegram import Chat as TgChat
from telegram import Message, MessageEntity, User

from bots import incoming, textsplit
from brain.messages import ChatRef, PersonRef

# Telegram's limits, in UTF-16 code units (how Telegram counts characters).
TEXT_LIMIT = 4096

# The commands shown in Telegram's command menu (setMyCommands).
BOT_COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", "Say hello and see what I can do"),
    ("help", "What I can do, and the commands"),
    ("memory", "What I remember about you: list, search, show, forget, export"),
    ("voice", "Voice replies: /voice on or /voice off"),
    ("sticker", "Sticker replies of my avatar: on or off"),
    ("link", "Link your accounts on other platforms to this one"),
)

# Only these update kinds are asked for (getUpdates / setWebhook allowed_updates).
ALLOWED_UPDATES = ("message", "edited_message")


@dataclass(frozen=True, kw_only=True)
class BotIdentity:
    """Who the bot is (from getMe)."""

    id: int
    username: str


@dataclass(frozen=True, kw_only=True)
class MediaRef:
    """A file of a message, to be fetched with getFile before the brain sees it."""

    kind: Literal["voice", "image", "sticker"]
    file_id: str
    mime: str
    size_bytes: int | None = None
    duration_s: float = 0.0
    width: int | None = None
    height: int | None = None
    emoji: str | None = None


@dataclass(frozen=True, kw_only=True)
class Incoming(incoming.Incoming[MediaRef]):
    """A Telegram message read into tomo's terms, its media not yet fetched."""

    edited: bool = False


def person_of(user: User) -> PersonRef:
    name = user.full_name.strip() or (f"@{user.username}" if user.username else str(user.id))
    return PersonRef(platform="telegram", user_id=str(user.id), display_name=name)


def chat_of(chat: TgChat) -> ChatRef | None:
    """Private chats are DMs; groups and supergroups are groups; channels are not ours."""
    if chat.type == TgChat.PRIVATE:
        return ChatRef(platform="telegram", chat_id=str(chat.id), kind="dm")
    if chat.type in (TgChat.GROUP, TgChat.SUPERGROUP):
        return ChatRef(platform="telegram", chat_id=str(chat.id), kind="group")
    return None


def seconds(value: float | timedelta | None) -> float:
    """A PTB time period (int seconds, or timedelta with PTB_TIMEDELTA) in seconds."""
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def read_message(message: Message, *, me: BotIdentity, edited: bool = False) -> Incoming | None:
    """`message` in tomo's terms, or None when it is not for tomo at all (a channel post,
    the bot's own message, a command for another bot, a service message). InputError
    for a message whose fields are not what the Bot API documents (PTB does not check)."""
    with incoming.reading("Telegram"):
        return _read_message(message, me=me, edited=edited)


def _read_message(message: Message, *, me: BotIdentity, edited: bool) -> Incoming | None:
    user = message.from_user
    chat = chat_of(message.chat)
    if user is None or chat is None or user.id == me.id:
        return None
    text = message.text if message.text is not None else (message.caption or "")
    entities = message.parse_entities() if message.text is not None else None
    if entities is None:
        entities = message.parse_caption_entities()
    addressed = _addressing(message, text=text, entities=entities, me=me)
    if addressed is None:
        return None
    to_bot, text = addressed
    media = media_of(message)
    if not text.strip() and not media:
        return None
    reply = message.reply_to_message
    when = (message.edit_date if edited else None) or message.date
    return Incoming(
        id=str(message.message_id),
        chat=chat,
        author=person_of(user),
        text=text,
        media=media,
        to_bot=to_bot or chat.kind == "dm",
        reply_to=str(reply.message_id) if reply is not None else None,
        sent_at=when,
        edited=edited,
    )


def _addressing(
    message: Message, *, text: str, entities: dict[MessageEntity, str], me: BotIdentity
) -> tuple[bool, str] | None:
    """(is it for the bot, the text as the brain should read it); None: another bot's."""
    handle = f"@{me.username}".lower()
    to_bot = False
    for entity, value in entities.items():
        if entity.type == MessageEntity.BOT_COMMAND and entity.offset == 0:
            name, _, target = value.partition("@")
            if target and target.lower() != me.username.lower():
                return None
            # `/memory@tomo_bot list` -> `/memory list`: the brain reads plain commands.
            text = name + text[len(value) :]
            to_bot = True
        elif (entity.type == MessageEntity.MENTION and value.lower() == handle) or (
            entity.type == MessageEntity.TEXT_MENTION
            and entity.user is not None
            and entity.user.id == me.id
        ):
            to_bot = True
    reply = message.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.id == me.id:
        to_bot = True
    return to_bot, _strip_leading_mention(text, handle=handle)


_AFTER_MENTION = re.compile(r"[\s,:;.!-]*")


def _strip_leading_mention(text: str, *, handle: str) -> str:
    """`@tomo_bot, hi` -> `hi` (and `@tomo_bot /memory list` -> `/memory list`)."""
    stripped = text.lstrip()
    if not stripped.lower().startswith(handle):
        return text
    rest = stripped[len(handle) :]
    if rest[:1].isalnum() or rest[:1] == "_":
        return text  # @tomo_botany is somebody else
    end = _AFTER_MENTION.match(rest)
    return rest[end.end() if end else 0 :]


def media_of(message: Message) -> tuple[MediaRef, ...]:
    """The files of a message that tomo keeps: voice notes and audio, the largest size
    of a photo, stickers."""
    found: list[MediaRef] = []
    if message.voice is not None:
        v = message.voice
        found.append(
            MediaRef(
                kind="voice",
                file_id=v.file_id,
                mime=v.mime_type or "audio/ogg",
                size_bytes=v.file_size,
                duration_s=seconds(v.duration),
            )
        )
    if message.audio is not None:
        a = message.audio
        found.append(
            MediaRef(
                kind="voice",
                file_id=a.file_id,
                mime=a.mime_type or "audio/mpeg",
                size_bytes=a.file_size,
                duration_s=seconds(a.duration),
            )
        )
    if message.photo:
        largest = max(message.photo, key=lambda p: (p.width * p.height, p.file_size or 0))
        found.append(
            MediaRef(
                kind="image",
                file_id=largest.file_id,
                mime="image/jpeg",
                size_bytes=largest.file_size,
                width=largest.width,
                height=largest.height,
            )
        )
    if message.sticker is not None:
        s = message.sticker
        mime = (
            "application/x-tgsticker"
            if s.is_animated
            else "video/webm"
            if s.is_video
            else "image/webp"
        )
        found.append(
            MediaRef(
                kind="sticker",
                file_id=s.file_id,
                mime=mime,
                size_bytes=s.file_size,
                width=s.width,
                height=s.height,
                emoji=s.emoji,
            )
        )
    return tuple(found)


# outgoing text -----------------------------------------------------------------------


def split_text(text: str, *, limit: int = TEXT_LIMIT) -> list[str]:
    """`text` cut to Telegram's message limit (in UTF-16 units, as bots/textsplit.py
    counts) at paragraph, line, sentence or word breaks."""
    return textsplit.split_text(text, limit=limit)
