"""When tomo answers with a sticker render of its avatar, which face, which accessory.

The emotion comes from the model (a short structured-output call naming one of the
persona's emotions) with the lexicon as the fallback; a sticker goes out when the emotion
is strong, or by the persona card's sticker rate, never twice in a row in a group, and
never to a person who turned stickers off. The accessory is the person's own choice,
else one the conversation suggests (a flower for a birthday), else the persona's.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

from brain.avatar.emotions import accessory_for_context, emotion_from_text, pick_emotion
from brain.avatar.parts import ACCESSORIES
from brain.errors import ModelError, TomoError
from brain.messages import ChatRef, Sticker
from brain.persona.card import PersonaCard
from brain.ports import BlobStore, ChatTurn, LanguageModel, MemoryStore, Person, StickerRenderer

log = logging.getLogger(__name__)

# An emotion at least this strong always gets a sticker (where stickers may go at all).
STRONG = 0.75

CHOICES = (*ACCESSORIES, "none")
STICKER_USAGE = (
    "Usage: /sticker on | /sticker off | /sticker accessory "
    + "|".join(CHOICES)
    + " | /sticker (shows the settings)"
)


class EmotionAnswer(BaseModel):
    emotion: str = "neutral"


def emotion_schema(emotions: Sequence[str]) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {"emotion": {"type": "string", "enum": list(emotions)}},
        "required": ["emotion"],
    }


@dataclass(frozen=True, kw_only=True)
class Chosen:
    emotion: str
    strength: float
    accessories: tuple[str, ...]


class Stickers:
    """Decides on and renders the sticker of a reply."""

    def __init__(
        self,
        renderer: StickerRenderer,
        *,
        model: LanguageModel | None = None,
        rng: random.Random | None = None,
        ask_model: bool = True,
    ) -> None:
        self.renderer = renderer
        self.model = model
        self.rng = rng or random.Random()
        self.ask_model = ask_model

    async def model_emotion(self, reply: str, persona: PersonaCard) -> str | None:
        """The emotion the model names for its own reply (None if it names none)."""
        if self.model is None or not self.ask_model:
            return None
        turns = [
            ChatTurn(
                role="system",
                content=(
                    f"You are {persona.name}. Name the emotion of your reply, one of: "
                    f'{", ".join(persona.emotions)}. Answer JSON: {{"emotion": "..."}}.'
                ),
            ),
            ChatTurn(role="user", content=f"Your reply: {reply[:500]}"),
        ]
        try:
            raw = await self.model.complete(
                turns, max_tokens=16, temperature=0.0, json_schema=emotion_schema(persona.emotions)
            )
            return EmotionAnswer.model_validate_json(raw).emotion
        except (ValidationError, ModelError):
            return None

    def choose(
        self,
        *,
        reply: str,
        model_emotion: str | None,
        person: Person,
        persona: PersonaCard,
        context: str,
    ) -> Chosen:
        emotion, strength = pick_emotion(model_emotion, reply)
        if emotion not in persona.emotions:
            emotion = "neutral"
        if person.sticker_accessory is not None:
            chosen = person.sticker_accessory
        else:
            chosen = accessory_for_context(context) or (
                persona.accessories[0] if persona.accessories else "none"
            )
        accessories = () if chosen == "none" else (chosen,)
        return Chosen(emotion=emotion, strength=strength, accessories=accessories)

    def may_send(self, *, person: Person, chat: ChatRef, sent_last: bool) -> bool:
        """Whether a sticker may go with this reply at all (before the emotion is known)."""
        if not person.stickers:
            return False
        return not (chat.kind == "group" and sent_last)

    async def decide(
        self, *, reply: str, person: Person, persona: PersonaCard, context: str
    ) -> Chosen | None:
        """The sticker for `reply`, or None when none goes with it.

        A sticker goes when the emotion is strong or by the persona's rate. The model
        can only name an emotion as strong as the words already show (pick_emotion), so
        when the words are weak and the rate says no, the model is not asked at all.
        """
        by_rate = self.rng.random() < persona.sticker_rate
        if not by_rate and emotion_from_text(reply)[1] < STRONG:
            return None
        chosen = self.choose(
            reply=reply,
            model_emotion=await self.model_emotion(reply, persona),
            person=person,
            persona=persona,
            context=context,
        )
        return chosen if by_rate or chosen.strength >= STRONG else None

    async def render(self, chosen: Chosen, blobs: BlobStore) -> Sticker | None:
        try:
            data = await self.renderer.render(chosen.emotion, accessories=chosen.accessories)
        except TomoError as exc:
            log.warning("sticker render failed", extra={"error": str(exc)})
            return None
        key = await blobs.put(data, mime="image/webp")
        return Sticker(blob_key=key, size_bytes=len(data), emotion=chosen.emotion)


async def sticker_command(
    args: tuple[str, ...], *, person: Person, store: MemoryStore, available: bool
) -> str:
    """`/sticker on|off`, `/sticker accessory <name>`: stored with the person."""
    if not available:
        return "I have no stickers here: the avatar renderer is not set up."
    words = [a.lower() for a in args]
    if not words:
        state = "on" if person.stickers else "off"
        accessory = person.sticker_accessory or "chosen by the conversation"
        return f"Stickers are {state} for you; accessory: {accessory}.\n{STICKER_USAGE}"
    if words in (["on"], ["off"]):
        person = await store.set_sticker_prefs(person.id, on=words[0] == "on")
        return "Stickers are on." if person.stickers else "Stickers are off: text only."
    if len(words) == 2 and words[0] == "accessory" and words[1] in CHOICES:
        await store.set_sticker_prefs(person.id, accessory=words[1])
        if words[1] == "none":
            return "Done: no accessory on my stickers for you."
        return f"Done: I'll wear the {words[1]} on my stickers for you."
    return STICKER_USAGE


__all__ = ["STRONG", "Chosen", "Stickers", "sticker_command"]
