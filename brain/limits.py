"""Rate and size limits on what reaches the brain.

Token buckets per person and per chat (capacity `burst`, refilled at `per_second`): a
message addressed to tomo (a command too) takes one token from its person's bucket and
one from its chat's, both or neither. When one is empty the message is refused: the first
refusal since the bucket last let a message through gets one friendly reply, the rest of
that stretch gets silence. A refused message is still kept, as if overheard (stored and
indexed, neither transcribed nor answered), so the next answer sees it in the
conversation; a refused command is dropped, since commands are never stored.

Messages not addressed to tomo are not rate-limited (they cost no model call, and a busy
group would otherwise lose its memory). A message longer than `max_text_chars` is refused
whole, addressed or not, and not stored; the person is told why when it was addressed to
tomo. The terminal chat has no limits: its one person is the operator.

`take_all` is the bucket arithmetic; `InMemoryRateLimiter` keeps the buckets in this
process, storage/ratelimit.py in Redis (the same arithmetic in a Lua script) for workers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from brain.commands import parse_command
from brain.errors import TomoError
from brain.messages import Inbound
from brain.ports import Admission, Rate, RateLimiter

log = logging.getLogger(__name__)

PERSON_TOO_FAST = "You're sending messages faster than I can read them; give me a few seconds."
CHAT_TOO_FAST = "Messages are coming in here faster than I can read them; give me a few seconds."
LIMIT_NOTES = frozenset({PERSON_TOO_FAST, CHAT_TOO_FAST})


def too_long(chars: int, limit: int) -> str:
    return (
        f"That message is {chars:,} characters long; I can read up to {limit:,}. Could you "
        "send it in shorter parts?"
    )


@dataclass(frozen=True)
class BucketState:
    tokens: float
    at: float  # when `tokens` was measured (seconds, the limiter's clock)
    warned: bool = False  # a refusal was reported since the last message let through


def level(state: BucketState | None, rate: Rate, now: float) -> float:
    """The tokens a bucket holds at `now` (a bucket never seen is full)."""
    if state is None:
        return float(rate.burst)
    return min(float(rate.burst), state.tokens + max(0.0, now - state.at) * rate.per_second)


def take_all(
    states: Mapping[str, BucketState | None], rates: Mapping[str, Rate], now: float
) -> tuple[Admission, dict[str, BucketState]]:
    """One token from every bucket in `rates`, or none: the decision and the new states."""
    levels = {key: level(states.get(key), rate, now) for key, rate in rates.items()}
    empty = [key for key, tokens in levels.items() if tokens < 1.0]
    if not empty:
        new = {key: BucketState(tokens - 1.0, now) for key, tokens in levels.items()}
        return Admission(allowed=True), new
    new = {}
    warn = False
    for key, tokens in levels.items():
        before = states.get(key)
        warned = before.warned if before is not None else False
        if key in empty and not warned:
            warn = warned = True
        new[key] = BucketState(tokens, now, warned)
    wait = max((1.0 - levels[key]) / rates[key].per_second for key in empty)
    return Admission(allowed=False, warn=warn, limited_by=empty[0], retry_after_s=wait), new


def full_after(state: BucketState, rate: Rate) -> float:
    """Seconds from `state.at` until the bucket is full again (then it can be forgotten)."""
    return max(0.0, (rate.burst - state.tokens) / rate.per_second)


class InMemoryRateLimiter:
    """The RateLimiter port in this process (one tomo process: `tomo run`, `tomo chat`)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000):
        self._clock = clock
        self._max_keys = max_keys
        # key -> (state, when it is full again: after that it equals a fresh bucket)
        self._buckets: dict[str, tuple[BucketState, float]] = {}

    async def take(self, buckets: Mapping[str, Rate]) -> Admission:
        now = self._clock()
        states = {key: held[0] for key in buckets if (held := self._buckets.get(key))}
        admission, new = take_all(states, buckets, now)
        for key, state in new.items():
            self._buckets[key] = (state, now + full_after(state, buckets[key]))
        if len(self._buckets) > self._max_keys:
            self._forget_full(now)
        return admission

    def _forget_full(self, now: float) -> None:
        for key in [k for k, (_s, full_at) in self._buckets.items() if full_at <= now]:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    async def aclose(self) -> None:
        self._buckets.clear()


@dataclass(frozen=True, kw_only=True)
class LimitConfig:
    person: Rate | None = field(default_factory=lambda: Rate(burst=10, per_second=20 / 60))
    chat: Rate | None = field(default_factory=lambda: Rate(burst=30, per_second=60 / 60))
    max_text_chars: int | None = 16_000
    # The terminal chat's one person is the operator: no limits there.
    unlimited_platforms: frozenset[str] = frozenset({"console"})


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """A message a limit refused: what to say (None: nothing) and whether to keep it as
    an overheard message (stored, not answered)."""

    reason: Literal["person", "chat", "length"]
    say: str | None
    keep: bool


class Limits:
    """Decides, before the brain takes a message, whether a limit refuses it."""

    def __init__(self, config: LimitConfig | None = None, *, limiter: RateLimiter | None) -> None:
        self.config = config or LimitConfig()
        self.limiter = limiter

    async def screen(self, inbound: Inbound) -> Refusal | None:
        """None when `inbound` may go on; else what to do with it instead."""
        if inbound.chat.platform in self.config.unlimited_platforms:
            return None
        refused = await self._rate(inbound)
        if refused is not None:
            return refused
        limit = self.config.max_text_chars
        chars = len(inbound.text)
        if limit is not None and chars > limit:
            say = too_long(chars, limit) if inbound.to_bot else None
            return Refusal(reason="length", say=say, keep=False)
        return None

    async def _rate(self, inbound: Inbound) -> Refusal | None:
        cfg = self.config
        if self.limiter is None or not inbound.to_bot:
            return None
        buckets: dict[str, Rate] = {}
        if cfg.person is not None:
            buckets[f"person:{inbound.author.platform}:{inbound.author.user_id}"] = cfg.person
        if cfg.chat is not None:
            buckets[f"chat:{inbound.chat.key}"] = cfg.chat
        if not buckets:
            return None
        try:
            admission = await self.limiter.take(buckets)
        except TomoError as exc:  # a limiter that is down lets messages through
            log.warning("rate limits unavailable, message let through: %s", exc)
            return None
        if admission.allowed:
            return None
        by_person = (admission.limited_by or "").startswith("person:")
        say = (PERSON_TOO_FAST if by_person else CHAT_TOO_FAST) if admission.warn else None
        return Refusal(
            reason="person" if by_person else "chat",
            say=say,
            keep=parse_command(inbound.text) is None,
        )


__all__ = [
    "CHAT_TOO_FAST",
    "LIMIT_NOTES",
    "PERSON_TOO_FAST",
    "BucketState",
    "InMemoryRateLimiter",
    "LimitConfig",
    "Limits",
    "Refusal",
    "full_after",
    "level",
    "take_all",
    "too_long",
]
