"""The federation API's bodies and answers, as they appear in its OpenAPI spec."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from storage.federation import Aggregate, Upload


class Problem(BaseModel):
    detail: str


class UploadOut(BaseModel):
    id: int
    client: str
    round: int
    base_fingerprint: str
    rank: int
    alpha: float
    rslora: bool
    examples: int
    size: int = Field(description="bytes of the safetensors file")
    sha256: str
    created_at: datetime


class AggregateClientOut(BaseModel):
    client: str
    upload: int
    examples: int


class AggregateOut(BaseModel):
    round: int
    method: str
    params: dict[str, float | int | str | None]
    clients: list[AggregateClientOut]
    base_fingerprint: str
    rank: int
    size: int
    sha256: str
    created_at: datetime


class StatusOut(BaseModel):
    round: int = Field(description="the round open for uploads")
    uploads: int = Field(description="uploads in this round")
    clients: int = Field(description="clients with an upload in this round")
    base_fingerprint: str | None
    rank: int | None
    max_upload_bytes: int
    latest_aggregate: AggregateOut | None


class AggregateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["mean", "median", "trimmed"] = "mean"
    trim: float = Field(default=0.2, ge=0.0, lt=0.5, description="trimmed: fraction cut per side")
    min_clients: int = Field(default=2, ge=1, le=100_000)


def upload_out(upload: Upload) -> UploadOut:
    return UploadOut(
        id=upload.id,
        client=upload.client,
        round=upload.round,
        base_fingerprint=upload.base_fingerprint,
        rank=upload.rank,
        alpha=upload.alpha,
        rslora=upload.rslora,
        examples=upload.examples,
        size=upload.size,
        sha256=upload.blob_key,
        created_at=upload.created_at,
    )


def aggregate_out(agg: Aggregate) -> AggregateOut:
    return AggregateOut(
        round=agg.round,
        method=agg.method,
        params=agg.params,
        clients=[AggregateClientOut.model_validate(c) for c in agg.clients],
        base_fingerprint=agg.base_fingerprint,
        rank=agg.rank,
        size=agg.size,
        sha256=agg.blob_key,
        created_at=agg.created_at,
    )
