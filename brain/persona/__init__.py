"""The persona: who tomo is (card), and later its LoRA training and federation."""

from brain.persona.card import PersonaCard

__all__ = ["PersonaCard"]
