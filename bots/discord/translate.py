"""Discord messages and slash commands <-> tomo's Inbound, and outgoing text cut to Discord's
limit.

Pure: no network, no clock. The adapter downloads the attachments this module names and
builds the Inbound from the result.

Who a message is for (`to_bot`): every DM; in a guild, a message that @mentions the bot
(or the bot's own role) or replies to one of its messages. Every other guild message
the bot can read is passed on with to_bot=False, to be remembered but not answered;
Discord hands a bot the words of such messages only with the privileged Message Content
intent (without it they arrive empty and are dropped here). Messages of other bots are
remembered, never answered (two bots must not talk forever). System messages (joins,
pins, boosts) are not ours.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import discord

from bots import incoming
from bots.textsplit import split_text
from brain.messages import ChatRef, PersonRef

# Discord's limit on a message's content (characters; counted here in UTF-16 units,
# which is never fewer).
TEXT_LIMIT = 2000

# Attachment flag and message flag of a voice message.
IS_VOICE_MESSAGE = 1 << 13

# The message types that carry what a person said.
_SPOKEN = (discord.MessageType.default, discord.MessageType.reply)

_AUDIO_EXTENSIONS = (".ogg", ".oga", ".opus", ".mp3", ".m4a", ".wav", ".webm", ".flac", ".aac")
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


@dataclass(frozen=True, kw_only=True)
class BotIdentity:
    """Who the bot is (from the login)."""

    id: int
    name: str


@dataclass(frozen=True, kw_only=True)
class AttachmentRef:
    """A file of a message, to be downloaded before the brain sees it."""

    kind: Literal["voice", "image"]
    url: str
    filename: str
    mime: str
    size_bytes: int
    duration_s: float = 0.0
    width: int | None = None
    height: int | None = None
    attachment: discord.Attachment | None = None  # the library's handle, to download with


class Incoming(incoming.Incoming[AttachmentRef]):
    """A Discord message read into tomo's terms, its attachments not yet downloaded."""


def person_of(user: discord.User | discord.Member) -> PersonRef:
    name = user.display_name.strip() or user.name or str(user.id)
    return PersonRef(platform="discord", user_id=str(user.id), display_name=name)


def chat_of(channel: discord.abc.Messageable | discord.abc.GuildChannel | object) -> ChatRef:
    """DMs (and group DMs) are DMs; guild channels and threads are groups."""
    is_dm = isinstance(channel, discord.DMChannel | discord.GroupChannel) or (
        isinstance(channel, discord.PartialMessageable) and channel.guild_id is None
    )
    chat_id = getattr(channel, "id", None)
    return ChatRef(platform="discord", chat_id=str(chat_id), kind="dm" if is_dm else "group")


def read_message(message: discord.Message, *, me: BotIdentity) -> Incoming | None:
    """`message` in tomo's terms, or None when it is not for tomo at all (the bot's own
    message, a webhook's, a system message, or nothing to read, hear or look at).
    InputError for a message whose fields are not what Discord documents (discord.py
    does not check them, and leaves out an attribute whose payload it could not read)."""
    with incoming.reading("Discord"):
        return _read_message(message, me=me)


def _read_message(message: discord.Message, *, me: BotIdentity) -> Incoming | None:
    author = message.author
    if author.id == me.id or message.webhook_id is not None or message.type not in _SPOKEN:
        return None
    chat = chat_of(message.channel)
    mentioned = any(user.id == me.id for user in message.mentions) or _role_mentioned(message)
    to_bot = not author.bot and (chat.kind == "dm" or mentioned or _replies_to(message, me))
    text = clean_text(
        strip_leading_mention(message.content, bot_id=me.id),
        users={u.id: u.display_name for u in message.mentions},
        roles={r.id: r.name for r in message.role_mentions},
        channels={c.id: c.name for c in message.channel_mentions if hasattr(c, "name")},
    )
    media = media_of(message.attachments)
    if not text.strip() and not media:
        return None
    reference = message.reference
    return Incoming(
        id=str(message.id),
        chat=chat,
        author=person_of(author),
        text=text,
        media=media,
        to_bot=to_bot,
        reply_to=str(reference.message_id) if reference and reference.message_id else None,
        sent_at=message.created_at,
    )


def _replies_to(message: discord.Message, me: BotIdentity) -> bool:
    reference = message.reference
    if reference is None:
        return False
    replied = reference.resolved or reference.cached_message
    return isinstance(replied, discord.Message) and replied.author.id == me.id


def _role_mentioned(message: discord.Message) -> bool:
    """Mentioning the bot's managed role (what Discord's autocomplete often picks)."""
    guild = message.guild
    own = guild.self_role if guild is not None else None
    return own is not None and any(role.id == own.id for role in message.role_mentions)


