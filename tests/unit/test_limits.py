"""Token-bucket arithmetic (brain/limits.py) on a clock that moves only when told."""

from __future__ import annotations

import pytest

from brain.limits import BucketState, InMemoryRateLimiter, level, take_all
from brain.ports import Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(sequence: list[float], rate: Rate, *, key: str = "k") -> list[tuple[bool, bool, float]]:
    """(allowed, warn, retry_after) for a take at each of the times in `sequence`."""
    states: dict[str, BucketState | None] = {}
    out = []
    for now in sequence:
        admission, new = take_all(states, {key: rate}, now)
        states.update(new)
        out.append((admission.allowed, admission.warn, round(admission.retry_after_s, 6)))
    return out


def test_a_new_bucket_is_full_and_a_burst_empties_it() -> None:
    rate = Rate(burst=3, per_second=1.0)
    assert level(None, rate, 0.0) == 3.0
    results = run([0.0, 0.0, 0.0, 0.0, 0.0], rate)
    assert [r[0] for r in results] == [True, True, True, False, False]


def test_the_first_refusal_warns_then_silence_until_a_message_goes_through() -> None:
    rate = Rate(burst=2, per_second=1.0)
    # t=0: two allowed, refused (warn), refused (silent); t=0.5: half a token, still
    # silent; t=1.0: one token: allowed; then refused again: warns again
    results = run([0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0], rate)
    assert results == [
        (True, False, 0.0),
        (True, False, 0.0),
        (False, True, 1.0),
        (False, False, 1.0),
        (False, False, 0.5),
        (True, False, 0.0),
        (False, True, 1.0),
        (False, False, 1.0),
    ]


def test_refill_is_continuous_and_capped_at_the_burst() -> None:
    rate = Rate(burst=4, per_second=0.5)  # one token every 2 s
    state = BucketState(tokens=0.0, at=10.0)
    assert level(state, rate, 10.0) == 0.0
    assert level(state, rate, 11.0) == pytest.approx(0.5)
    assert level(state, rate, 14.0) == pytest.approx(2.0)
    assert level(state, rate, 1000.0) == 4.0  # long idle: full, never more
    assert level(state, rate, 5.0) == 0.0  # a clock that went back gives nothing


def test_two_buckets_are_taken_together_or_not_at_all() -> None:
    person = Rate(burst=5, per_second=1.0)
    chat = Rate(burst=1, per_second=0.1)
    rates = {"person:a": person, "chat:c": chat}
    first, states = take_all({}, rates, 0.0)
    assert first.allowed
    second, states = take_all(dict(states), rates, 0.0)
    assert not second.allowed
    assert second.limited_by == "chat:c"
    assert second.retry_after_s == pytest.approx(10.0)
    # the person's bucket was not spent by the refused message
    assert states["person:a"].tokens == pytest.approx(4.0)


async def test_the_in_memory_limiter_keeps_buckets_per_key_and_forgets_full_ones() -> None:
    clock = Clock()
    limiter = InMemoryRateLimiter(clock=clock, max_keys=2)
    rate = Rate(burst=1, per_second=1.0)
    assert (await limiter.take({"a": rate})).allowed
    assert not (await limiter.take({"a": rate})).allowed
    assert (await limiter.take({"b": rate})).allowed  # another key: its own bucket
    clock.now += 5  # both full again
    assert (await limiter.take({"c": rate})).allowed  # over max_keys: full ones dropped
    assert len(limiter) == 1
    assert (await limiter.take({"a": rate})).allowed  # forgotten = full, as it was


def test_a_rate_needs_a_burst_and_a_refill() -> None:
    with pytest.raises(ValueError, match="burst"):
        Rate(burst=0, per_second=1.0)
    with pytest.raises(ValueError, match="refill"):
        Rate(burst=1, per_second=0.0)
