"""Files in (voice notes and images into the blob store) and the media types QQ wants out.

In: a `record` or `image` segment usually carries a `url` (NapCat's is an HTTP URL to
QQ's servers or its own); without one, or when the download fails, the file is asked of
the OneBot server itself (`get_record` / `get_image`), which answers with base64, a URL
or a path on its own disk (readable when tomo runs beside NapCat). Voice notes are kept
as they come (QQ's are SILK v3; the brain's codecs tell every container by its bytes),
with their length read from the file.

Out: the brain speaks OGG/Opus and draws 512px WEBP; QQ plays only SILK voice notes, and
its clients show PNG everywhere (WEBP not on every client), so both are converted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import logging
from pathlib import Path

import aiohttp
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from bots.downloads import MediaUnavailableError, check_size
from bots.qq.onebot import Caller, OneBotError
from bots.qq.translate import MediaRef
from brain.messages import Image, Segment, Voice
from brain.ports import BlobStore
from brain.speech import codecs, silk
from brain.speech.pcm import AudioError

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 30.0


async def fetch(
    ref: MediaRef,
    *,
    client: Caller,
    http: aiohttp.ClientSession,
    blobs: BlobStore,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
) -> Segment:
    """The file `ref` names, into `blobs`; its segment for the Inbound."""
    what = "voice note" if ref.kind == "voice" else "image"
    check_size(what, ref.size_bytes, max_bytes=max_bytes)
    data = _inline(ref.file)
    for where in (ref.url, ref.path):
        if data is None and where:
            data = await _load(where, http=http, max_bytes=max_bytes)
    if data is None and ref.file:
        data = await _ask(ref, client=client, http=http, max_bytes=max_bytes)
    if data is None:
        raise MediaUnavailableError(f"QQ did not hand over the {what}")
    check_size(what, len(data), max_bytes=max_bytes)
    if ref.kind == "voice":
        kind = codecs.sniff(data)
        mime = codecs.MIME_BY_CONTAINER.get(kind or "", "application/octet-stream")
        key = await blobs.put(data, mime=mime)
        return Voice(blob_key=key, mime=mime, duration_s=await _duration(data, mime=mime))
    mime, width, height = image_facts(data)
    key = await blobs.put(data, mime=mime)
    return Image(blob_key=key, mime=mime, size_bytes=len(data), width=width, height=height)


def _inline(file: str) -> bytes | None:
    if not file.startswith("base64://"):
        return None
    try:
        return base64.b64decode(file[len("base64://") :], validate=True)
    except (binascii.Error, ValueError):
        return None


async def _load(where: str, *, http: aiohttp.ClientSession, max_bytes: int) -> bytes | None:
    """A file by its URL, or by its path when the OneBot server runs on this machine."""
    if where.startswith(("http://", "https://")):
        return await _download(where, http=http, max_bytes=max_bytes)
    if where.startswith(("file://", "/")):
        return await asyncio.to_thread(_read_local, where, max_bytes)
    return _inline(where)


async def _download(url: str, *, http: aiohttp.ClientSession, max_bytes: int) -> bytes | None:
    try:
        async with http.get(
            url, timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)
        ) as response:
            if response.status != 200:
                log.warning("QQ: a media download answered HTTP %d", response.status)
                return None
            data = await response.content.read(max_bytes + 1)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("QQ: a media download failed: %s", type(exc).__name__)
        return None
    return data


async def _ask(
    ref: MediaRef, *, client: Caller, http: aiohttp.ClientSession, max_bytes: int
) -> bytes | None:
    """get_record / get_image: base64 in the answer, or a URL, or a path on disk."""
    action, params = (
        ("get_record", {"file": ref.file, "out_format": "ogg"})
        if ref.kind == "voice"
        else ("get_image", {"file": ref.file})
    )
    try:
        data = await client.call(action, params)
    except OneBotError as exc:
        log.warning("QQ: %s failed: %s", action, exc)
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("base64"), str):
        found = _inline(f"base64://{data['base64']}")
        if found is not None:
            return found
    for key in ("url", "file"):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            continue
        found = await _load(value, http=http, max_bytes=max_bytes)
        if found is not None:
            return found
    return None


def _read_local(path: str, max_bytes: int) -> bytes | None:
    if path.startswith("file://"):
        path = path[len("file://") :]
    try:
        with Path(path).open("rb") as f:
            return f.read(max_bytes + 1)
    except OSError:
        return None


async def _duration(data: bytes, *, mime: str) -> float:
    """The length the file states; else decoded (cheaply, at 8 kHz); 0 when unreadable
    (the brain then says what is wrong with it when it listens)."""

    def measure() -> float:
        try:
            stated = codecs.probe_duration(data, mime=mime)
            if stated is not None:
                return max(stated, 0.0)
            return codecs.decode(data, mime=mime, rate=8000).duration_s
        except AudioError:
            return 0.0

    return round(await asyncio.to_thread(measure), 3)


def image_facts(data: bytes) -> tuple[str, int | None, int | None]:
    """(mime, width, height) of an image, read from its header."""
    try:
        with PILImage.open(io.BytesIO(data)) as image:
            mime = PILImage.MIME.get(image.format or "", "image/jpeg")
            return mime, image.width, image.height
    except (UnidentifiedImageError, OSError, ValueError):
        return "application/octet-stream", None, None


async def silk_of(audio: bytes) -> bytes:
    """A voice reply as QQ plays it: SILK v3 (converted from OGG/Opus or anything else)."""
    if silk.is_silk(audio):
        return audio

    def convert() -> bytes:
        return codecs.encode_silk(codecs.decode(audio, rate=24000))

    return await asyncio.to_thread(convert)


async def png_of(picture: bytes) -> bytes:
    """A sticker render (WEBP) as PNG, transparency kept; as it is if it is no image."""

    def convert() -> bytes:
        try:
            with PILImage.open(io.BytesIO(picture)) as image:
                out = io.BytesIO()
                image.save(out, format="PNG", optimize=False)
                return out.getvalue()
        except (UnidentifiedImageError, OSError, ValueError):
            return picture

    return await asyncio.to_thread(convert)
