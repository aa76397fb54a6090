"""The federation client's retries and error messages (httpx's own mock transport)."""

from __future__ import annotations

import httpx
import pytest

from bots.federation.client import ClientError, FederationHttp

TOKEN = "tomofed_secret-token-value"


def _client(handler: httpx.MockTransport, *, tries: int = 4) -> FederationHttp:
    return FederationHttp(
        "http://fed.test",
        TOKEN,
        tries=tries,
        backoff_s=0.001,
        max_backoff_s=0.01,
        transport=handler,
    )


async def test_429_5xx_and_connection_errors_are_retried() -> None:
    answers: list[httpx.Response | Exception] = [
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"detail": "busy"}),
        httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "0"}),
        httpx.Response(200, json={"round": 1}),
    ]
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async with _client(httpx.MockTransport(handle)) as client:
        assert await client.json("GET", "/v1/status") == {"round": 1}
    assert seen == [f"Bearer {TOKEN}"] * 4


async def test_giving_up_says_why() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="bad gateway")

    async with _client(httpx.MockTransport(handle), tries=3) as client:
        with pytest.raises(ClientError, match=r"after 3 tries \(HTTP 502: bad gateway\)"):
            await client.json("GET", "/v1/status")


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "refused the token"),
        (403, "admin token"),
        (409, r"refused it \(409\): round 1 takes rank 4"),
        (413, "MB is over the server's upload limit"),
        (422, "cannot use it"),
    ],
)
async def test_refusals_are_final_and_clear(status: int, message: str) -> None:
    calls = 0

    def handle(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(status, json={"detail": "round 1 takes rank 4"})

    async with _client(httpx.MockTransport(handle)) as client:
        with pytest.raises(ClientError, match=message) as caught:
            await client.upload(
                b"\0" * 2_000_000, fingerprint="a" * 64, rank=4, alpha=8, examples=1
            )
    assert calls == 1
    assert TOKEN not in str(caught.value)


def test_only_http_urls() -> None:
    with pytest.raises(ClientError, match="http"):
        FederationHttp("ftp://fed.test", TOKEN)
