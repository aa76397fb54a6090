"""Keep the OneBot access token out of the logs.

tomo sends the token in the Authorization header, which nothing logs; but an operator may
put it into TOMO_QQ__ONEBOT_URL (`?access_token=...`, which NapCat also accepts), and a
URL shows up in aiohttp's errors and tracebacks. Every logger that may see it masks it.
"""

from __future__ import annotations

from bots.redact import SecretMasked

LOGGERS = (
    "asyncio",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.websocket",
    "bots.qq.adapter",
    "bots.qq.media",
    "bots.qq.onebot",
    "bots.qq.send",
    "bots.runner",
)


class TokensMasked:
    """Masks each of `secrets` on LOGGERS; `remove()` takes the masks off again."""

    def __init__(self, *secrets: str) -> None:
        self._masks = [SecretMasked(s, loggers=LOGGERS) for s in dict.fromkeys(secrets) if s]

    def remove(self) -> None:
        for mask in self._masks:
            mask.remove()
        self._masks = []
