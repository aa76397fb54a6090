"""The contract between platforms and the brain: one Inbound type, one Reply type.

Both are frozen pydantic models that round-trip through JSON unchanged, so they can
cross a Redis stream as they are. Media bytes never travel inside them: Voice, Image,
Sticker and Document segments carry a key into the BlobStore.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

Platform = Literal["discord", "telegram", "qq", "console"]


def _valid_utf8(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"text is not valid UTF-8 (undecodable character at position {exc.start})"
        ) from None
    if "\x00" in value:
        raise ValueError("text contains a NUL character")
    return value


Utf8Str = Annotated[str, AfterValidator(_valid_utf8)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ChatRef(_Frozen):
    platform: Platform
    chat_id: str
    kind: Literal["dm", "group"]

    @property
    def key(self) -> str:
        """A stable string naming this chat across platforms."""
        return f"{self.platform}:{self.chat_id}"


class PersonRef(_Frozen):
    platform: str
    user_id: str
    display_name: Utf8Str


class Text(_Frozen):
    kind: Literal["text"] = "text"
    text: Utf8Str


class Mention(_Frozen):
    kind: Literal["mention"] = "mention"
    user_id: str
    display_name: str = ""


class Voice(_Frozen):
    kind: Literal["voice"] = "voice"
    blob_key: str
    mime: str = "audio/ogg"
    duration_s: float = Field(ge=0)
    transcript: Utf8Str | None = None
    # Discord's voice-message waveform: 256 amplitude bytes, base64 (set on replies).
    waveform: str | None = None


class Image(_Frozen):
    kind: Literal["image"] = "image"
    blob_key: str
    mime: str = "image/png"
    size_bytes: int = Field(ge=0)
    width: int | None = None
    height: int | None = None


class Sticker(_Frozen):
    kind: Literal["sticker"] = "sticker"
    blob_key: str
    mime: str = "image/webp"
    size_bytes: int = Field(ge=0)
    emotion: str | None = None


class Document(_Frozen):
    """A file to hand over as it is (an export, an attachment), by its BlobStore key.

    The adapter that delivers it deletes the blob afterwards: an export must not outlive
    a later `/memory forget all` in the blob store.
    """

    kind: Literal["document"] = "document"
    blob_key: str
    mime: str = "application/octet-stream"
    filename: Utf8Str = Field(min_length=1)
    size_bytes: int = Field(ge=0)


Segment = Annotated[
    Text | Mention | Voice | Image | Sticker | Document, Field(discriminator="kind")
]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetimes must be timezone-aware (UTC)")
    return value


class Inbound(_Frozen):
    id: str = Field(min_length=1)
    chat: ChatRef
    author: PersonRef
    segments: tuple[Segment, ...]
    to_bot: bool
    reply_to: str | None = None
    sent_at: datetime

    _check_sent_at = field_validator("sent_at")(_utc)

    @property
    def text(self) -> str:
        """The message as plain text: text segments, then voice transcripts."""
        parts: list[str] = []
        for seg in self.segments:
            if isinstance(seg, Text):
                parts.append(seg.text)
            elif isinstance(seg, Voice) and seg.transcript:
                parts.append(seg.transcript)
        return " ".join(p for p in parts if p)

    @property
    def is_blank(self) -> bool:
        """True when there is nothing to read, hear or look at."""
        has_media = any(isinstance(s, Voice | Image | Sticker | Document) for s in self.segments)
        return not has_media and not self.text.strip()


class Reply(_Frozen):
    chat: ChatRef
    segments: tuple[Segment, ...]
    reply_to: str | None = None
    private: bool = False

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if isinstance(s, Text))
