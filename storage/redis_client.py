"""One way to open Redis for tomo (the bus and the rate limiter): the URL's password kept
out of every message, retries with backoff, and no socket timeout.

No socket timeout: with one, redis-py sends every command through asyncio.wait_for,
which on Python 3.11 can swallow a task's cancellation (CPython gh-86296), and a worker
could then never be stopped. TCP keepalive finds a dead peer instead.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brain.errors import ConfigError, StorageError

KEEPALIVE = {
    opt: value
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))
    if (opt := getattr(socket, name, None)) is not None
}


def redacted(url: str) -> tuple[str, list[str]]:
    """`scheme://host:port/db` for messages, and the password (as written in the URL and
    decoded) to scrub from any text."""
    parts = urlsplit(url)
    secrets = [parts.password, unquote(parts.password)] if parts.password else []
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    where = f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"
    return where, sorted(set(secrets), key=len, reverse=True)


class RedisClient:
    """A redis.asyncio client for `url` (redis:// or rediss://) and its error wording."""

    def __init__(
        self,
        url: SecretStr | str,
        *,
        retries: int,
        backoff_cap_s: float,
        backoff_base_s: float,
        connect_timeout_s: float,
        health_check_interval_s: int = 0,
    ) -> None:
        raw = url.get_secret_value() if isinstance(url, SecretStr) else url
        self.where, self._secrets = redacted(raw)
        try:
            self.redis: Redis = Redis.from_url(
                raw,
                decode_responses=False,
                retry=Retry(EqualJitterBackoff(cap=backoff_cap_s, base=backoff_base_s), retries),
                retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
                socket_connect_timeout=connect_timeout_s,
                socket_timeout=None,
                socket_keepalive=True,
                socket_keepalive_options=KEEPALIVE,
                health_check_interval=health_check_interval_s,
            )
        except ValueError as exc:
            raise ConfigError(
                f"TOMO_REDIS_URL is not a usable Redis URL ({self.scrub(str(exc))})."
            ) from None

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Redis errors in the block as a StorageError naming `doing`, without secrets."""
        try:
            yield
        except RedisError as exc:
            detail = self.scrub(str(exc)) or type(exc).__name__
            raise StorageError(f"Redis at {self.where} failed {doing}: {detail}") from None

    async def aclose(self) -> None:
        with suppress(RedisError):
            await self.redis.aclose()
