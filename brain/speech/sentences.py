"""Cut a reply into sentences for text to speech, whole or while it streams.

Speaking sentence by sentence lets the first words play while the model is still writing
the rest, and keeps each synthesis call short. Sentences end at . ! ? … (followed by a
space or the end) and at the CJK marks 。！？ (no space needed), keeping the punctuation
and any closing quotes; line breaks end a sentence too. A period after a title such as
"Dr." or an initial, or before a lower-case word ("e.g. this"), ends nothing. Pieces
shorter than `min_chars` are joined to the next one; pieces longer than `max_chars` are cut
at a comma, then at a space, then anywhere.
"""

from __future__ import annotations

import re

_ENDERS = ".!?…‽"
_CJK_ENDERS = "。！？｡"
_CLOSERS = "\"'”’)]}」』）】》"
_SOFT_BREAKS = ",;:，、；："
# Lower-case words that, followed by a period, are a title or a short form, not an end.
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs no fig approx dept est gen gov lt col sgt capt "
    "e.g i.e cf ca jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_INITIALS = re.compile(r"(?:[A-Z]\.)*[A-Z]")
_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uac00-\ud7af\uff00-\uffef]")

DEFAULT_MAX_CHARS = 300
DEFAULT_MIN_CHARS = 12


def _is_abbreviation(text: str, dot: int) -> bool:
    """Whether the period at `dot` closes a title, a short form or an initial."""
    match = _WORD_BEFORE.search(text, max(0, dot - 24), dot)
    if match is None:
        return False
    word = match.group(1)
    if word.lower() in _ABBREVIATIONS:
        return True
    return word != "I" and _INITIALS.fullmatch(word) is not None


def _boundaries(text: str, *, final: bool) -> list[int]:
    """End offsets of the sentences in `text`.

    With `final` false (text still streaming) a boundary counts only once the next
    sentence has visibly begun, since the characters after a stop decide whether it is
    one ("Dr. Smith", "3.5", "e.g. this").
    """
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            ends.append(i + 1)
            i += 1
            continue
        if char not in _ENDERS and char not in _CJK_ENDERS:
            i += 1
            continue
        j = i + 1
        while j < n and (text[j] in _ENDERS or text[j] in _CJK_ENDERS):
            j += 1
        while j < n and text[j] in _CLOSERS:
            j += 1
        rest = j
        while rest < n and text[rest].isspace() and text[rest] != "\n":
            rest += 1
        if rest == n and not final:
            break  # what follows decides; wait for more text
        cjk = char in _CJK_ENDERS or text[j - 1] in _CJK_ENDERS
        if cjk or j == n or text[j].isspace():
            stops = text[i:j].rstrip(_CLOSERS)
            lower_next = rest < n and text[rest].islower()
            short_form = stops == "." and _is_abbreviation(text, i)
            trails_on = stops in {".", "…", "..."} and lower_next
            if cjk or not (short_form or trails_on):
                ends.append(j)
        i = j
    if final and (not ends or ends[-1] < n):
        ends.append(n)
    return ends


def _pieces(text: str, ends: list[int]) -> list[str]:
    out: list[str] = []
    start = 0
    for end in ends:
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    return out


def _join(left: str, right: str) -> str:
    """Two pieces as one: CJK text runs on without a space."""
    if _CJK.match(left[-1]) or _CJK.match(right[0]):
        return left + right
    return f"{left} {right}"


def _cut_point(text: str, max_chars: int) -> tuple[int, int]:
    """Where to cut `text` (longer than `max_chars`): the head's end and the tail's start.

    At the last comma-like mark that keeps the head within `max_chars`, else the last
    space, else at `max_chars` itself.
    """
    at = max(text.rfind(mark, 0, max_chars) for mark in _SOFT_BREAKS)
    if at > 0:
        return at + 1, at + 1
    at = text.rfind(" ", 0, max_chars + 1)
    if at > 0:
        return at, at + 1
    return max_chars, max_chars


def _cut(piece: str, max_chars: int) -> list[str]:
    """`piece` in parts no longer than `max_chars`."""
    out: list[str] = []
    while len(piece) > max_chars:
        head_end, tail_start = _cut_point(piece, max_chars)
        head = piece[:head_end].strip()
        if head:
            out.append(head)
        piece = piece[tail_start:].strip()
    if piece:
        out.append(piece)
    return out


def _shape(pieces: list[str], *, min_chars: int, max_chars: int) -> list[str]:
    """Cut pieces over `max_chars`, then join those under `min_chars` to the next one."""
    merged: list[str] = []
    carry = ""
    for piece in (part for whole in pieces for part in _cut(whole, max_chars)):
        if carry:
            joined = _join(carry, piece)
            if len(joined) <= max_chars:
                piece = joined
            else:
                merged.append(carry)
        carry = ""
        if len(piece) < min_chars:
            carry = piece
        else:
            merged.append(piece)
    if carry:
        merged.append(carry)  # alone: a stream cannot join it to what was already spoken
    return merged


def split_sentences(
    text: str, *, max_chars: int = DEFAULT_MAX_CHARS, min_chars: int = DEFAULT_MIN_CHARS
) -> list[str]:
    """`text` as a list of sentences to speak one by one (empty for blank text)."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    pieces = _pieces(text, _boundaries(text, final=True))
    return _shape(pieces, min_chars=min_chars, max_chars=max_chars)


class SentenceBuffer:
    """Collects a streamed reply and hands out each sentence as soon as it is complete.

    `feed` every text piece as it arrives and speak what it returns; `flush` at the end
    returns the rest. Feeding a text in any chunks and then flushing gives the same
    sentences as `split_sentences` on the whole text.
    """

    def __init__(
        self, *, max_chars: int = DEFAULT_MAX_CHARS, min_chars: int = DEFAULT_MIN_CHARS
    ) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self.max_chars = max_chars
        self.min_chars = min_chars
        self._text = ""
        self._short = ""  # a complete sentence too short to speak alone

    def feed(self, piece: str) -> list[str]:
        """Add streamed text; returns the sentences it completed (often none)."""
        self._text += piece
        ends = _boundaries(self._text, final=False)
        done = ends[-1] if ends else 0
        pieces = _pieces(self._text, ends)
        rest = self._text[done:].lstrip()
        while len(rest) > self.max_chars:
            # No end in sight: speak what fits, keep the rest (with its spaces) for later.
            head_end, tail_start = _cut_point(rest, self.max_chars)
            pieces.append(rest[:head_end].strip())
            rest = rest[tail_start:].lstrip()
        self._text = rest
        if self._short:
            pieces.insert(0, self._short)
            self._short = ""
        if not pieces:
            return []
        shaped = _shape(pieces, min_chars=self.min_chars, max_chars=self.max_chars)
        if len(shaped[-1]) < self.min_chars:
            self._short = shaped.pop()
        return shaped

    def flush(self) -> list[str]:
        """The sentences left once the stream has ended; the buffer is then empty."""
        pieces = _pieces(self._text, _boundaries(self._text, final=True))
        if self._short:
            pieces.insert(0, self._short)
        self._text, self._short = "", ""
        return _shape(pieces, min_chars=self.min_chars, max_chars=self.max_chars)


__all__ = ["SentenceBuffer", "split_sentences"]
