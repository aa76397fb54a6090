"""Keep the bot token out of the logs.

The token is part of every Bot API URL (`/bot<token>/sendMessage`, and file downloads),
and httpx logs each request URL at INFO; PTB logs its base URLs at DEBUG and puts the
token into the message of InvalidToken. A filter (bots/redact.py) on the loggers that can
see those URLs masks the token (raw and percent-encoded) in messages and tracebacks.
"""

from __future__ import annotations

from bots.redact import MASK, SecretFilter, SecretMasked

LOGGERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "telegram",
    "telegram.Bot",
    "telegram.ext",
    "telegram.request.BaseRequest",
    "telegram.request.HTTPXRequest",
    "bots.telegram.adapter",
    "bots.telegram.media",
    "bots.telegram.send",
    "bots.telegram.webhook",
    "aiohttp.access",
    "aiohttp.server",
    "aiohttp.web",
)


def mask_token(token: str) -> SecretMasked:
    """Mask `token` on the loggers above until `.remove()`."""
    return SecretMasked(token, loggers=LOGGERS)


__all__ = ["LOGGERS", "MASK", "SecretFilter", "mask_token"]
