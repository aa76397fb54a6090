"""The avatar's parts and how each emotion composes them into one SVG document.

Every part is an SVG file in `brain/avatar/parts/` drawn on the same 512x512 canvas, so
parts line up by construction and each file can be opened on its own. A part has an
`art` group and may have a `halo` group: the white die-cut border of a sticker. The
composer draws every halo first and then every art group in z-order, so one continuous
white border runs around the body, arms, accessories and floating marks together.
"""

from __future__ import annotations

import functools
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

CANVAS = 512
SVG_NS = "http://www.w3.org/2000/svg"

# Accessories in the order they are drawn (the turtle sits under the bow and the flower).
ACCESSORIES: tuple[str, ...] = ("turtle", "ribbon", "flower")
ACCESSORY_USAGE = "accessories: turtle, ribbon, flower, none"


@dataclass(frozen=True, slots=True)
class Look:
    """The parts of one emotion by layer: behind the body, on the face, in front, around."""

    behind: tuple[str, ...]
    face: tuple[str, ...]
    front: tuple[str, ...] = ()
    around: tuple[str, ...] = ()


_ARMS = ("arm-left", "arm-right")

LOOKS: dict[str, Look] = {
    "neutral": Look(_ARMS, ("blush", "eyes-open", "mouth-smile")),
    "happy": Look(_ARMS, ("blush", "eyes-happy", "mouth-grin")),
    "excited": Look(("arms-up",), ("blush", "eyes-star", "mouth-shout"), around=("sparkles",)),
    "sad": Look(_ARMS, ("eyes-teary", "brows-worried", "mouth-wobble"), front=("tears",)),
    "angry": Look(
        _ARMS, ("flush-angry", "eyes-angry", "brows-angry", "mouth-growl"), around=("anger",)
    ),
    "surprised": Look(
        (), ("eyes-wide", "brows-raised", "mouth-o"), front=("hands-cheeks",), around=("exclaim",)
    ),
    "shy": Look(
        (),
        ("blush-strong", "eyes-squeeze", "brows-soft", "mouth-wavy"),
        front=("paws-together",),
        around=("sweat",),
    ),
    "thinking": Look(
        ("arm-left",),
        ("eyes-side", "brows-quizzical", "mouth-hmm"),
        front=("hand-chin",),
        around=("question",),
    ),
    "sleepy": Look(_ARMS, ("blush", "eyes-closed", "mouth-snooze"), around=("zzz",)),
    "love": Look(_ARMS, ("blush-strong", "eyes-heart", "mouth-cat"), around=("hearts",)),
}


@dataclass(frozen=True, slots=True)
class Part:
    """One part file, as the SVG text of its halo group (may be empty) and its art group."""

    name: str
    halo: str
    art: str


def part_names() -> tuple[str, ...]:
    """Every part file shipped in the package, by name (file name without `.svg`)."""
    folder = resources.files("brain.avatar").joinpath("parts")
    return tuple(
        sorted(p.name.removesuffix(".svg") for p in folder.iterdir() if p.name.endswith(".svg"))
    )


@functools.cache
def load_part(name: str) -> Part:
    """Read and split one part file (cached: the files ship with the package)."""
    text = resources.files("brain.avatar").joinpath("parts", f"{name}.svg").read_text("utf-8")
    root = ET.fromstring(text)
    groups: dict[str, str] = {}
    for element in root.iter():
        element.tag = element.tag.rpartition("}")[2]  # drop the namespace: no ns0: prefixes
    for group in root.findall("g"):
        role = group.attrib.pop("id", "")
        if role in ("halo", "art"):
            groups[role] = ET.tostring(group, encoding="unicode")
    if "art" not in groups:
        raise ValueError(f"avatar part {name}.svg has no <g id='art'> group")
    return Part(name=name, halo=groups.get("halo", ""), art=groups["art"])


def layers(emotion: str, accessories: Sequence[str]) -> tuple[str, ...]:
    """The part names of one composition, bottom to top."""
    look = LOOKS[emotion]
    worn = tuple(f"acc-{a}" for a in ACCESSORIES if a in accessories)
    return (*look.behind, "body", "face", *look.face, *look.front, *worn, *look.around)


@functools.lru_cache(maxsize=128)
def compose_svg(emotion: str, accessories: tuple[str, ...]) -> bytes:
    """One SVG document (512x512 user units) of the avatar showing `emotion`."""
    parts = [load_part(name) for name in layers(emotion, accessories)]
    body = "".join(p.halo for p in parts) + "".join(p.art for p in parts)
    return (
        f'<svg xmlns="{SVG_NS}" viewBox="0 0 {CANVAS} {CANVAS}" '
        f'width="{CANVAS}" height="{CANVAS}">{body}</svg>'
    ).encode()
