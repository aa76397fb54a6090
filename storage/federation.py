"""FederationStore: the federation server's clients, uploads and aggregates.

Rows in the project's database (SQLite or Postgres, tables in federation_tables.py),
adapter bytes in the project's blob store. An upload is written blob first (the blob
store writes a temporary file and renames it into place), then its row: a crash leaves
either nothing or a whole blob that no row names, never a row without its bytes.

Tokens are 32 random bytes; only their SHA-256 is stored (a fast hash is enough for a
secret of that much entropy), looked up by hash and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from brain.errors import InputError
from brain.ports import BlobStore
from storage.database import Database
from storage.federation_tables import (
    FederationAggregateRow,
    FederationClientRow,
    FederationUploadRow,
)

TOKEN_PREFIX = "tomofed_"


class FederationConflict(InputError):
    """A write that lost to another one (a name taken, a round already aggregated)."""


@dataclass(frozen=True)
class FederationClient:
    id: int
    name: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class Upload:
    id: int
    client: str
    round: int
    base_fingerprint: str
    rank: int
    alpha: float
    rslora: bool
    examples: int
    layout: str
    blob_key: str
    size: int
    created_at: datetime


@dataclass(frozen=True)
class Aggregate:
    id: int
    round: int
    method: str
    params: dict[str, Any]
    clients: list[dict[str, Any]]  # [{"client": name, "upload": id, "examples": n}]
    base_fingerprint: str
    rank: int
    layout: str
    blob_key: str
    size: int
    config: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class RoundTerms:
    """What every upload of a round must match: set by the round's first upload, or by
    the last aggregate (the federation stays on one base model and rank)."""

    base_fingerprint: str
    rank: int
    layout: str


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


def _client(row: FederationClientRow) -> FederationClient:
    assert row.id is not None
    return FederationClient(
        id=row.id,
        name=row.name,
        admin=row.admin,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _upload(row: FederationUploadRow, client: str) -> Upload:
    assert row.id is not None
    return Upload(
        id=row.id,
        client=client,
        round=row.round,
        base_fingerprint=row.base_fingerprint,
        rank=row.rank,
        alpha=row.alpha,
        rslora=row.rslora,
        examples=row.examples,
        layout=row.layout,
        blob_key=row.blob_key,
        size=row.size,
        created_at=row.created_at,
    )


def _aggregate(row: FederationAggregateRow) -> Aggregate:
    assert row.id is not None
    return Aggregate(
        id=row.id,
        round=row.round,
        method=row.method,
        params=json.loads(row.params_json),
        clients=json.loads(row.clients_json),
        base_fingerprint=row.base_fingerprint,
        rank=row.rank,
        layout=row.layout,
        blob_key=row.blob_key,
        size=row.size,
        config=json.loads(row.config_json),
        created_at=row.created_at,
    )


class FederationStore:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self.db = db
        self.blobs = blobs

    # clients ----------------------------------------------------------------------------

    async def add_client(self, name: str, *, admin: bool = False) -> str:
        """Register a client; returns its new token (shown once, never stored)."""
        if not name or len(name) > 100 or not name.isprintable():
            raise InputError("A client name is 1-100 printable characters.")
        token = new_token()
        row = FederationClientRow(
            name=name, token_hash=hash_token(token), admin=admin, created_at=_now()
        )
        try:
            async with self.db.session() as s:
                s.add(row)
                await s.commit()
        except IntegrityError:
            raise FederationConflict(f"A client named {name!r} already exists.") from None
        return token

    async def revoke_client(self, name: str) -> bool:
        async with self.db.session() as s:
            row = (
                await s.exec(select(FederationClientRow).where(FederationClientRow.name == name))
            ).first()
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = _now()
            s.add(row)
            await s.commit()
            return True

    async def clients(self) -> list[FederationClient]:
        async with self.db.session(autocommit=True) as s:
            rows = (
                await s.exec(select(FederationClientRow).order_by(col(FederationClientRow.id)))
            ).all()
        return [_client(r) for r in rows]

    async def authenticate(self, token: str) -> FederationClient | None:
        """The client holding `token`, or None (unknown or revoked)."""
        digest = hash_token(token)
        async with self.db.session(autocommit=True) as s:
            row = (
                await s.exec(
                    select(FederationClientRow).where(FederationClientRow.token_hash == digest)
                )
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.token_hash.encode(), digest.encode()):
            return None  # pragma: no cover - the lookup was by this very hash
        return _client(row)

    # rounds and uploads -------------------------------------------------------------------

    async def current_round(self) -> int:
        """The round open for uploads: one past the last aggregated round."""
        async with self.db.session(autocommit=True) as s:
            last = (await s.exec(select(func.max(FederationAggregateRow.round)))).one()
        return int(last or 0) + 1

    async def round_terms(self, round_no: int) -> RoundTerms | None:
        async with self.db.session(autocommit=True) as s:
            first = (
                await s.exec(
                    select(FederationUploadRow)
                    .where(FederationUploadRow.round == round_no)
                    .order_by(col(FederationUploadRow.id))
                    .limit(1)
                )
            ).first()
        if first is not None:
            return RoundTerms(first.base_fingerprint, first.rank, first.layout)
        last = await self.latest_aggregate()  # no upload yet: the last round's terms
        if last is not None:
            return RoundTerms(last.base_fingerprint, last.rank, last.layout)
        return None

    async def add_upload(
        self,
        client: FederationClient,
        data: bytes,
        *,
        round_no: int,
        base_fingerprint: str,
        rank: int,
        alpha: float,
        rslora: bool,
        examples: int,
        layout: str,
    ) -> Upload:
        """Store the bytes (atomically), then the row that names them."""
        key = await self.blobs.put(data, mime="application/octet-stream")
        row = FederationUploadRow(
            client_id=client.id,
            round=round_no,
            base_fingerprint=base_fingerprint,
            rank=rank,
            alpha=alpha,
            rslora=rslora,
            examples=examples,
            layout=layout,
            blob_key=key,
            size=len(data),
            created_at=_now(),
        )
        try:
            async with self.db.session() as s:
                s.add(row)
                await s.commit()
        except BaseException:
            await self._drop_unreferenced(key)
            raise
        return _upload(row, client.name)

    async def _drop_unreferenced(self, key: str) -> None:
        try:
            async with self.db.session(autocommit=True) as s:
                used = (
                    await s.exec(
                        select(func.count())
                        .select_from(FederationUploadRow)
                        .where(FederationUploadRow.blob_key == key)
                    )
                ).one()
            if not used:
                await self.blobs.delete(key)
        except Exception:  # the original error matters more; a stray blob is harmless
            return

    async def uploads(self, round_no: int | None = None) -> list[Upload]:
        """Every upload (of one round, or all), oldest first."""
        query = select(FederationUploadRow, FederationClientRow.name).join(
            FederationClientRow,
            col(FederationClientRow.id) == col(FederationUploadRow.client_id),
        )
        if round_no is not None:
            query = query.where(FederationUploadRow.round == round_no)
        async with self.db.session(autocommit=True) as s:
            rows = (await s.exec(query.order_by(col(FederationUploadRow.id)))).all()
        return [_upload(row, name) for row, name in rows]

    async def latest_uploads(self, round_no: int) -> list[Upload]:
        """Each client's newest upload of the round (a client counts once), clients
        revoked since left out."""
        revoked = {c.name for c in await self.clients() if c.revoked_at is not None}
        newest: dict[str, Upload] = {}
        for upload in await self.uploads(round_no):
            if upload.client not in revoked:
                newest[upload.client] = upload
        return sorted(newest.values(), key=lambda u: u.id)

    async def blob(self, key: str) -> bytes:
        return await self.blobs.get(key)

    # aggregates --------------------------------------------------------------------------

    async def add_aggregate(
        self,
        data: bytes,
        *,
        round_no: int,
        method: str,
        params: dict[str, Any],
        clients: list[dict[str, Any]],
        terms: RoundTerms,
        config: dict[str, Any],
    ) -> Aggregate:
        key = await self.blobs.put(data, mime="application/octet-stream")
        row = FederationAggregateRow(
            round=round_no,
            method=method,
            params_json=json.dumps(params),
            clients_json=json.dumps(clients),
            base_fingerprint=terms.base_fingerprint,
            rank=terms.rank,
            layout=terms.layout,
            blob_key=key,
            size=len(data),
            config_json=json.dumps(config),
            created_at=_now(),
        )
        try:
            async with self.db.session() as s:
                s.add(row)
                await s.commit()
        except IntegrityError:
            raise FederationConflict(f"Round {round_no} has already been aggregated.") from None
        return _aggregate(row)

    async def aggregate(self, round_no: int) -> Aggregate | None:
        async with self.db.session(autocommit=True) as s:
            row = (
                await s.exec(
                    select(FederationAggregateRow).where(FederationAggregateRow.round == round_no)
                )
            ).first()
        return None if row is None else _aggregate(row)

    async def latest_aggregate(self) -> Aggregate | None:
        async with self.db.session(autocommit=True) as s:
            row = (
                await s.exec(
                    select(FederationAggregateRow)
                    .order_by(col(FederationAggregateRow.round).desc())
                    .limit(1)
                )
            ).first()
        return None if row is None else _aggregate(row)
