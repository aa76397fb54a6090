"""Platform calls retried: with a growing delay after a passing failure, and after the
wait a rate limit asks for.

The loop is the same on every platform; what differs is which failures are worth another
try (`judge`) and how a failure is named in the log. The log is the platform's own logger,
which carries its token filter.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class Backoff(Protocol):
    """A platform's RetryPolicy, as far as the loop is concerned."""

    @property
    def attempts(self) -> int: ...
    @property
    def first_delay_s(self) -> float: ...
    @property
    def max_delay_s(self) -> float: ...


class Retry(enum.Enum):
    NO = "no"  # raised at once: trying again cannot help
    BACKOFF = "backoff"  # tried again after the current delay, which then doubles


# What `judge` says of a failure: Retry, or the seconds a rate limit asks to wait.
Verdict = Retry | float


async def with_backoff(
    call: Callable[[], Awaitable[T]],
    *,
    policy: Backoff,
    what: str,
    judge: Callable[[Exception], Verdict],
    log: logging.Logger,
    describe: Callable[[Exception], str] = lambda exc: type(exc).__name__,
    label: str = "",
    rate_limit: str = "rate limit",
) -> T:
    """`call()`, tried up to `policy.attempts` times while `judge` says a failure may pass;
    the last failure, and any `judge` gives up on, is raised. `label` prefixes the retry
    log line; `rate_limit` names a rate limit there."""
    delay = policy.first_delay_s
    for attempt in range(1, policy.attempts + 1):
        try:
            return await call()
        except Exception as exc:
            verdict = judge(exc)
            if verdict is Retry.NO or attempt == policy.attempts:
                raise
            if verdict is Retry.BACKOFF:
                log.warning(
                    "%s%s failed (%s); retry %d in %.1f s",
                    label,
                    what,
                    describe(exc),
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, policy.max_delay_s)
            else:
                log.warning("%s: %s waits %.1f s", rate_limit, what, verdict)
                await asyncio.sleep(verdict)
    raise AssertionError("unreachable")  # pragma: no cover
