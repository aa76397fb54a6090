"""Keep the bot token out of the logs.

The token is part of every Bot API URL (`/bot<token>/sendMessage`, and file downloads),
and httpx logs each request URL at INFO; PTB logs its base URLs at DEBUG and puts the
token into the message of InvalidToken. A filter on the loggers that can see those URLs
masks the token (raw and percent-encoded) in messages and tracebacks.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

MASK = "<token>"

# Filters on a logger see only the records logged on that very logger (not its
# children's), so every logger that may carry a URL is named.
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


class TokenFilter(logging.Filter):
    """Masks a secret in a record's message and traceback (the record still goes out)."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self._forms = tuple(
            form for form in dict.fromkeys((secret, quote(secret, safe=""), quote(secret))) if form
        )

    def mask(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        masked = self.mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


class TokenFilterInstalled:
    """Installs a TokenFilter on the loggers above; `remove()` takes it off again."""

    def __init__(self, secret: str) -> None:
        self.filter = TokenFilter(secret)
        for name in LOGGERS:
            logging.getLogger(name).addFilter(self.filter)

    def remove(self) -> None:
        for name in LOGGERS:
            logging.getLogger(name).removeFilter(self.filter)
