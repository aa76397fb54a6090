"""The avatar: sticker renders for every emotion and accessory, captions, the cache, and
reading an emotion or an accessory from what the model and the reply say."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image
from typer.testing import CliRunner

from bots.bench_sticker import sticker_bench
from bots.cli import app
from brain.avatar import (
    ACCESSORIES,
    EMOTIONS,
    AvatarRenderer,
    accessory_for_context,
    emotion_from_text,
    normalize_emotion,
    pick_emotion,
)
from brain.avatar.caption import MAX_CAPTION_CHARS, clean_caption, find_font
from brain.avatar.parts import LOOKS, layers, load_part, part_names
from brain.avatar.sheet import COLUMNS, contact_sheet
from brain.errors import InputError
from brain.persona.card import DEFAULT_EMOTIONS
from brain.ports import StickerRenderer

# One renderer for the module: its cache keeps the 40 full-size renders from repeating.
RENDERER = AvatarRenderer()
# A pixel "differs" when a channel moves by more than this (of 255).
PIXEL_DELTA = 48


def decode(data: bytes, *, size: int = 512) -> npt.NDArray[np.int16]:
    """The sticker's RGBA pixels, after checking it is a size x size WEBP with alpha."""
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "WEBP"
        assert image.size == (size, size)
        assert image.mode == "RGBA"
        return np.asarray(image, dtype=np.int16)


def changed(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16]) -> float:
    """The fraction of pixels that differ visibly between two images."""
    return float((np.abs(a - b).max(axis=2) > PIXEL_DELTA).mean())


def test_the_emotion_set_is_the_personas_default() -> None:
    assert EMOTIONS == DEFAULT_EMOTIONS
    assert set(LOOKS) == set(EMOTIONS)


def test_every_part_file_parses_and_every_look_uses_existing_parts() -> None:
    names = set(part_names())
    assert {"body", "face", "blush", "tears", "sweat", "acc-turtle", "acc-ribbon"} <= names
    for name in names:
        assert load_part(name).art.startswith("<g")
    for emotion in EMOTIONS:
        assert set(layers(emotion, ACCESSORIES)) <= names


def test_the_renderer_is_a_sticker_renderer() -> None:
    assert isinstance(RENDERER, StickerRenderer)


async def test_every_emotion_with_every_accessory_is_a_transparent_512_webp() -> None:
    for emotion, accessory in itertools.product(EMOTIONS, ("none", *ACCESSORIES)):
        data = await RENDERER.render(emotion, accessories=(accessory,))
        assert len(data) < 64 * 1024, (emotion, accessory, len(data))
        pixels = decode(data)
        for y, x in ((0, 0), (0, -1), (-1, 0), (-1, -1)):
            assert pixels[y, x, 3] == 0, (emotion, accessory, "corner not transparent")
        assert pixels[256, 256, 3] == 255  # the avatar itself is opaque


async def test_every_pair_of_emotions_looks_different_at_128_px() -> None:
    faces = {e: decode(await RENDERER.render(e, size=128), size=128) for e in EMOTIONS}
    for a, b in itertools.combinations(EMOTIONS, 2):
        assert changed(faces[a], faces[b]) > 0.01, f"{a} and {b} look alike"


async def test_each_accessory_changes_the_image() -> None:
    bare = decode(await RENDERER.render("happy"))
    dressed = {a: decode(await RENDERER.render("happy", accessories=[a])) for a in ACCESSORIES}
    for accessory, pixels in dressed.items():
        assert changed(bare, pixels) > 0.02, accessory
    all_three = decode(await RENDERER.render("happy", accessories=ACCESSORIES))
    for pixels in dressed.values():
        assert changed(all_three, pixels) > 0.02


async def test_accessory_names_are_forgiving_and_none_means_none() -> None:
    bare = await RENDERER.render("sad")
    assert await RENDERER.render("sad", accessories=["none"]) is bare
    assert await RENDERER.render("SAD", accessories=()) is bare
    turtle = await RENDERER.render("sad", accessories=("turtle",))
    assert await RENDERER.render("sad", accessories=" Turtle ") is turtle  # a bare string
    both = await RENDERER.render("sad", accessories=("flower", "turtle"))
    assert await RENDERER.render("sad", accessories=("turtle", "flower", "turtle")) is both


