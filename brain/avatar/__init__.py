"""The avatar: tomo's face for every emotion, rendered as 512x512 transparent WEBP stickers.

`AvatarRenderer` is the brain's StickerRenderer; `pick_emotion` chooses the emotion of a
reply (the model's, or the reply text's); `accessory_for_context` suggests a turtle,
ribbon or flower from what the conversation is about; `contact_sheet` shows them all.
"""

from brain.avatar.emotions import (
    EMOTIONS,
    accessory_for_context,
    emotion_from_text,
    normalize_emotion,
    pick_emotion,
)
from brain.avatar.parts import ACCESSORIES, ACCESSORY_USAGE
from brain.avatar.render import AvatarRenderer

__all__ = [
    "ACCESSORIES",
    "ACCESSORY_USAGE",
    "EMOTIONS",
    "AvatarRenderer",
    "accessory_for_context",
    "emotion_from_text",
    "normalize_emotion",
    "pick_emotion",
]
