"""Logging set up at the entry point: text or JSON lines, without message content.

tomo's own log lines never carry what people said (chat keys, counts, error types and
error messages written for operators only). Some libraries do at DEBUG: aiosqlite and
SQLAlchemy log SQL with its parameters (the stored text), python-telegram-bot and
discord.py log request and gateway payloads, the openai client logs prompts. Unless
TOMO_LOG_CONTENT=true they are held at INFO (SQLAlchemy's engine at WARNING, since its
INFO is the SQL), whatever TOMO_LOG_LEVEL says.

TOMO_LOG_FORMAT=json writes one JSON object a line: time, level, logger, message, the
fields a line was logged with (`extra=`), and the traceback, if any.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Loggers that write message content at DEBUG (or, for SQLAlchemy's engine, at INFO),
# and the lowest level each may log at unless content logging is on.
CONTENT_LOGGERS = {
    "aiosqlite": logging.INFO,
    "sqlalchemy.engine": logging.WARNING,
    "sqlalchemy.pool": logging.INFO,
    "telegram": logging.INFO,
    "httpx": logging.INFO,
    "httpcore": logging.INFO,
    "discord": logging.INFO,
    "openai": logging.INFO,
    "faster_whisper": logging.INFO,
}

# What every LogRecord has; anything else on a record came with `extra=`.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object a line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def setup_logging(level: str, *, fmt: str = "text", content: bool = False) -> None:
    """Log to stderr at `level` ("WARNING", "info", ...), as text or JSON lines; unless
    `content`, hold the libraries that log message content at INFO."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
    if content:
        return
    root_level = logging.getLevelName(level.upper())
    for name, lowest in CONTENT_LOGGERS.items():
        if isinstance(root_level, int) and root_level < lowest:
            logging.getLogger(name).setLevel(lowest)
