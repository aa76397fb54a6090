"""The federation client (`tomo federation push|pull`), over httpx.

Requests are retried with exponential backoff (and the server's Retry-After) on 429,
on 5xx and on connection errors; 401, 403, 404, 409, 413 and 422 are final and become
a ClientError that says what to do. A retried upload that did reach the server the
first time is harmless: a client counts once a round, with its newest upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bots.retry import Retry, Verdict, with_backoff
from brain.errors import TomoError
from brain.persona.federation import epsilon, privatize
from brain.persona.peft_files import (
    LoraUpdate,
    parse_update,
    write_adapter_files,
    write_safetensors,
)

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
INFO_NAME = "federation.json"  # beside a pulled adapter: round, base fingerprint, method


class ClientError(TomoError):
    """The federation server refused a request, or could not be reached."""


class _Busy(Exception):
    """An answer worth another try (429, 5xx)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class _Policy:
    attempts: int
    first_delay_s: float
    max_delay_s: float


def _why(exc: Exception) -> str:
    if isinstance(exc, _Busy):
        return f"HTTP {exc.response.status_code}: {_detail(exc.response)}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class DpOptions:
    clip: float
    sigma: float
    delta: float = 1e-5
    rounds: int = 1


@dataclass(frozen=True)
class PushResult:
    upload: dict[str, Any]
    size: int
    epsilon: float | None  # with DP: (epsilon, delta)-DP over `rounds` uploads
    norm: float | None  # with DP: the update's norm before clipping


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase
    return detail if isinstance(detail, str) else json.dumps(detail)[:300]


class FederationHttp:
    """One server, one token; `request` retries what is worth retrying."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        tries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise ClientError(f"The server must be an http:// or https:// URL, not {server!r}.")
        self.server = server.rstrip("/")
        self.tries = max(1, tries)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._http = httpx.AsyncClient(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> FederationHttp:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def once() -> httpx.Response:
            response = await self._http.request(method, path, **kwargs)
            if response.status_code in RETRY_STATUS:
                raise _Busy(response)
            return response

        policy = _Policy(self.tries, self.backoff_s, self.max_backoff_s)
        try:
            response = await with_backoff(
                once,
                policy=policy,
                what=f"{method} {path}",
                judge=self._judge,
                log=log,
                describe=_why,
                label="federation: ",
            )
        except (httpx.TransportError, _Busy) as exc:
            raise ClientError(
                f"The federation server {self.server} did not answer after {self.tries} "
                f"tries ({_why(exc)})."
            ) from None
        return self._check(response, kwargs.get("content"))

    def _judge(self, exc: Exception) -> Verdict:
        if isinstance(exc, _Busy):
            after = exc.response.headers.get("retry-after", "")
            return min(float(after), self.max_backoff_s) if after.isdigit() else Retry.BACKOFF
        return Retry.BACKOFF if isinstance(exc, httpx.TransportError) else Retry.NO

    def _check(self, response: httpx.Response, body: Any) -> httpx.Response:
        code = response.status_code
        if code < 400:
            return response
        detail = _detail(response)
        if code == 401:
            raise ClientError(
                f"The server refused the token (401: {detail}): check --token or "
                "TOMO_FEDERATION__TOKEN, or ask the server's admin for one "
                "(`tomo federation token add NAME`)."
            )
        if code == 403:
            raise ClientError(f"Not allowed (403: {detail}): this needs an admin token.")
        if code == 409:
            raise ClientError(f"The server refused it (409): {detail}.")
        if code == 413:
            size = f"{len(body) / 1e6:.1f} MB " if isinstance(body, bytes) else ""
            raise ClientError(
                f"The adapter {size}is over the server's upload limit (413: {detail})."
            )
        if code == 422:
            raise ClientError(f"The server cannot use it (422): {detail}.")
        raise ClientError(f"The server answered {code}: {detail}.")

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self.request(method, path, **kwargs)).json()

    async def upload(
        self,
        data: bytes,
        *,
        fingerprint: str,
        rank: int,
        alpha: float,
        examples: int,
        rslora: bool = False,
    ) -> dict[str, Any]:
        params = {
            "fingerprint": fingerprint,
            "rank": rank,
            "alpha": alpha,
            "examples": examples,
            "rslora": str(rslora).lower(),
        }
        headers = {"Content-Type": "application/octet-stream"}
        found: dict[str, Any] = await self.json(
            "POST", "/v1/uploads", params=params, content=data, headers=headers
        )
        return found


async def push_update(
    http: FederationHttp,
    update: LoraUpdate,
    *,
    fingerprint: str,
    examples: int,
    dp: DpOptions | None = None,
    rng: np.random.Generator | None = None,
) -> PushResult:
    """Upload `update`; with `dp`, clipped, noised and factored again first (so what
    leaves this machine is the private update only)."""
    eps = norm = None
    if dp is not None:
        eps = epsilon(sigma=dp.sigma, rounds=dp.rounds, delta=dp.delta)
        update, norm = await asyncio.to_thread(
            privatize, update, clip=dp.clip, sigma=dp.sigma, rng=rng or _secure_rng()
        )
    data = await asyncio.to_thread(write_safetensors, update.tensors())
    # A body far over the limit may be cut off by the server's 413 before the answer can
    # be read (a broken pipe, not a status): ask for the limit first.
    limit = (await http.json("GET", "/v1/status")).get("max_upload_bytes")
    if isinstance(limit, int) and len(data) > limit:
        raise ClientError(
            f"The adapter is {len(data) / 1e6:.1f} MB, over the server's upload limit of "
            f"{limit / 1e6:.1f} MB (413): train with a lower rank or fewer target modules."
        )
    found = await http.upload(
        data,
        fingerprint=fingerprint,
        rank=update.rank,
        alpha=update.alpha,
        examples=examples,
        rslora=update.rslora,
    )
    return PushResult(upload=found, size=len(data), epsilon=eps, norm=norm)


def _secure_rng() -> np.random.Generator:
    import secrets

    return np.random.default_rng(secrets.randbits(128))


async def pull_latest(http: FederationHttp, out: Path) -> dict[str, Any]:
    """Download the latest aggregate into `out` as a peft adapter folder (replaced
    atomically), with federation.json beside it; returns the aggregate's description."""
    info: dict[str, Any] = await http.json("GET", "/v1/aggregates/latest")
    round_no = int(info["round"])
    weights = (
        await http.request("GET", f"/v1/aggregates/{round_no}/adapter_model.safetensors")
    ).content
    config = await http.json("GET", f"/v1/aggregates/{round_no}/adapter_config.json")
    if hashlib.sha256(weights).hexdigest() != info["sha256"]:
        raise ClientError(f"The aggregate of round {round_no} arrived damaged (SHA-256 differs).")
    await asyncio.to_thread(parse_update, weights, alpha=float(config["lora_alpha"]))
    extra = {
        INFO_NAME: json.dumps(
            {
                "round": round_no,
                "base_fingerprint": info["base_fingerprint"],
                "method": info["method"],
                "clients": len(info["clients"]),
                "server": http.server,
            },
            indent=2,
        )
    }
    await asyncio.to_thread(write_adapter_files, out, weights=weights, config=config, extra=extra)
    return info
