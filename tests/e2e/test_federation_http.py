"""The federation server end to end: a real uvicorn on 127.0.0.1, httpx clients, SQLite
and Postgres, the project's blob store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from bots.federation.client import ClientError, FederationHttp, pull_latest, push_update
from brain.persona.federation import aggregate
from brain.persona.peft_files import read_adapter, write_adapter, write_safetensors
from tests.e2e.federation_server import FP, LIMIT, OTHER_FP, Fed, running_server
from tests.federation_kit import direct_mean, f32, random_update


@pytest.fixture
async def fed(db_url: str, tmp_path: Path) -> AsyncIterator[Fed]:
    async with running_server(db_url, tmp_path) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def test_no_token_or_a_bad_one_is_refused(fed: Fed, http: httpx.AsyncClient) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token-of-this-server"},
        {"Authorization": f"Basic {fed.tokens['c0']}"},
    ):
        for method, path in (
            ("GET", "/v1/status"),
            ("GET", "/v1/uploads"),
            ("POST", "/v1/uploads"),
        ):
            response = await http.request(method, f"{fed.url}{path}", headers=headers)
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"] == "Bearer"
            assert isinstance(response.json()["detail"], str)
            assert "not-a-token" not in response.text
            assert fed.tokens["c0"] not in response.text
    await fed.store.revoke_client("c1")
    response = await http.get(f"{fed.url}/v1/status", headers=fed.auth("c1"))
    assert response.status_code == 401


async def test_an_upload_is_stored_listed_and_counted(fed: Fed, http: httpx.AsyncClient) -> None:
    response = await fed.upload(http, "c0", random_update(0), examples=42)
    assert response.status_code == 201, response.text
    stored = response.json()
    assert (stored["client"], stored["round"], stored["rank"], stored["examples"]) == (
        "c0",
        1,
        4,
        42,
    )
    listed = (await http.get(f"{fed.url}/v1/uploads", headers=fed.auth("c1"))).json()
    assert [u["id"] for u in listed] == [stored["id"]]
    status = (await http.get(f"{fed.url}/v1/status", headers=fed.auth("c1"))).json()
    assert status["round"] == 1
    assert (status["uploads"], status["clients"]) == (1, 1)
    assert (status["base_fingerprint"], status["rank"]) == (FP, 4)
    assert status["latest_aggregate"] is None
    assert len(fed.blob_files()) == 1


async def test_another_base_rank_or_layout_is_refused(fed: Fed, http: httpx.AsyncClient) -> None:
    lying = await fed.upload(http, "c1", random_update(1), rank=6)
    assert lying.status_code == 422
    assert "rank 4" in lying.json()["detail"]
    assert (await fed.upload(http, "c0", random_update(0))).status_code == 201
    other_base = await fed.upload(http, "c1", random_update(1), fingerprint=OTHER_FP)
    assert other_base.status_code == 409
    assert "base model" in other_base.json()["detail"]
    other_rank = await fed.upload(http, "c1", random_update(1, rank=8))
    assert other_rank.status_code == 409
    assert "rank 4" in other_rank.json()["detail"]
    other_layout = await fed.upload(http, "c1", random_update(1, layers=(0, 5)))
    assert other_layout.status_code == 409
    assert "modules" in other_layout.json()["detail"]
    bad_fp = await fed.upload(http, "c1", random_update(1), fingerprint="not-hex")
    assert bad_fp.status_code == 422
    assert len(await fed.store.uploads()) == 1
    assert len(fed.blob_files()) == 1


async def test_corrupt_or_non_lora_bodies_are_refused(fed: Fed, http: httpx.AsyncClient) -> None:
    garbage = await fed.upload(http, "c0", b"\x00\x01garbage" * 50)
    assert garbage.status_code == 422
    assert "safetensors" in garbage.json()["detail"]
    empty = await fed.upload(http, "c0", b"")
    assert empty.status_code == 422
    tensors = random_update(0).tensors()
    tensors["lm_head.weight"] = np.ones((3, 3), dtype=np.float32)
    not_lora = await fed.upload(http, "c0", write_safetensors(tensors))
    assert not_lora.status_code == 422
    assert "not half of a LoRA pair" in not_lora.json()["detail"]
    truncated = write_safetensors(random_update(0).tensors())[:-10]
    assert (await fed.upload(http, "c0", truncated)).status_code == 422
    assert await fed.store.uploads() == []
    assert fed.blob_files() == []


async def test_oversize_uploads_get_413(fed: Fed, http: httpx.AsyncClient) -> None:
    big = b"\0" * (LIMIT + 1)
    declared = await fed.upload(http, "c0", big)
    assert declared.status_code == 413
    assert str(LIMIT) in declared.json()["detail"]

    # no Content-Length (chunked): counted as it streams in
    reader, writer = await asyncio.open_connection("127.0.0.1", fed.port)
    writer.write(
        (
            f"POST /v1/uploads?fingerprint={FP}&rank=4&alpha=8&examples=1 HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {fed.tokens['c0']}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    chunk = b"\0" * 8192
    try:
        for _ in range(LIMIT // len(chunk) + 4):
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
    except ConnectionError:
        pass  # the server answered and closed while we were still sending
    head = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b'"detail"' in head
    assert await fed.store.uploads() == []
    assert fed.blob_files() == []


async def test_a_client_cut_off_mid_upload_leaves_nothing(
    fed: Fed, http: httpx.AsyncClient
) -> None:
    body = write_safetensors(random_update(0).tensors())
    _reader, writer = await asyncio.open_connection("127.0.0.1", fed.port)
    writer.write(
        (
            f"POST /v1/uploads?fingerprint={FP}&rank=4&alpha=8&examples=1 HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {fed.tokens['c0']}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body[: len(body) // 2]
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()  # gone mid-body
    await writer.wait_closed()
    await asyncio.sleep(0.3)
    assert await fed.store.uploads() == []
    assert fed.blob_files() == []  # no blob, no temporary file
    # the server is fine and the same client can upload in full
    assert (await fed.upload(http, "c0", random_update(0))).status_code == 201


async def test_concurrent_uploads_are_all_stored_and_listed(
    fed: Fed, http: httpx.AsyncClient
) -> None:
    updates = [random_update(i) for i in range(8)]
    responses = await asyncio.gather(
        *(fed.upload(http, f"c{i}", u, examples=i + 1) for i, u in enumerate(updates))
    )
    assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 8
    listed = (await http.get(f"{fed.url}/v1/uploads", headers=fed.auth("admin"))).json()
    assert {u["id"] for u in listed} == ids
    assert {u["client"] for u in listed} == {f"c{i}" for i in range(8)}
    status = (await http.get(f"{fed.url}/v1/status", headers=fed.auth("c0"))).json()
    assert (status["uploads"], status["clients"]) == (8, 8)
    assert len(fed.blob_files()) == 8


async def test_admin_aggregates_and_the_download_equals_the_direct_aggregate(
    fed: Fed, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    updates = [f32(random_update(i, alpha=4.0 * (i + 1))) for i in range(3)]
    examples = [10, 20, 30]
    for i, (u, n) in enumerate(zip(updates, examples, strict=True)):
        assert (await fed.upload(http, f"c{i}", u, examples=n)).status_code == 201
    # a client's newer upload replaces its earlier one in the round
    assert (await fed.upload(http, "c2", updates[2], examples=30)).status_code == 201

    url = f"{fed.url}/v1/aggregate"
    not_admin = await http.post(url, json={"method": "mean"}, headers=fed.auth("c0"))
    assert not_admin.status_code == 403
    too_few = await http.post(url, json={"min_clients": 4}, headers=fed.auth("admin"))
    assert too_few.status_code == 409
    assert "3 clients" in too_few.json()["detail"]
    done = await http.post(
        url, json={"method": "mean", "min_clients": 3}, headers=fed.auth("admin")
    )
    assert done.status_code == 201, done.text
    agg = done.json()
    assert (agg["round"], agg["method"], agg["rank"]) == (1, "mean", 4)
    assert [c["examples"] for c in agg["clients"]] == examples

    async with FederationHttp(fed.url, fed.tokens["c1"]) as client:
        info = await pull_latest(client, tmp_path / "pulled")
    assert info["round"] == 1
    pulled = read_adapter(tmp_path / "pulled")
    expected = aggregate(updates, weights=examples)  # rank 4: the best rank-4 approximation
    for name in expected.pairs:
        np.testing.assert_allclose(pulled.delta(name), expected.delta(name), rtol=1e-4, atol=1e-5)
    record = json.loads((tmp_path / "pulled" / "federation.json").read_text())
    assert (record["round"], record["base_fingerprint"]) == (1, FP)

    status = (await http.get(f"{fed.url}/v1/status", headers=fed.auth("c0"))).json()
    assert (status["round"], status["uploads"]) == (2, 0)
    assert status["latest_aggregate"]["round"] == 1
    assert status["base_fingerprint"] == FP  # round 2 stays on the same base model
    assert (await fed.upload(http, "c0", updates[0], fingerprint=OTHER_FP)).status_code == 409
    empty = await http.post(url, json={"min_clients": 1}, headers=fed.auth("admin"))
    assert empty.status_code == 409

    # round 2, robust: the median of the deltas, refactored at rank 4
    for i, u in enumerate(updates):
        assert (await fed.upload(http, f"c{i}", u)).status_code == 201
    median = await http.post(
        url, json={"method": "median", "min_clients": 3}, headers=fed.auth("admin")
    )
    assert median.status_code == 201, median.text
    async with FederationHttp(fed.url, fed.tokens["c0"]) as client:
        await pull_latest(client, tmp_path / "pulled")
    pulled = read_adapter(tmp_path / "pulled")
    expected = aggregate(updates, method="median")
    for name in expected.pairs:
        np.testing.assert_allclose(pulled.delta(name), expected.delta(name), rtol=1e-4, atol=1e-5)
    bad_trim = await http.post(
        url, json={"method": "trimmed", "trim": 0.6}, headers=fed.auth("admin")
    )
    assert bad_trim.status_code == 422


async def test_the_mean_over_full_rank_matches_exactly(fed: Fed, http: httpx.AsyncClient) -> None:
    """Two rank-4 clients whose ΔW live in one rank-4 space: the rank-4 aggregate is exact."""
    base = random_update(0)
    other = random_update(0)  # the same A, B scaled: same column and row spaces
    scaled = {
        n: type(p)(a=p.a * 0.5, b=p.b * 3.0, a_key=p.a_key, b_key=p.b_key)
        for n, p in other.pairs.items()
    }
    two = type(base)(pairs=scaled, rank=4, alpha=8.0)
    for who, u, n in (("c0", f32(base), 1), ("c1", f32(two), 3)):
        assert (await fed.upload(http, who, u, examples=n)).status_code == 201
    done = await http.post(f"{fed.url}/v1/aggregate", json={}, headers=fed.auth("admin"))
    assert done.status_code == 201
    weights = (
        await http.get(
            f"{fed.url}/v1/aggregates/1/adapter_model.safetensors", headers=fed.auth("c0")
        )
    ).content
    from brain.persona.peft_files import parse_update

    got = parse_update(weights, alpha=4.0)
    for name in base.pairs:
        np.testing.assert_allclose(
            got.delta(name), direct_mean([f32(base), f32(two)], [1, 3], name), rtol=1e-4, atol=1e-5
        )


async def test_downloads_need_an_aggregate(fed: Fed, http: httpx.AsyncClient) -> None:
    for path in ("/v1/aggregates/latest", "/v1/aggregates/1/adapter_config.json"):
        response = await http.get(f"{fed.url}{path}", headers=fed.auth("c0"))
        assert response.status_code == 404
        assert "aggregated" in response.json()["detail"]
    async with FederationHttp(fed.url, fed.tokens["c0"]) as client:
        with pytest.raises(ClientError, match="404"):
            await pull_latest(client, Path("/nonexistent/never-written"))


async def test_the_openapi_spec_describes_the_api(fed: Fed, http: httpx.AsyncClient) -> None:
    spec = (await http.get(f"{fed.url}/openapi.json")).json()
    paths = spec["paths"]
    assert {
        "/v1/uploads",
        "/v1/status",
        "/v1/aggregate",
        "/v1/aggregates/latest",
        "/v1/aggregates/{round_no}/adapter_model.safetensors",
        "/v1/aggregates/{round_no}/adapter_config.json",
    } <= set(paths)
    body = paths["/v1/uploads"]["post"]["requestBody"]["content"]
    assert "application/octet-stream" in body
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


# --- the client side: push and pull through the CLI -------------------------------------------


async def test_push_with_dp_and_pull_through_the_cli(
    fed: Fed, http: httpx.AsyncClient, tmp_path: Path, db_url: str
) -> None:
    from bots.cli import app

    data_dir = tmp_path / "client"
    run = data_dir / "persona" / "runs" / "persona-sft"
    write_adapter(random_update(3, alpha=16.0), run / "adapter")
    (run / "federation.json").write_text(json.dumps({"base_fingerprint": FP, "examples": 25}))
    env = {
        "TOMO_DATA_DIR": str(data_dir),
        "TOMO_DATABASE_URL": db_url,
        "TOMO_FEDERATION__SERVER_URL": fed.url,
        "TOMO_FEDERATION__TOKEN": fed.tokens["c5"],
    }
    runner = CliRunner()

    def tomo(*args: str, **extra: str) -> Result:
        return runner.invoke(app, list(args), env={**env, **extra})

    pushed = await asyncio.to_thread(
        tomo, "federation", "push", "--dp-clip", "5", "--dp-sigma", "0.01", "--dp-rounds", "3"
    )
    assert pushed.exit_code == 0, pushed.output
    assert "upload 1 of round 1" in pushed.output
    assert "-DP for this client over 3 round(s)" in pushed.output
    listed = (await http.get(f"{fed.url}/v1/uploads", headers=fed.auth("c0"))).json()
    assert [(u["client"], u["examples"], u["rank"], u["alpha"]) for u in listed] == [
        ("c5", 25, 4, 4.0)  # refactored after the noise: alpha = rank
    ]

    refused = await asyncio.to_thread(
        tomo, "federation", "push", TOMO_FEDERATION__TOKEN="wrong-token"
    )
    assert refused.exit_code == 1
    assert isinstance(refused.exception, ClientError)
    assert "401" in str(refused.exception)
    assert "wrong-token" not in str(refused.exception)

    added = await asyncio.to_thread(tomo, "federation", "token", "add", "ops", "--admin")
    assert added.exit_code == 0, added.output
    ops_token = added.stdout.strip().splitlines()[0]
    closed = await asyncio.to_thread(
        tomo, "federation", "aggregate", "--min-clients", "1", TOMO_FEDERATION__TOKEN=ops_token
    )
    assert closed.exit_code == 0, closed.output
    out = tmp_path / "pulled"
    pulled = await asyncio.to_thread(tomo, "federation", "pull", "--out", str(out))
    assert pulled.exit_code == 0, pulled.output
    assert "pulled round 1" in pulled.output
    assert read_adapter(out).rank == 4


async def test_push_update_reports_epsilon_and_sends_only_the_private_update(
    fed: Fed, tmp_path: Path
) -> None:
    from bots.federation.client import DpOptions

    update = random_update(0, scale=3.0)
    async with FederationHttp(fed.url, fed.tokens["c0"]) as client:
        result = await push_update(
            client,
            update,
            fingerprint=FP,
            examples=5,
            dp=DpOptions(clip=1.0, sigma=1.0, delta=1e-5, rounds=1),
            rng=np.random.default_rng(0),
        )
    assert result.epsilon == pytest.approx(5.2985, abs=1e-4)
    assert result.norm is not None
    assert result.norm > 1.0
    stored = (await fed.store.uploads())[0]
    sent = await fed.store.blob(stored.blob_key)
    assert sent != write_safetensors(update.tensors())


async def test_push_refuses_an_adapter_over_the_limit_before_sending_it(fed: Fed) -> None:
    big = random_update(0, shapes={"self_attn.q_proj": (2048, 2048)}, rank=8)
    async with FederationHttp(fed.url, fed.tokens["c0"]) as client:
        with pytest.raises(ClientError, match=r"over the server's upload limit .*\(413\)"):
            await push_update(client, big, fingerprint=FP, examples=1)
    assert await fed.store.uploads() == []