async def test_the_cache_returns_the_same_bytes_and_stays_bounded() -> None:
    renderer = AvatarRenderer(cache_size=2)
    first = await renderer.render("love")
    assert await renderer.render("love") is first
    assert await renderer.render("joy") is await renderer.render("happy")  # one key
    await renderer.render("angry")  # the third entry pushes "love" out
    again = await renderer.render("love")
    assert again == first
    assert again is not first


async def test_a_caption_is_drawn_in_the_bottom_band() -> None:
    plain = decode(await RENDERER.render("happy"))
    captioned = decode(await RENDERER.render("happy", caption="Good morning!"))
    band = slice(int(512 * 0.82), 512)
    assert changed(plain[band], captioned[band]) > 0.05
    assert captioned[0, 0, 3] == 0


async def test_chinese_and_japanese_captions_are_drawn_with_real_glyphs() -> None:
    assert find_font() is not None, "install fonts-wqy-microhei (make does) for CJK captions"
    zh_a = decode(await RENDERER.render("love", caption="谢谢你"))
    zh_b = decode(await RENDERER.render("love", caption="我爱你"))
    ja = decode(await RENDERER.render("love", caption="ありがとう"))
    plain = decode(await RENDERER.render("love"))
    # Missing glyphs would all be the same box: equal-length captions would match.
    assert changed(zh_a, zh_b) > 0.005
    assert changed(zh_a, plain) > 0.05
    assert changed(ja, plain) > 0.05


async def test_long_captions_are_cut_with_an_ellipsis() -> None:
    long = "This caption is definitely much longer than forty characters in all"
    cut = clean_caption(long)
    assert cut is not None
    assert len(cut) <= MAX_CAPTION_CHARS
    assert cut.endswith("…")
    assert cut.startswith("This caption is definitely")
    assert clean_caption("  two\n  lines ") == "two lines"
    assert clean_caption("   ") is None
    assert clean_caption("困" * 60) == "困" * (MAX_CAPTION_CHARS - 1) + "…"
    decode(await RENDERER.render("sleepy", caption="困" * 60))
    assert await RENDERER.render("sleepy", caption=long) is await RENDERER.render(
        "sleepy", caption=cut
    )


async def test_unknown_emotion_or_accessory_says_what_exists() -> None:
    with pytest.raises(InputError, match="emotions: neutral, happy, excited, sad") as info:
        await RENDERER.render("banana")
    assert "banana" in str(info.value)
    with pytest.raises(InputError, match="accessories: turtle, ribbon, flower, none"):
        await RENDERER.render("happy", accessories=["hat"])
    with pytest.raises(InputError, match="pixels"):
        await RENDERER.render("happy", size=5000)


async def test_contact_sheet_has_a_cell_per_emotion_and_accessory() -> None:
    data = await contact_sheet(RENDERER, cell=64)
    with Image.open(io.BytesIO(data)) as sheet:
        assert sheet.format == "PNG"
        width, height = sheet.size
    assert width > 64 * len(COLUMNS)
    assert height > 64 * len(EMOTIONS)


def test_cli_renders_a_sticker(tmp_path: Path) -> None:
    out = tmp_path / "s.webp"
    args = ["sticker", "render", "shy", "--accessory", "ribbon", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--caption", "はずかしい", "--size", "256"])
    assert result.exit_code == 0, result.output
    decode(out.read_bytes(), size=256)


async def test_bench_reports_cold_and_warm_times(capsys: pytest.CaptureFixture[str]) -> None:
    figures = await sticker_bench(repeats=1)
    assert figures["warm_median_ms"] < figures["cold_median_ms"]
    assert 0 < figures["webp_max_bytes"] < 64 * 1024
    assert " ms" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("said", "emotion"),
    [
        ("happy", "happy"),
        ("Happy!", "happy"),
        ("  JOY ", "happy"),
        ("glad", "happy"),
        ("angry", "angry"),
        ("mad", "angry"),
        ("embarrassed", "shy"),
        ("tired", "sleepy"),
        ("curious", "thinking"),
        ("hmm...", "thinking"),
        ("surprise", "surprised"),
        ("wow", "surprised"),
        ("❤️", "love"),
        ("adore", "love"),
        ("very sad", "sad"),
        ("开心", "happy"),
        ("有点难过", "sad"),
        ("恥ずかしい", "shy"),
        ("😴", "sleepy"),
        ("banana", None),
        ("", None),
        (None, None),
        ("not happy", None),
    ],
)
def test_normalize_emotion(said: str | None, emotion: str | None) -> None:
    assert normalize_emotion(said) == emotion


