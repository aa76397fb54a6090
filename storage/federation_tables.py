"""SQLModel tables of the federation server (`tomo federation serve`).

Imported by storage/tables.py, so they are part of the one metadata that the
migrations are compared with (migration 0009).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Column, Text, UniqueConstraint, false
from sqlmodel import Field, SQLModel

from storage.tables import _utc_column


class FederationClientRow(SQLModel, table=True):
    """A client of the federation server: its name and the SHA-256 of its token."""

    __tablename__ = "federation_client"
    __table_args__ = (
        UniqueConstraint("name", name="uq_federation_client_name"),
        UniqueConstraint("token_hash", name="uq_federation_client_token"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str
    token_hash: str
    admin: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    created_at: datetime = _utc_column()
    revoked_at: datetime | None = _utc_column(nullable=True)


class FederationUploadRow(SQLModel, table=True):
    """An adapter a client uploaded for a round; its bytes are a blob."""

    __tablename__ = "federation_upload"

    id: int | None = Field(default=None, primary_key=True)
    client_id: int = Field(foreign_key="federation_client.id", index=True)
    round: int = Field(index=True)
    base_fingerprint: str
    rank: int
    alpha: float
    rslora: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    examples: int
    layout: str  # SHA-256 of the adapted modules and their shapes
    blob_key: str
    size: int
    created_at: datetime = _utc_column()


class FederationAggregateRow(SQLModel, table=True):
    """The aggregate of a round (one per round); its safetensors bytes are a blob."""

    __tablename__ = "federation_aggregate"
    __table_args__ = (UniqueConstraint("round", name="uq_federation_aggregate_round"),)

    id: int | None = Field(default=None, primary_key=True)
    round: int
    method: str
    params_json: str = Field(sa_column=Column(Text, nullable=False))
    clients_json: str = Field(sa_column=Column(Text, nullable=False))  # names and upload ids
    base_fingerprint: str
    rank: int
    layout: str
    blob_key: str
    size: int
    config_json: str = Field(sa_column=Column(Text, nullable=False))  # adapter_config.json
    created_at: datetime = _utc_column()
