"""Keep secrets (bot tokens) out of the logs.

A filter on the loggers that may see a secret masks it (raw and percent-encoded) in
messages and tracebacks; the record still goes out. Filters on a logger see only the
records logged on that very logger (not its children's), so every logger is named.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import quote

MASK = "<token>"


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
