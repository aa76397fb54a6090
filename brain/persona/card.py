"""The persona card: name, self-description, speaking style, example lines, emotions."""

from __future__ import annotations

from importlib import resources

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "excited",
    "sad",
    "angry",
    "surprised",
    "shy",
    "thinking",
    "sleepy",
    "love",
)


class ExampleLine(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str
    reply: str


class PersonaCard(BaseModel):
    """Everything the model is told about who it is. Loaded from YAML by the edges."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    self_description: str = Field(min_length=1)
    speaking_style: str = ""
    example_lines: tuple[ExampleLine, ...] = ()
    emotions: tuple[str, ...] = DEFAULT_EMOTIONS
    sticker_rate: float = Field(default=0.2, ge=0.0, le=1.0)
    # What the avatar wears on its stickers unless a person or the moment picks another
    # (turtle, ribbon, flower); empty: nothing.
    accessories: tuple[str, ...] = ()
    language: str = "en"

    @field_validator("emotions")
    @classmethod
    def _emotions_have_neutral(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("a persona needs at least one emotion")
        if "neutral" not in value:
            raise ValueError("the emotion set must include 'neutral'")
        return value

    def system_prompt(self) -> str:
        """The persona part of the system prompt."""
        lines = [f"You are {self.name}. {self.self_description.strip()}"]
        if self.speaking_style.strip():
            lines.append(f"Speaking style: {self.speaking_style.strip()}")
        for ex in self.example_lines[:3]:
            lines.append(f'Example - they say: "{ex.user}" - you say: "{ex.reply}"')
        return "\n".join(lines)


def default_card_text() -> str:
    """The YAML text of the persona card shipped in the package."""
    return resources.files("brain.persona").joinpath("default.yaml").read_text("utf-8")
