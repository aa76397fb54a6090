"""Files of incoming messages, downloaded into the blob store: what every adapter checks.

A file larger than the cap is refused before the download where its size is announced,
and after it otherwise (an announced size may be missing or wrong). A file that cannot be
had is reported to the person; the rest of the message is still handled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from brain.messages import Segment

R = TypeVar("R")


class MediaUnavailableError(Exception):
    """A file of a message could not be fetched (too large, or the platform refused)."""


def check_size(what: str, size_bytes: int | None, *, max_bytes: int) -> None:
    """Refuse a file of `size_bytes` (None: not known) over `max_bytes`."""
    if size_bytes is not None and size_bytes > max_bytes:
        raise MediaUnavailableError(f"the {what} is larger than {_size(max_bytes)}")


def _size(n: int) -> str:
    return f"{n / 2**20:.3g} MB" if n >= 2**20 else f"{n / 2**10:.3g} KB"


async def fetch_all(
    refs: Iterable[R], fetch: Callable[[R], Awaitable[Segment]]
) -> tuple[list[Segment], str | None]:
    """Each of `refs` fetched in turn: the segments that came, and why the last of those
    that did not come failed (None: all came)."""
    found: list[Segment] = []
    trouble: str | None = None
    for ref in refs:
        try:
            found.append(await fetch(ref))
        except MediaUnavailableError as exc:
            trouble = str(exc)
    return found, trouble


def is_ogg_opus(data: bytes) -> bool:
    return data[:4] == b"OggS" and b"OpusHead" in data[:512]


def is_webp(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
