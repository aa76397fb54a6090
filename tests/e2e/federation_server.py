"""A real federation server (uvicorn on 127.0.0.1) in the test's event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from bots.federation.server import create_app
from brain.persona.peft_files import LoraUpdate, write_safetensors
from storage.blobs import FileBlobStore
from storage.database import Database
from storage.federation import FederationStore
from tests.conftest import free_port

FP = "a" * 64  # the base model's fingerprint
OTHER_FP = "b" * 64
LIMIT = 64 * 1024


@dataclass
class Fed:
    url: str
    port: int
    store: FederationStore
    blobs: Path
    tokens: dict[str, str]  # "admin", "c0".."c7"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def blob_files(self) -> list[Path]:
        return sorted(p for p in self.blobs.rglob("*") if p.is_file())

    async def upload(
        self,
        http: httpx.AsyncClient,
        who: str,
        update: LoraUpdate | bytes,
        *,
        fingerprint: str = FP,
        examples: int = 10,
        rank: int | None = None,
    ) -> httpx.Response:
        body = update if isinstance(update, bytes) else write_safetensors(update.tensors())
        params: dict[str, str | int | float] = {
            "fingerprint": fingerprint,
            "rank": rank or (4 if isinstance(update, bytes) else update.rank),
            "alpha": 8.0 if isinstance(update, bytes) else update.alpha,
            "examples": examples,
            "rslora": "false" if isinstance(update, bytes) else str(update.rslora).lower(),
        }
        return await http.post(
            f"{self.url}/v1/uploads",
            params=params,
            content=body,
            headers={**self.auth(who), "Content-Type": "application/octet-stream"},
        )


@asynccontextmanager
async def running_server(db_url: str, tmp: Path, *, clients: int = 8) -> AsyncIterator[Fed]:
    db = Database(db_url)
    store = FederationStore(db, FileBlobStore(tmp / "blobs"))
    tokens = {"admin": await store.add_client("admin", admin=True)}
    for i in range(clients):
        tokens[f"c{i}"] = await store.add_client(f"c{i}")
    port = free_port()
    app = create_app(store, max_upload_bytes=LIMIT)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "the federation server did not start"
        yield Fed(
            url=f"http://127.0.0.1:{port}",
            port=port,
            store=store,
            blobs=tmp / "blobs",
            tokens=tokens,
        )
    finally:
        server.should_exit = True
        await task
        await db.aclose()
