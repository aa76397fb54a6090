"""`tomo federation`: serve, token add|list|revoke, push, pull, status, aggregate."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from brain.errors import ConfigError

if TYPE_CHECKING:
    from bots.federation.client import DpOptions, FederationHttp
    from bots.settings import Settings
    from storage.federation import FederationStore

federation_app = typer.Typer(
    help=(
        "Federated persona learning: `serve` a server that aggregates clients' LoRA "
        "adapters, `token add` for each client, then `push` an adapter and `pull` the "
        "aggregate. Only adapters leave a client, never its conversations."
    ),
    no_args_is_help=True,
)
token_app = typer.Typer(help="Client tokens of this server.", no_args_is_help=True)
federation_app.add_typer(token_app, name="token")


def _settings() -> Settings:
    from bots.cli import load_settings

    return load_settings()


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[FederationStore]:
    """The server's store: the project's database (migrated) and blob store."""
    from storage.blobs import FileBlobStore
    from storage.database import Database
    from storage.federation import FederationStore
    from storage.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.effective_database_url
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        # the same folder as bots.app.build_blobs
        yield FederationStore(db, FileBlobStore(settings.data_dir / "blobs"))
    finally:
        await db.aclose()


async def serve(settings: Settings, *, host: str, port: int, max_upload_bytes: int) -> None:
    import uvicorn

    from bots.federation.server import create_app

    async with open_store(settings) as store:
        app = create_app(store, max_upload_bytes=max_upload_bytes)
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        server = uvicorn.Server(config)
        typer.echo(f"tomo federation on http://{host}:{port} (OpenAPI: /openapi.json, /docs)")
        await server.serve()


@federation_app.command("serve")
def serve_command(
    host: Annotated[str | None, typer.Option(help="Default TOMO_FEDERATION__HOST.")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Default TOMO_FEDERATION__PORT.")
    ] = None,
) -> None:
    """Run the federation server (FastAPI + uvicorn); data in TOMO_DATABASE_URL and the
    data folder's blob store. Put TLS in front of it when it leaves 127.0.0.1."""
    from bots.logs import setup_logging

    settings = _settings()
    setup_logging(settings.log_level, fmt=settings.log_format, content=settings.log_content)
    fed = settings.federation
    asyncio.run(
        serve(
            settings,
            host=host or fed.host,
            port=port or fed.port,
            max_upload_bytes=fed.max_upload_bytes,
        )
    )


async def _with_store(settings: Settings, action: str, name: str, admin: bool) -> Any:
    async with open_store(settings) as store:
        if action == "add":
            return await store.add_client(name, admin=admin)
        if action == "revoke":
            return await store.revoke_client(name)
        return await store.clients()


@token_app.command("add")
def token_add(
    name: Annotated[str, typer.Argument(help="The client's name (unique).")],
    admin: Annotated[bool, typer.Option("--admin", help="May trigger aggregation.")] = False,
) -> None:
    """Register a client and print its new token (once: only its hash is kept)."""
    token = asyncio.run(_with_store(_settings(), "add", name, admin))
    typer.echo(token)
    kind = "admin" if admin else "client"
    typer.echo(f"{kind} {name!r} added; the token above is shown only now.", err=True)


@token_app.command("list")
def token_list() -> None:
    """The registered clients (never their tokens)."""
    for c in asyncio.run(_with_store(_settings(), "list", "", False)):
        state = f"revoked {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "active"
        typer.echo(f"{c.name}\t{'admin' if c.admin else 'client'}\t{state}")


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="The client's name.")]) -> None:
    """Revoke a client's token; its uploads of the open round no longer count."""
    if not asyncio.run(_with_store(_settings(), "revoke", name, False)):
        raise ConfigError(f"No active client named {name!r}.")
    typer.echo(f"revoked {name!r}")


ServerOpt = Annotated[
    str | None, typer.Option(help="The server's URL (default TOMO_FEDERATION__SERVER_URL).")
]
TokenOpt = Annotated[
    str | None,
    typer.Option(help="This client's token (better: TOMO_FEDERATION__TOKEN, not in `ps`)."),
]


def _http(settings: Settings, server: str | None, token: str | None) -> FederationHttp:
    from bots.federation.client import FederationHttp

    url = server or settings.federation.server_url
    secret = token or (
        settings.federation.token.get_secret_value() if settings.federation.token else None
    )
    if not url:
        raise ConfigError("Which server? Pass --server or set TOMO_FEDERATION__SERVER_URL.")
    if not secret:
        raise ConfigError("No token: pass --token or set TOMO_FEDERATION__TOKEN.")
    return FederationHttp(url, secret)


def _fingerprint(
    settings: Settings, adapter: Path, record: dict[str, Any], base: Path | None
) -> str:
    from brain.llm.llamacpp import bundled_model_path
    from brain.persona.federation import check_fits_base, gguf_base_fingerprint
    from brain.persona.peft_files import read_adapter

    if base is None and isinstance(record.get("base_fingerprint"), str):
        return str(record["base_fingerprint"])
    model = base or settings.llm.model_path or bundled_model_path()
    check_fits_base(read_adapter(adapter), model)
    return gguf_base_fingerprint(model)


