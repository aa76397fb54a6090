"""Errors to Sentry (TOMO_SENTRY__DSN; off when unset), without what people said.

What an event keeps is what the code wrote: exception types, stack frames (file,
function, line, source lines), log message templates ("could not handle update %d"),
logger names, levels, tags, the runtime. What it loses is what may carry words of a
chat, a memory, a prompt or a secret: exception messages, log message arguments and
formatted messages, local variables, `extra` fields, request data, user data, and every
breadcrumb's message and data (a breadcrumb keeps its category, level and, for log
lines, the template). Every string left is then scrubbed of the configured secrets (every
SecretStr setting, the database URL's password) and of anything shaped like a secret
(bots/redact.py). Local variables are never captured in the first place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, SecretStr

from bots.redact import scrub_secrets
from bots.settings import Settings

log = logging.getLogger(__name__)

REMOVED = "[removed]"

# Top-level event keys that carry only what the code wrote (after the cleaning below).
_KEPT = frozenset(
    {
        "event_id",
        "timestamp",
        "level",
        "logger",
        "platform",
        "server_name",
        "environment",
        "release",
        "dist",
        "sdk",
        "modules",
        "tags",
        "contexts",
        "fingerprint",
        "exception",
        "threads",
        "logentry",
        "breadcrumbs",
        "type",
        "transaction_info",
    }
)
# Of the contexts, those that describe the machine and the runtime, not the work.
_CONTEXTS = frozenset({"runtime", "os", "device", "app", "trace", "culture"})


def secret_values(settings: Settings) -> list[str]:
    """Every secret in `settings`: SecretStr values; of those that are URLs (Redis, the
    Sentry DSN) the credentials, not the address; the database URL's password."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            found.extend(_url_credentials(raw) if "://" in raw else [raw])
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))

    walk(settings)
    found.extend(_url_credentials(settings.effective_database_url, user=False))
    return [s for s in dict.fromkeys(found) if s]


def _url_credentials(url: str, *, user: bool = True) -> list[str]:
    """The password of `url`; with `user`, its user name when it has no password (a key
    written as the user, as in a Sentry DSN)."""
    try:
        parts = urlsplit(url)
        secret = parts.password or (parts.username if user else None)
    except ValueError:
        return [url]  # not readable as a URL: all of it
    return [secret, unquote(secret)] if secret else []


class Scrubber:
    """`before_send` and `before_breadcrumb` for sentry_sdk.init."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(secrets)

    def before_send(self, event: dict[str, Any], hint: Mapping[str, Any]) -> dict[str, Any]:
        cleaned: dict[str, Any] = {k: v for k, v in event.items() if k in _KEPT}
        for key in ("exception", "threads"):
            if isinstance(cleaned.get(key), dict):
                cleaned[key] = self._frames_only(cleaned[key], messages=key == "exception")
        entry = cleaned.get("logentry")
        if isinstance(entry, dict):
            cleaned["logentry"] = {"message": entry.get("message", REMOVED), "params": []}
        contexts = cleaned.get("contexts")
        if isinstance(contexts, dict):
            cleaned["contexts"] = {k: v for k, v in contexts.items() if k in _CONTEXTS}
        crumbs = cleaned.get("breadcrumbs")
        if isinstance(crumbs, dict) and isinstance(crumbs.get("values"), list):
            # already cleaned by before_breadcrumb: what is left of a message is a template
            cleaned["breadcrumbs"] = {
                "values": [
                    self._crumb(c, message=c.get("message"))
                    for c in crumbs["values"]
                    if isinstance(c, dict)
                ]
            }
        scrubbed: dict[str, Any] = self._scrub(cleaned)
        return scrubbed

    def before_breadcrumb(
        self, crumb: dict[str, Any], hint: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        record = (hint or {}).get("log_record")
        template = record.msg if isinstance(record, logging.LogRecord) else None
        return self._crumb(crumb, message=template)

    def _crumb(self, crumb: dict[str, Any], *, message: object) -> dict[str, Any]:
        """A breadcrumb's kind, level and time, and `message` (a log line's template,
        never its arguments); no data."""
        kept: dict[str, Any] = {
            k: crumb[k] for k in ("type", "category", "level", "timestamp") if k in crumb
        }
        if isinstance(message, str):
            kept["message"] = message
        scrubbed: dict[str, Any] = self._scrub(kept)
        return scrubbed

    def _frames_only(self, part: dict[str, Any], *, messages: bool) -> dict[str, Any]:
        values = []
        for value in part.get("values") or []:
            if not isinstance(value, dict):
                continue
            value = dict(value)
            if messages and "value" in value:
                value["value"] = REMOVED
            trace = value.get("stacktrace")
            if isinstance(trace, dict):
                frames = [
                    {k: v for k, v in frame.items() if k != "vars"}
                    for frame in trace.get("frames") or []
                    if isinstance(frame, dict)
                ]
                value["stacktrace"] = {**trace, "frames": frames}
            mechanism = value.get("mechanism")
            if isinstance(mechanism, dict):
                value["mechanism"] = {k: v for k, v in mechanism.items() if k != "data"}
            values.append(value)
        return {"values": values}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub_secrets(value, self.secrets)
        if isinstance(value, dict):
            return {self._scrub(k): self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value


def _release(settings: Settings) -> str:
    if settings.sentry.release:
        return settings.sentry.release
    try:
        return f"tomo@{metadata.version('tomo')}"
    except metadata.PackageNotFoundError:
        return "tomo@unknown"


def sentry_options(settings: Settings) -> dict[str, Any]:
    """The arguments of sentry_sdk.init for `settings` (the DSN must be set)."""
    cfg = settings.sentry
    if cfg.dsn is None:
        raise ValueError("TOMO_SENTRY__DSN is not set")
    scrubber = Scrubber(secret_values(settings))
    return {
        "dsn": cfg.dsn.get_secret_value(),
        "environment": cfg.environment,
        "release": _release(settings),
        "sample_rate": cfg.sample_rate,
        # no personal data (sentry-sdk's default: send_default_pii, now data_collection,
        # left unset), no local variables, no request bodies
        "include_local_variables": False,
        "max_request_body_size": "never",
        # only the default integrations (logging, excepthook, threads, ...): no patching
        # of the database, HTTP and Redis clients, whose spans and breadcrumbs carry data
        "auto_enabling_integrations": False,
        "before_send": scrubber.before_send,
        "before_breadcrumb": scrubber.before_breadcrumb,
    }


def start_sentry(settings: Settings) -> bool:
    """Send errors to Sentry when TOMO_SENTRY__DSN is set; True when it is on."""
    if settings.sentry.dsn is None:
        return False
    import sentry_sdk
    from sentry_sdk.utils import BadDsn

    try:
        sentry_sdk.init(**sentry_options(settings))
    except BadDsn:
        from brain.errors import ConfigError

        raise ConfigError(
            "TOMO_SENTRY__DSN is not a Sentry DSN (https://<key>@<host>/<project>): fix or "
            "unset it."
        ) from None
    log.info("errors go to Sentry (message text, memories and secrets stripped)")
    return True