_LEADING_MENTION = "^\\s*<@!?{id}>[\\s,:;.!-]*"


def strip_leading_mention(content: str, *, bot_id: int) -> str:
    """`<@bot> hi` -> `hi` (and `<@bot> /memory list` -> `/memory list`)."""
    return re.sub(_LEADING_MENTION.format(id=bot_id), "", content, count=1)


_MENTION = re.compile(r"<(@!?|@&|#)(\d{15,20})>")


def clean_text(
    content: str,
    *,
    users: Mapping[int, str],
    roles: Mapping[int, str],
    channels: Mapping[int, str],
) -> str:
    """Mentions as people read them: `<@123>` -> `@Alice`, `<#456>` -> `#general`
    (ids nobody named are left as they are)."""

    def name(match: re.Match[str]) -> str:
        kind, ident = match.group(1), int(match.group(2))
        table, sign = (
            (channels, "#") if kind == "#" else (roles, "@") if kind == "@&" else (users, "@")
        )
        found = table.get(ident)
        return f"{sign}{found}" if found else match.group(0)

    return _MENTION.sub(name, content)


def media_of(attachments: Sequence[discord.Attachment]) -> tuple[AttachmentRef, ...]:
    """The files tomo keeps: voice messages and audio files (heard by the brain) and
    images (kept with the message). Other files are not read."""
    found: list[AttachmentRef] = []
    for attachment in attachments:
        kind = attachment_kind(
            content_type=attachment.content_type,
            filename=attachment.filename,
            voice=attachment.is_voice_message(),
        )
        if kind is None:
            continue
        mime = (attachment.content_type or "").split(";")[0].strip() or _guess_mime(
            attachment.filename, kind=kind
        )
        found.append(
            AttachmentRef(
                kind=kind,
                url=attachment.url,
                filename=attachment.filename,
                mime=mime,
                size_bytes=attachment.size,
                duration_s=float(attachment.duration or 0.0),
                width=attachment.width,
                height=attachment.height,
                attachment=attachment,
            )
        )
    return tuple(found)


def attachment_kind(
    *, content_type: str | None, filename: str, voice: bool
) -> Literal["voice", "image"] | None:
    ctype = (content_type or "").lower()
    name = filename.lower()
    if voice or ctype.startswith("audio/") or name.endswith(_AUDIO_EXTENSIONS):
        return "voice"
    if ctype.startswith("image/") or (not ctype and name.endswith(_IMAGE_EXTENSIONS)):
        return "image"
    return None


def _guess_mime(filename: str, *, kind: str) -> str:
    ext = filename.lower().rsplit(".", 1)[-1] if "." in filename else ""
    table = {
        "ogg": "audio/ogg",
        "oga": "audio/ogg",
        "opus": "audio/ogg",
        "mp3": "audio/mpeg",
        "m4a": "audio/mp4",
        "wav": "audio/wav",
        "webm": "audio/webm",
        "flac": "audio/flac",
        "aac": "audio/aac",
        "png": "image/png",
        "jpg": "image/jpeg",
        "jpeg": "image/jpeg",
        "webp": "image/webp",
        "gif": "image/gif",
    }
    return table.get(ext, "audio/ogg" if kind == "voice" else "image/png")


# slash commands --------------------------------------------------------------------------


def command_text(name: str, *args: str | int | None) -> str:
    """A slash command as the text command the brain reads: ("memory", "show", 12) ->
    "/memory show 12". Free text is quoted when it holds spaces or quotes (the brain
    splits arguments like a shell)."""
    words = [f"/{name}"]
    for arg in args:
        if arg is None:
            continue
        word = str(arg).strip()
        if not word:
            continue
        if any(c.isspace() or c in "\"'\\" for c in word):
            word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
        words.append(word)
    return " ".join(words)


FORGET_PREFIX = "tomo:forget:"


def forget_target(answer: str) -> str | None:
    """The memory (an id, or "all") a `/memory forget` preview asks to confirm."""
    found = re.search(r"/memory forget (all|\d+) confirm", answer)
    return found.group(1) if found else None


# outgoing ---------------------------------------------------------------------------------


def pieces(text: str) -> list[str]:
    """`text` cut to Discord's message limit at paragraph, line, sentence or word breaks."""
    return split_text(text, limit=TEXT_LIMIT)


__all__ = [
    "FORGET_PREFIX",
    "IS_VOICE_MESSAGE",
    "TEXT_LIMIT",
    "AttachmentRef",
    "BotIdentity",
    "Incoming",
    "attachment_kind",
    "chat_of",
    "clean_text",
    "command_text",
    "forget_target",
    "media_of",
    "person_of",
    "pieces",
    "read_message",
    "strip_leading_mention",
]
