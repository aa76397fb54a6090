"""Attachments in (downloaded into the blob store) and the checks of media going out.

Discord's voice messages are OGG/Opus, which is what the brain hears and speaks, and
sticker renders are 512px WEBP, which Discord shows inline as an image: no transcoding
is needed here. Other audio (an MP3, an M4A) is kept as it is; the brain decodes it.
"""

from __future__ import annotations

import logging

import aiohttp
import discord

from bots.discord.translate import AttachmentRef
from bots.downloads import MediaUnavailableError, check_size
from brain.messages import Image, Segment, Voice
from brain.ports import BlobStore

log = logging.getLogger(__name__)

# Discord's upload limit without boosts is 10 MB (boosted guilds: more); voice notes and
# photos are far smaller. Larger files are not downloaded.
MAX_DOWNLOAD_BYTES = 25 * 1024 * 1024


async def fetch(
    ref: AttachmentRef, *, blobs: BlobStore, max_bytes: int = MAX_DOWNLOAD_BYTES
) -> Segment:
    """Download the attachment `ref` names into `blobs`; its segment for the Inbound."""
    check_size(ref.kind, ref.size_bytes, max_bytes=max_bytes)
    if ref.attachment is None:
        raise MediaUnavailableError(f"the {ref.kind} has no download address")
    try:
        data = await ref.attachment.read()
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        log.warning("could not fetch a %s from Discord: %s", ref.kind, type(exc).__name__)
        raise MediaUnavailableError(f"Discord did not hand over the {ref.kind}") from None
    check_size(ref.kind, len(data), max_bytes=max_bytes)
    key = await blobs.put(data, mime=ref.mime)
    if ref.kind == "voice":
        return Voice(blob_key=key, mime=ref.mime, duration_s=max(ref.duration_s, 0.0))
    return Image(
        blob_key=key, mime=ref.mime, size_bytes=len(data), width=ref.width, height=ref.height
    )
