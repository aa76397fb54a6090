"""Short captions drawn in the bottom band of a sticker: white text with a dark outline.

The font must cover Chinese and Japanese, so the first choice is WenQuanYi Micro Hei
(Debian `fonts-wqy-microhei`, which `make` installs); without it Pillow's built-in font
is used, which draws Latin text only. Layout is Pillow's basic engine: no shaping is
needed for CJK or Latin, and it measures text about twenty times faster than raqm.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

CJK_FONTS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
)
MAX_CAPTION_CHARS = 40
ELLIPSIS = "…"
TEXT_FILL = "#ffffff"
TEXT_OUTLINE = "#4a3448"
# The caption band is the bottom fifth of the sticker; the avatar shrinks into the rest.
BAND = 0.2

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
# FreeType faces are shared between render threads; drawing with one is not thread-safe.
_draw_lock = threading.Lock()


def clean_caption(text: str | None) -> str | None:
    """`text` on one line with runs of spaces collapsed; None when nothing is left.

    Captions longer than MAX_CAPTION_CHARS are cut and end with an ellipsis.
    """
    if text is None:
        return None
    flat = " ".join(text.split())
    if not flat:
        return None
    if len(flat) > MAX_CAPTION_CHARS:
        cut = flat[: MAX_CAPTION_CHARS - 1]
        space = cut.rfind(" ")
        if space >= MAX_CAPTION_CHARS * 2 // 3:  # end on a whole word when one is close
            cut = cut[:space]
        flat = cut.rstrip() + ELLIPSIS
    return flat


def find_font(candidates: Sequence[Path] = CJK_FONTS) -> Path | None:
    """The first installed font of `candidates`, or None (Pillow's own font is used)."""
    return next((p for p in candidates if p.is_file()), None)


@functools.lru_cache(maxsize=32)
def load_font(path: Path | None, size: int) -> Font:
    """A font at `size` pixels, from `path` or Pillow's built-in font when `path` is None."""
    if path is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)
    except OSError as exc:
        log.warning("caption font %s unusable (%s); using Pillow's built-in font", path, exc)
        return ImageFont.load_default(size=size)


def _width(font: Font, text: str) -> float:
    return float(font.getlength(text))


def _best_split(font: Font, text: str) -> tuple[str, str]:
    """Two lines of about equal width: at a space where there is one, else anywhere."""
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    cuts = spaces or list(range(1, len(text)))
    best = min(
        cuts,
        key=lambda i: max(_width(font, text[:i]), _width(font, text[i:].lstrip())),
    )
    return text[:best].rstrip(), text[best:].lstrip()


def layout_caption(text: str, *, size: int, font_path: Path | None) -> tuple[list[str], Font]:
    """The lines of `text` and the font size that fits them into the band of a `size` sticker."""
    reference = load_font(font_path, 100)
    max_width = size * 0.92
    one_line = int(100 * max_width / max(_width(reference, text), 1.0))
    if one_line >= size * 0.07 or len(text) < 2:
        return [text], load_font(font_path, max(8, min(one_line, round(size * 0.11))))
    lines = list(_best_split(reference, text))
    widest = max(_width(reference, line) for line in lines)
    two_lines = int(100 * max_width / max(widest, 1.0))
    return lines, load_font(font_path, max(8, min(two_lines, round(size * 0.075))))


def draw_caption(image: Image.Image, text: str, *, font_path: Path | None) -> None:
    """Draw `text` centred in the bottom band of `image` (square, RGBA), in place.

    White letters, a dark outline, and around that the same white border the avatar
    has, so the caption reads on light and dark chat backgrounds alike.
    """
    size = image.width
    lines, font = layout_caption(text, size=size, font_path=font_path)
    font_px = font.size if isinstance(font, ImageFont.FreeTypeFont) else size * 0.06
    outline = max(1, round(font_px * 0.09))
    border = outline + max(1, round(font_px * 0.08))
    line_height = font_px * 1.18
    centre = size * (1 - BAND / 2) - size * 0.01
    first = centre - line_height * (len(lines) - 1) / 2
    with _draw_lock:
        draw = ImageDraw.Draw(image)
        for stroke, colour in ((border, TEXT_FILL), (outline, TEXT_OUTLINE)):
            for i, line in enumerate(lines):
                draw.text(
                    (size / 2, first + i * line_height),
                    line,
                    font=font,
                    fill=TEXT_FILL,
                    stroke_width=stroke,
                    stroke_fill=colour,
                    anchor="mm",
                )
