"""Keep secrets (bot tokens) out of the logs.

A filter on the loggers that may see a secret masks it (raw and percent-encoded) in
messages and tracebacks; the record still goes out. Filters on a logger see only the
records logged on that very logger (not its children's), so every logger is named.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote

MASK = "<token>"

# Shapes of secrets, masked wherever they turn up (bots/sentry.py scrubs events with
# them): bot tokens of Telegram and Discord, API keys, bearer tokens, the password of a
# URL (postgresql://user:PASSWORD@host, redis://:PASSWORD@host).
SECRET_PATTERNS = (
    re.compile(r"\b\d{5,16}:[A-Za-z0-9_-]{30,}"),  # Telegram: <bot id>:<35 characters>
    re.compile(r"\b[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6,7}\.[A-Za-z0-9_-]{27,}"),  # Discord
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),  # OpenAI-style API keys
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"),  # user:password in a URL
)


def scrub_secrets(text: str, known: Iterable[str] = ()) -> str:
    """`text` with each of the `known` secrets (raw and percent-encoded) and anything
    shaped like a secret (SECRET_PATTERNS) replaced by MASK."""
    for secret in sorted({s for s in known if s}, key=len, reverse=True):
        for form in dict.fromkeys((secret, quote(secret, safe=""), quote(secret))):
            text = text.replace(form, MASK)
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(MASK, text)
    return text


class SecretFilter(logging.Filter):
    """Masks a secret in a record's message and traceback."""

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


class SecretMasked:
    """Installs a SecretFilter on `loggers`; `remove()` takes it off again."""

    def __init__(self, secret: str, *, loggers: Iterable[str]) -> None:
        self.filter = SecretFilter(secret)
        self.loggers = tuple(loggers)
        for name in self.loggers:
            logging.getLogger(name).addFilter(self.filter)

    def remove(self) -> None:
        for name in self.loggers:
            logging.getLogger(name).removeFilter(self.filter)
