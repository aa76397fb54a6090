"""A chat status ("typing...") kept up while the brain thinks.

Platforms clear such a status after a few seconds, so it is sent again until the work is
done. It is cosmetic: the platform's `show` logs its own failures and never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


@contextlib.asynccontextmanager
async def repeating(show: Callable[[], Awaitable[None]], *, every_s: float) -> AsyncIterator[None]:
    """`show()` now and every `every_s` until the block ends."""

    async def repeat() -> None:
        while True:
            await show()
            await asyncio.sleep(every_s)

    task = asyncio.create_task(repeat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