@pytest.mark.parametrize(
    ("text", "emotion"),
    [
        ("Haha, that's so funny!", "happy"),
        ("Thank you so much.", "happy"),
        ("This is AMAZING, I can't wait!!", "excited"),
        ("I'm so sorry, that sounds awful.", "sad"),
        ("I'm not happy about it.", "sad"),
        ("Ugh, that makes me so angry.", "angry"),
        ("Wait, really?!", "surprised"),
        ("Oh, you flatter me, I'm blushing.", "shy"),
        ("Hmm... let me think about that.", "thinking"),
        ("Good night, I'm sleepy. zzz", "sleepy"),
        ("I love you ❤️", "love"),
        ("哈哈哈，太好笑了", "happy"),
        ("我今天好难过", "sad"),
        ("我不开心", "sad"),
        ("真让人生气！", "angry"),
        ("谢谢你", "happy"),
        ("我爱你", "love"),
        ("好困啊，晚安", "sleepy"),
        ("嗯…让我想想", "thinking"),
        ("哇！真的吗？！", "surprised"),
        ("すごい！最高！", "excited"),
        ("悲しいね", "sad"),
        ("おやすみ", "sleepy"),
        ("The meeting is at three.", "neutral"),
        ("这个问题很困难", "neutral"),
    ],
)
def test_emotion_from_text(text: str, emotion: str) -> None:
    found, strength = emotion_from_text(text)
    assert found == emotion
    assert 0.0 <= strength <= 1.0
    if emotion == "neutral":
        assert strength <= 0.2
    else:
        assert strength >= 0.4


def test_emphasis_makes_an_emotion_stronger() -> None:
    assert emotion_from_text("")[1] == 0.0
    calm = emotion_from_text("I'm happy.")
    loud = emotion_from_text("I'm SO happy!!! 😊")
    assert calm[0] == loud[0] == "happy"
    assert loud[1] > calm[1]


@pytest.mark.parametrize(
    ("model", "text", "emotion", "at_least", "at_most"),
    [
        ("happy", "Yay, that's great!", "happy", 0.7, 1.0),  # the text agrees
        ("sad", "The meeting is at three.", "sad", 0.7, 0.7),  # the default strength
        ("Surprise", "Haha", "surprised", 0.7, 0.7),  # a synonym still counts
        ("neutral", "WOW!!!", "neutral", 0.0, 0.1),  # a named neutral stays weak
        (None, "I love you ❤️", "love", 0.5, 1.0),  # no model emotion: the lexicon
        ("banana", "我好难过", "sad", 0.4, 1.0),  # garbage: the lexicon
        (None, "ok", "neutral", 0.0, 0.2),
    ],
)
def test_pick_emotion(
    model: str | None, text: str, emotion: str, at_least: float, at_most: float
) -> None:
    picked, strength = pick_emotion(model, text)
    assert picked == emotion
    assert at_least <= strength <= at_most


@pytest.mark.parametrize(
    ("text", "accessory"),
    [
        ("Happy birthday to you!", "flower"),
        ("祝你生日快乐", "flower"),
        ("誕生日おめでとう", "flower"),
        ("Let's go to the beach", "turtle"),
        ("I love the sea", "turtle"),
        ("我们去海边吧", "turtle"),
        ("a turtle!", "turtle"),
        ("I got you a present", "ribbon"),
        ("See you at the party", "ribbon"),
        ("谢谢你的礼物", "ribbon"),
        ("プレゼントありがとう", "ribbon"),
        ("the new season starts", None),
        ("我在上海", None),
        ("nothing special", None),
    ],
)
def test_accessory_for_context(text: str, accessory: str | None) -> None:
    assert accessory_for_context(text) == accessory