@federation_app.command("push")
def push_command(
    server: ServerOpt = None,
    token: TokenOpt = None,
    adapter: Annotated[
        Path | None, typer.Option(help="A peft adapter folder (default: the newest trained).")
    ] = None,
    examples: Annotated[
        int | None, typer.Option(min=0, help="Examples it was trained on (default: recorded).")
    ] = None,
    base: Annotated[
        Path | None, typer.Option(help="The base GGUF it was trained on (default: recorded).")
    ] = None,
    dp_clip: Annotated[
        float | None, typer.Option(min=0.0, help="DP: clip the update's L2 norm to this.")
    ] = None,
    dp_sigma: Annotated[
        float | None, typer.Option(min=0.0, help="DP: noise std as a multiple of the clip.")
    ] = None,
    dp_delta: Annotated[float, typer.Option(help="DP: the delta of (epsilon, delta).")] = 1e-5,
    dp_rounds: Annotated[
        int, typer.Option(min=1, help="DP: rounds you will push in (epsilon covers them all).")
    ] = 1,
) -> None:
    """Upload a trained adapter to the server (optionally with differential privacy)."""
    from bots.federation.client import DpOptions
    from bots.federation.runs import adapter_record, newest_adapter
    from brain.persona.peft_files import read_adapter

    settings = _settings()
    http = _http(settings, server, token)
    folder = adapter or newest_adapter(settings.data_dir)
    record = adapter_record(folder)
    fingerprint = _fingerprint(settings, folder, record, base)
    count = examples if examples is not None else record.get("examples")
    if not isinstance(count, int):
        typer.echo("no example count recorded: weighing this adapter as 1 example", err=True)
        count = 1
    dp: DpOptions | None = None
    if dp_clip is not None or dp_sigma is not None:
        if not dp_clip or dp_sigma is None:
            raise ConfigError("Differential privacy needs both --dp-clip (> 0) and --dp-sigma.")
        dp = DpOptions(clip=dp_clip, sigma=dp_sigma, delta=dp_delta, rounds=dp_rounds)
    update = read_adapter(folder)
    result = asyncio.run(_push(http, update, fingerprint=fingerprint, examples=count, dp=dp))
    up = result.upload
    typer.echo(
        f"pushed {folder} ({result.size / 1e6:.1f} MB, rank {up['rank']}, {count} examples) "
        f"as upload {up['id']} of round {up['round']}"
    )
    if dp is not None and result.epsilon is not None:
        typer.echo(
            f"differential privacy: norm {result.norm:.4g} clipped to {dp.clip:g}, noise "
            f"sigma {dp.sigma:g}: ({result.epsilon:.3g}, {dp.delta:g})-DP for this client "
            f"over {dp.rounds} round(s)"
        )


async def _push(http: FederationHttp, update: Any, **kwargs: Any) -> Any:
    from bots.federation.client import push_update

    async with http:
        return await push_update(http, update, **kwargs)


@federation_app.command("pull")
def pull_command(
    out: Annotated[Path, typer.Option(help="The folder to write the peft adapter to.")],
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Download the latest aggregate as a peft adapter folder."""
    from bots.federation.client import pull_latest

    http = _http(_settings(), server, token)

    async def pull() -> dict[str, Any]:
        async with http:
            return await pull_latest(http, out)

    info = asyncio.run(pull())
    typer.echo(
        f"pulled round {info['round']} ({info['method']} of {len(info['clients'])} clients, "
        f"rank {info['rank']}) into {out}; convert it: tomo persona export --adapter {out}"
    )


@federation_app.command("status")
def status_command(server: ServerOpt = None, token: TokenOpt = None) -> None:
    """The server's open round, its uploads and the latest aggregate, as JSON."""
    http = _http(_settings(), server, token)

    async def status() -> Any:
        async with http:
            return await http.json("GET", "/v1/status")

    typer.echo(json.dumps(asyncio.run(status()), indent=2))


@federation_app.command("aggregate")
def aggregate_command(
    server: ServerOpt = None,
    token: TokenOpt = None,
    method: Annotated[str, typer.Option(help="mean, median or trimmed.")] = "mean",
    trim: Annotated[float, typer.Option(help="trimmed: fraction cut per side.")] = 0.2,
    min_clients: Annotated[int, typer.Option(min=1)] = 2,
) -> None:
    """Close the open round (admin token): aggregate its uploads."""
    http = _http(_settings(), server, token)
    body = {"method": method, "trim": trim, "min_clients": min_clients}

    async def close() -> Any:
        async with http:
            return await http.json("POST", "/v1/aggregate", json=body)

    found = asyncio.run(close())
    typer.echo(
        f"round {found['round']} aggregated ({found['method']} of {len(found['clients'])} "
        f"clients, rank {found['rank']})"
    )
