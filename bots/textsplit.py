"""Long text cut into messages a platform takes, at the most natural break that fits.

Shared by the platform adapters (each passes its own limit). Lengths are counted in
UTF-16 code units (how Telegram counts, and never fewer than Discord's characters).
"""

from __future__ import annotations

import re


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


_BREAKS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n\s*\n"),  # paragraphs
    re.compile(r"\n"),  # lines
    re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])"),  # sentences
    re.compile(r"\s+"),  # words
)


def split_text(text: str, *, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` UTF-16 units, cut at the last paragraph, line,
    sentence or word break that fits (a hard cut only inside a very long word)."""
    pieces: list[str] = []
    rest = text.strip()
    while rest:
        if utf16_len(rest) <= limit:
            pieces.append(rest)
            break
        fit = _fitting_prefix(rest, limit)
        cut = _last_break(rest[:fit], floor=fit // 3)
        head, tail = (rest[: cut[0]], rest[cut[1] :]) if cut else (rest[:fit], rest[fit:])
        if head.strip():
            pieces.append(head.rstrip())
        rest = tail.strip()
    return pieces


def _fitting_prefix(text: str, limit: int) -> int:
    """The number of characters of `text` that fit in `limit` UTF-16 units."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            return max(i, 1)
    return len(text)


def _last_break(window: str, *, floor: int) -> tuple[int, int] | None:
    """(end of the head, start of the tail) at the best break in `window` past `floor`."""
    for pattern in _BREAKS:
        last: tuple[int, int] | None = None
        for match in pattern.finditer(window):
            if match.start() >= floor:
                last = (match.start(), match.end())
        if last is not None:
            return last
    return None
