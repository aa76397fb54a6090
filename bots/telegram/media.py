"""Files in (getFile + download into the blob store) and the media types Telegram wants out.

Telegram's own voice notes are OGG/Opus, which is what the brain speaks, and sticker
renders are 512px WEBP, which is what sendSticker takes: no transcoding is needed here.
"""

from __future__ import annotations

import logging

from telegram import Bot
from telegram.error import TelegramError

from bots.downloads import MediaUnavailableError, check_size
from bots.telegram.translate import MediaRef
from brain.messages import Image, Segment, Sticker, Voice
from brain.ports import BlobStore

log = logging.getLogger(__name__)

# The public Bot API hands out files up to 20 MB (a local Bot API server: more).
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024


async def fetch(
    bot: Bot, ref: MediaRef, *, blobs: BlobStore, max_bytes: int = MAX_DOWNLOAD_BYTES
) -> Segment:
    """Download the file `ref` names into `blobs`; its segment for the Inbound."""
    check_size(ref.kind, ref.size_bytes, max_bytes=max_bytes)
    try:
        file = await bot.get_file(ref.file_id)
        data = bytes(await file.download_as_bytearray())
    except (TelegramError, RuntimeError) as exc:
        # The message of a download error never carries the file URL (it holds the token).
        log.warning("could not fetch a %s from Telegram: %s", ref.kind, type(exc).__name__)
        raise MediaUnavailableError(f"Telegram did not hand over the {ref.kind}") from None
    check_size(ref.kind, len(data), max_bytes=max_bytes)
    key = await blobs.put(data, mime=ref.mime)
    if ref.kind == "voice":
        return Voice(blob_key=key, mime=ref.mime, duration_s=max(ref.duration_s, 0.0))
    if ref.kind == "image":
        return Image(
            blob_key=key, mime=ref.mime, size_bytes=len(data), width=ref.width, height=ref.height
        )
    return Sticker(blob_key=key, mime=ref.mime, size_bytes=len(data), emotion=ref.emoji)
