"""AvatarRenderer: the persona's face for every emotion, as Telegram-ready stickers.

The avatar is vector art (`brain/avatar/parts/*.svg`, see `brain.avatar.parts`): one SVG
document per emotion and accessory set, rasterised by cairosvg straight into a Pillow
image (no PNG round trip), optionally captioned, and saved as a WEBP with a
transparent background (Telegram's static sticker format: 512x512 WEBP).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import io
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from brain.avatar.caption import BAND, clean_caption, draw_caption, find_font
from brain.avatar.emotions import EMOTIONS, normalize_emotion
from brain.avatar.parts import ACCESSORIES, ACCESSORY_USAGE, compose_svg
from brain.errors import ConfigError, InputError

STICKER_SIZE = 512
MIN_SIZE = 32
MAX_SIZE = 2048
# Lossy WEBP at quality 90 with a lossless alpha plane: indistinguishable from the vector
# art, 18-32 KB at 512 px, about 20 ms to encode. Lossless is 25-58 KB and, at the same
# speed, only with the fastest settings (55-90 KB); its time also swings with the content.
WEBP_OPTIONS: dict[str, Any] = {"quality": 90, "method": 2, "alpha_quality": 100}

EMOTION_USAGE = "emotions: " + ", ".join(EMOTIONS)

StickerKey = tuple[str, tuple[str, ...], int, str | None]


def resolve_emotion(name: str) -> str:
    """The emotion `name` stands for (case and common synonyms are forgiven)."""
    emotion = normalize_emotion(name) if isinstance(name, str) else None
    if emotion is None:
        raise InputError(f"Unknown emotion {name!r}. {EMOTION_USAGE}")
    return emotion


def resolve_accessories(names: Sequence[str]) -> tuple[str, ...]:
    """`names` checked and put in drawing order; "none" (or nothing) means no accessory."""
    if isinstance(names, str):  # one name passed bare: ("turtle",), not ("t", "u", ...)
        names = (names,)
    wanted: set[str] = set()
    for name in names:
        key = name.strip().lower() if isinstance(name, str) else ""
        if key in ("none", ""):
            continue
        if key not in ACCESSORIES:
            raise InputError(f"Unknown accessory {name!r}. {ACCESSORY_USAGE}")
        wanted.add(key)
    return tuple(a for a in ACCESSORIES if a in wanted)


def _cairosvg() -> tuple[Any, Any]:
    """cairosvg's parser and surface modules (untyped), or a ConfigError naming libcairo2."""
    try:
        parser = importlib.import_module("cairosvg.parser")
        surface = importlib.import_module("cairosvg.surface")
    except (ImportError, OSError) as exc:
        raise ConfigError(
            "Stickers need cairosvg and the cairo library: install libcairo2 "
            f"(apt-get install libcairo2) and the cairosvg package ({exc})"
        ) from None
    return parser, surface


def rasterize(svg: bytes, px: int) -> Image.Image:
    """Render an SVG document to a px x px RGBA image (straight alpha)."""
    parser, surface = _cairosvg()
    tree = parser.Tree(bytestring=svg)
    drawn = surface.PNGSurface(tree, None, 96, output_width=px, output_height=px)
    cairo = drawn.cairo
    cairo.flush()
    # cairo's ARGB32 is premultiplied, native-endian: BGRA bytes on little-endian machines.
    return Image.frombuffer(
        "RGBA", (px, px), bytes(cairo.get_data()), "raw", "BGRa", cairo.get_stride(), 1
    )


@functools.lru_cache(maxsize=64)
def avatar_image(emotion: str, accessories: tuple[str, ...], px: int) -> Image.Image:
    """The avatar alone at px x px (cached; callers must copy before drawing on it)."""
    return rasterize(compose_svg(emotion, accessories), px)


def render_sticker(
    emotion: str,
    accessories: tuple[str, ...],
    *,
    size: int,
    caption: str | None,
    font_path: Path | None,
) -> bytes:
    """The sticker as WEBP bytes; arguments must already be checked (blocking: CPU work)."""
    if caption is None:
        image = avatar_image(emotion, accessories, size)
    else:
        # Shrink the avatar into the top of the square and write in the band below it.
        inner = round(size * (1 - BAND))
        image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        image.paste(avatar_image(emotion, accessories, inner), ((size - inner) // 2, 0))
        draw_caption(image, caption, font_path=font_path)
    out = io.BytesIO()
    image.save(out, format="WEBP", **WEBP_OPTIONS)
    return out.getvalue()


def clear_render_caches() -> None:
    """Forget the composed SVG documents and rasterised avatars (for cold-start benchmarks)."""
    compose_svg.cache_clear()
    avatar_image.cache_clear()


class AvatarRenderer:
    """Sticker renders of the avatar for every emotion (the brain's StickerRenderer).

    Renders run in a worker thread; finished stickers are kept in a bounded LRU cache
    keyed by (emotion, accessories, size, caption), so a repeated sticker costs nothing.
    """

    def __init__(self, *, cache_size: int = 256, font_path: Path | None = None) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must be 0 or more")
        self.cache_size = cache_size
        self.font_path = font_path if font_path is not None else find_font()
        self._cache: OrderedDict[StickerKey, bytes] = OrderedDict()

    @property
    def emotions(self) -> tuple[str, ...]:
        return EMOTIONS

    @property
    def accessories(self) -> tuple[str, ...]:
        return ACCESSORIES

    async def render(
        self,
        emotion: str,
        *,
        accessories: Sequence[str] = (),
        caption: str | None = None,
        size: int = STICKER_SIZE,
    ) -> bytes:
        """A size x size transparent WEBP of the avatar showing `emotion`.

        Unknown emotions and accessories raise InputError with the names that exist.
        """
        key = self._key(emotion, accessories=accessories, caption=caption, size=size)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        name, worn, px, text = key
        data = await asyncio.to_thread(
            render_sticker, name, worn, size=px, caption=text, font_path=self.font_path
        )
        if self.cache_size:
            self._cache[key] = data
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return data

    def _key(
        self, emotion: str, *, accessories: Sequence[str], caption: str | None, size: int
    ) -> StickerKey:
        if isinstance(size, bool) or not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
            raise InputError(f"A sticker is {MIN_SIZE} to {MAX_SIZE} pixels wide, not {size!r}")
        worn = resolve_accessories(accessories)
        return (resolve_emotion(emotion), worn, size, clean_caption(caption))
