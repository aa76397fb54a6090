"""CQ codes: OneBot v11's string form of a message, read into the segment array form.

`hi [CQ:at,qq=123] look [CQ:image,file=a.jpg,url=https://x/a.jpg?a=1&amp;b=2]` is the
same message as `[{"type": "text", ...}, {"type": "at", "data": {"qq": "123"}}, ...]`.
Outside a code `&`, `[` and `]` are escaped (`&amp;`, `&#91;`, `&#93;`); inside one, `,`
too (`&#44;`). Pure: no network.
"""

from __future__ import annotations

import re
from typing import Any

JSON = dict[str, Any]

_CODE = re.compile(r"\[CQ:([A-Za-z0-9_.\-]+)((?:,[^\]]*)?)\]")
_UNESCAPES = (("&#44;", ","), ("&#91;", "["), ("&#93;", "]"), ("&amp;", "&"))


def unescape(text: str) -> str:
    """The text a CQ string or a CQ parameter stands for (`&amp;` last, so that an
    escaped escape such as `&amp;#91;` stays `&#91;`)."""
    for escaped, plain in _UNESCAPES:
        text = text.replace(escaped, plain)
    return text


def escape(text: str, *, in_code: bool = False) -> str:
    """`text` safe to put into a CQ string (`in_code`: as a parameter value)."""
    text = text.replace("&", "&amp;").replace("[", "&#91;").replace("]", "&#93;")
    return text.replace(",", "&#44;") if in_code else text


def parse(message: str) -> list[JSON]:
    """A CQ string -> OneBot segments (`{"type": ..., "data": {...}}`), in order."""
    segments: list[JSON] = []
    pos = 0
    for match in _CODE.finditer(message):
        if match.start() > pos:
            segments.append(_text(message[pos : match.start()]))
        data: dict[str, str] = {}
        for pair in match.group(2).split(",")[1:]:
            key, sep, value = pair.partition("=")
            if sep and key:
                data[key.strip()] = unescape(value)
        segments.append({"type": match.group(1), "data": data})
        pos = match.end()
    if pos < len(message):
        segments.append(_text(message[pos:]))
    return segments


def _text(raw: str) -> JSON:
    return {"type": "text", "data": {"text": unescape(raw)}}


def to_segments(message: object) -> list[JSON]:
    """A message as OneBot sends it (segment array, one segment, or CQ string) -> a
    clean segment array: every segment a dict with a string `type` and a `data` dict of
    strings. Anything else is dropped."""
    if isinstance(message, str):
        return parse(message)
    if isinstance(message, dict):
        message = [message]
    if not isinstance(message, list):
        return []
    segments: list[JSON] = []
    for item in message:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str):
            continue
        raw = item.get("data")
        data = (
            {str(k): "" if v is None else str(v) for k, v in raw.items()}
            if isinstance(raw, dict)
            else {}
        )
        segments.append({"type": item["type"], "data": data})
    return segments
