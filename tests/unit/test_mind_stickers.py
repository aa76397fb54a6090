"""Sticker replies through the brain: real avatar renders, the person's settings stored,
the group rule, the model's emotion with the lexicon behind it."""

from __future__ import annotations

import io
import random
from datetime import timedelta
from typing import Any

from PIL import Image

from brain.avatar.render import AvatarRenderer
from brain.blobs import MemoryBlobStore
from brain.clock import ManualClock
from brain.llm.stub import StubModel
from brain.messages import Reply, Sticker
from brain.mind import Brain
from brain.persona.card import PersonaCard
from brain.stickers import Stickers
from storage.sql import SqlMemoryStore
from tests.conftest import ALICE, BOB, GROUP, T0, inbound

RENDERER = AvatarRenderer()


def make_brain(
    store: SqlMemoryStore,
    *,
    rate: float = 1.0,
    model: StubModel | None = None,
    accessories: tuple[str, ...] = (),
) -> tuple[Brain, MemoryBlobStore]:
    blobs = MemoryBlobStore()
    the_model = model or StubModel(json_answer={"emotion": "happy"})
    brain = Brain(
        store=store,
        model=the_model,
        persona=PersonaCard(
            name="Tomo",
            self_description="A friend.",
            sticker_rate=rate,
            accessories=accessories,
        ),
        clock=ManualClock(T0 + timedelta(seconds=1)),
        blobs=blobs,
        stickers=Stickers(RENDERER, model=the_model, rng=random.Random(7)),
    )
    return brain, blobs


def sticker_of(replies: list[Reply]) -> Sticker | None:
    found = [s for r in replies for s in r.segments if isinstance(s, Sticker)]
    assert len(found) <= 1
    return found[0] if found else None


async def test_a_reply_carries_the_models_emotion_as_a_real_webp(
    sqlite_store: SqlMemoryStore,
) -> None:
    brain, blobs = make_brain(sqlite_store)
    sticker = sticker_of(await brain.handle(inbound("I got the job!")))
    assert sticker is not None
    assert sticker.emotion == "happy"
    data = await blobs.get(sticker.blob_key)
    assert data == await RENDERER.render("happy")
    with Image.open(io.BytesIO(data)) as image:
        assert (image.format, image.size, image.mode) == ("WEBP", (512, 512), "RGBA")
    # the stored reply keeps the sticker, so the group rule can see it later
    stored = await sqlite_store.recent_messages(inbound("x").chat, limit=5)
    assert any(isinstance(s, Sticker) for s in stored[-1].segments)


async def test_without_a_model_emotion_the_lexicon_decides(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel(json_answer={"emotion": "no such feeling"})
    brain, _ = make_brain(sqlite_store, model=model)
    sticker = sticker_of(await brain.handle(inbound("I love you so much ❤️")))
    assert sticker is not None
    assert sticker.emotion == "love"


async def test_weak_feelings_follow_the_sticker_rate(sqlite_store: SqlMemoryStore) -> None:
    model = StubModel(json_answer={"emotion": "neutral"})
    brain, _ = make_brain(sqlite_store, rate=0.0, model=model)
    assert sticker_of(await brain.handle(inbound("the bus comes at nine"))) is None


async def test_never_twice_in_a_row_in_a_group(sqlite_store: SqlMemoryStore) -> None:
    brain, _ = make_brain(sqlite_store)
    first = await brain.handle(inbound("@tomo great news!", chat=GROUP))
    second = await brain.handle(inbound("@tomo more news!", chat=GROUP, author=BOB))
    third = await brain.handle(inbound("@tomo and more!", chat=GROUP))
    assert [sticker_of(r) is not None for r in (first, second, third)] == [True, False, True]


async def test_sticker_settings_are_the_persons(sqlite_store: SqlMemoryStore) -> None:
    brain, blobs = make_brain(sqlite_store, accessories=("ribbon",))
    worn = sticker_of(await brain.handle(inbound("yay")))
    assert worn is not None
    assert await blobs.get(worn.blob_key) == await RENDERER.render("happy", accessories=("ribbon",))

    [off] = await brain.handle(inbound("/sticker off"))
    assert "off" in off.text
    assert sticker_of(await brain.handle(inbound("yay again"))) is None
    await brain.handle(inbound("/sticker on"))
    [chosen] = await brain.handle(inbound("/sticker accessory turtle"))
    assert "turtle" in chosen.text
    person = await sqlite_store.resolve_person(ALICE, seen_at=T0)
    assert (person.stickers, person.sticker_accessory) == (True, "turtle")
    turtle = sticker_of(await brain.handle(inbound("a birthday party!")))  # hers wins
    assert turtle is not None
    assert await blobs.get(turtle.blob_key) == await RENDERER.render(
        "happy", accessories=("turtle",)
    )
    [status] = await brain.handle(inbound("/sticker"))
    assert "Stickers are on for you; accessory: turtle" in status.text


async def test_the_moment_picks_an_accessory(sqlite_store: SqlMemoryStore) -> None:
    brain, blobs = make_brain(sqlite_store)
    sticker = sticker_of(await brain.handle(inbound("It's my birthday today!")))
    assert sticker is not None
    assert await blobs.get(sticker.blob_key) == await RENDERER.render(
        "happy", accessories=("flower",)
    )


async def test_bad_sticker_commands_get_the_usage(sqlite_store: SqlMemoryStore) -> None:
    brain, _ = make_brain(sqlite_store)
    for bad in ("/sticker accessory hat", "/sticker loud", "/sticker on off"):
        [reply] = await brain.handle(inbound(bad))
        assert reply.text.startswith("Usage: /sticker on"), bad
        assert "turtle|ribbon|flower|none" in reply.text


async def test_no_renderer_no_stickers(sqlite_store: SqlMemoryStore) -> None:
    brain = Brain(
        store=sqlite_store,
        model=StubModel(),
        persona=PersonaCard(name="Tomo", self_description="A friend.", sticker_rate=1.0),
        clock=ManualClock(T0),
    )
    replies: Any = await brain.handle(inbound("yay"))
    assert sticker_of(replies) is None
    [reply] = await brain.handle(inbound("/sticker on"))
    assert "no stickers here" in reply.text
