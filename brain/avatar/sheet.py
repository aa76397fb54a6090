"""A contact sheet of the avatar: one row per emotion, one column per accessory.

It is how a person checks the art at a glance (and at the size a chat list shows it):
`tomo sticker sheet --out sheet.png`; docs/sticker-sheet.png is one.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from brain.avatar.caption import load_font
from brain.avatar.emotions import EMOTIONS
from brain.avatar.parts import ACCESSORIES
from brain.avatar.render import AvatarRenderer

BACKGROUND = (226, 231, 238, 255)
LABEL = (74, 52, 72, 255)
COLUMNS: tuple[str, ...] = ("none", *ACCESSORIES)


async def contact_sheet(renderer: AvatarRenderer, *, cell: int = 128) -> bytes:
    """A PNG of every emotion (rows) with every accessory (columns), each `cell` px square.

    Stickers are rendered at the cell size, so the sheet shows what a small preview shows.
    """
    font = load_font(renderer.font_path, max(10, cell // 7))
    label_width = cell + cell // 4
    header = cell // 4 + 8
    width, height = label_width + cell * len(COLUMNS), header + cell * len(EMOTIONS)
    sheet = Image.new("RGBA", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for col, accessory in enumerate(COLUMNS):
        x = label_width + col * cell + cell // 2
        draw.text((x, header // 2), accessory, font=font, fill=LABEL, anchor="mm")
    for row, emotion in enumerate(EMOTIONS):
        y = header + row * cell
        draw.text((label_width - 10, y + cell // 2), emotion, font=font, fill=LABEL, anchor="rm")
        for col, accessory in enumerate(COLUMNS):
            data = await renderer.render(emotion, accessories=(accessory,), size=cell)
            with Image.open(io.BytesIO(data)) as sticker:
                sheet.alpha_composite(sticker.convert("RGBA"), (label_width + col * cell, y))
    # 256 colours (octree keeps the flat art's colours) make the PNG a fifth of the size.
    small = sheet.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()
