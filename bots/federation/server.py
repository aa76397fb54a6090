"""The federation server (`tomo federation serve`): a FastAPI app under /v1.

Clients upload LoRA adapters (the safetensors file as the raw request body, what it is
as query parameters), an admin aggregates a round, everyone downloads the aggregate.
Every request carries `Authorization: Bearer <token>`; tokens are stored hashed
(storage/federation.py). Errors are JSON `{"detail": ...}` and never repeat a token.

A round is open until it is aggregated. Its first upload fixes what the others must
match: the base model's fingerprint, the rank and the adapted modules (after the first
aggregate, the aggregate fixes them for the next rounds too). Uploads and aggregation
take one lock, so no upload lands in a round while it is being closed; a client that
uploads twice in a round counts once, with its newest upload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match

from bots.federation.schemas import (
    AggregateIn,
    AggregateOut,
    Problem,
    StatusOut,
    UploadOut,
    aggregate_out,
    upload_out,
)
from brain.errors import StorageError
from brain.persona.federation import FederationError, aggregate, layout_digest
from brain.persona.peft_files import PeftFileError, adapter_config, parse_update, write_safetensors
from storage.federation import (
    Aggregate,
    FederationClient,
    FederationConflict,
    FederationStore,
    RoundTerms,
)

log = logging.getLogger(__name__)

FINGERPRINT = r"^[0-9a-f]{64}$"


@dataclass
class _State:
    store: FederationStore
    max_upload_bytes: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "a body that cannot be read or parsed"},
    401: {"model": Problem, "description": "no token, or an unknown or revoked one"},
    422: {"model": Problem, "description": "a parameter or body that cannot be used"},
}
_bearer = HTTPBearer(auto_error=False, description="a token from `tomo federation token add`")


def _too_large(limit: int) -> HTTPException:
    return HTTPException(
        413,
        f"the adapter is larger than this server's limit of {limit} bytes",
        headers={"Connection": "close"},
    )


async def current_client(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> FederationClient:
    """The client whose bearer token came with the request; 401 without a valid one."""
    if credentials is None:
        raise HTTPException(
            401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
        )
    state: _State = request.app.state.federation
    found = await state.store.authenticate(credentials.credentials)
    if found is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return found


async def admin_client(
    who: Annotated[FederationClient, Depends(current_client)],
) -> FederationClient:
    if not who.admin:
        raise HTTPException(403, f"client {who.name!r} is not an admin")
    return who


Client = Annotated[FederationClient, Depends(current_client)]
Admin = Annotated[FederationClient, Depends(admin_client)]
RoundNo = Annotated[int, Path(ge=1, le=2**31 - 1)]


def create_app(store: FederationStore, *, max_upload_bytes: int) -> FastAPI:
    """The federation app on `store`; uploads over `max_upload_bytes` get 413."""
    state = _State(store=store, max_upload_bytes=max_upload_bytes)
    app = FastAPI(
        title="tomo federation",
        version="1",
        description=(
            "Federated persona learning: clients upload LoRA adapters trained on their own "
            "data; an admin aggregates a round (FedAvg of the weight deltas, or a robust "
            "median / trimmed mean), refactored to the round's rank; clients download it."
        ),
    )

    app.state.federation = state

    v1 = APIRouter(prefix="/v1", responses=_ERRORS)

    @v1.post(
        "/uploads",
        status_code=201,
        summary="Upload an adapter for the open round",
        responses={
            409: {"model": Problem, "description": "another base model, rank or layout"},
            413: {"model": Problem, "description": "over the size limit"},
            422: {"model": Problem, "description": "not a usable LoRA adapter"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "adapter_model.safetensors of a peft LoRA adapter",
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
    )
    async def upload(
        request: Request,
        who: Client,
        fingerprint: Annotated[
            str, Query(pattern=FINGERPRINT, description="base model fingerprint (SHA-256)")
        ],
        rank: Annotated[int, Query(ge=1, le=4096)],
        alpha: Annotated[float, Query(gt=0, le=1e6)],
        examples: Annotated[int, Query(ge=0, le=10**12, description="training examples")],
        rslora: bool = False,
    ) -> UploadOut:
        limit = state.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        early = await state.store.round_terms(await state.store.current_round())
        if early is not None:  # refused before the body is read; checked again below
            _check_terms(early, fingerprint=fingerprint, rank=rank, layout=None, round_no=None)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _too_large(limit)
        except ClientDisconnect:
            log.info("federation upload cut off", extra={"client": who.name})
            raise HTTPException(400, "the upload was cut off; nothing was stored") from None
        data = bytes(body)
        del body
        try:
            update = await asyncio.to_thread(parse_update, data, alpha=alpha, rslora=rslora)
        except PeftFileError as exc:
            raise HTTPException(422, f"not a usable LoRA adapter: {exc}") from None
        if update.rank != rank:
            raise HTTPException(
                422, f"rank={rank} was given, but the tensors have rank {update.rank}"
            )
        layout = layout_digest(update)
        async with state.lock:
            round_no = await state.store.current_round()
            terms = await state.store.round_terms(round_no)
            if terms is not None:
                _check_terms(
                    terms, fingerprint=fingerprint, rank=rank, layout=layout, round_no=round_no
                )
            stored = await state.store.add_upload(
                who,
                data,
                round_no=round_no,
                base_fingerprint=fingerprint,
                rank=rank,
                alpha=alpha,
                rslora=rslora,
                examples=examples,
                layout=layout,
            )
        log.info("federation upload", extra={"client": who.name, "round": round_no})
        return upload_out(stored)

    @v1.get("/uploads", summary="Uploads of a round (default: the open one)")
    async def uploads(
        _who: Client,
        round_no: Annotated[int | None, Query(alias="round", ge=1, le=2**31 - 1)] = None,
    ) -> list[UploadOut]:
        round_no = round_no or await state.store.current_round()
        return [upload_out(u) for u in await state.store.uploads(round_no)]

    @v1.get("/status", summary="The open round, its uploads and the latest aggregate")
    async def status(_who: Client) -> StatusOut:
        round_no = await state.store.current_round()
        found = await state.store.uploads(round_no)
        terms = await state.store.round_terms(round_no)
        latest = await state.store.latest_aggregate()
        return StatusOut(
            round=round_no,
            uploads=len(found),
            clients=len({u.client for u in found}),
            base_fingerprint=terms.base_fingerprint if terms else None,
            rank=terms.rank if terms else None,
            max_upload_bytes=state.max_upload_bytes,
            latest_aggregate=aggregate_out(latest) if latest else None,
        )

    @v1.post(
        "/aggregate",
        status_code=201,
        summary="Aggregate the open round (admin)",
        responses={
            403: {"model": Problem, "description": "not an admin token"},
            409: {"model": Problem, "description": "too few clients, or aggregated already"},
            422: {"model": Problem, "description": "settings that cannot be used"},
        },
    )
    async def aggregate_round(settings: AggregateIn, _who: Admin) -> AggregateOut:
        async with state.lock:
            return aggregate_out(await _close_round(state, settings))

    @v1.get(
        "/aggregates/latest",
        summary="The latest aggregate",
        responses={404: {"model": Problem, "description": "no aggregate yet"}},
    )
    async def latest(_who: Client) -> AggregateOut:
        found = await state.store.latest_aggregate()
        if found is None:
            raise HTTPException(404, "no round has been aggregated yet")
        return aggregate_out(found)

    async def _by_round(round_no: int) -> Aggregate:
        found = await state.store.aggregate(round_no)
        if found is None:
            raise HTTPException(404, f"round {round_no} has not been aggregated")
        return found

    @v1.get(
        "/aggregates/{round_no}/adapter_config.json",
        summary="adapter_config.json of a round's aggregate",
        responses={404: {"model": Problem, "description": "no such aggregate"}},
    )
    async def aggregate_config(round_no: RoundNo, _who: Client) -> dict[str, Any]:
        return (await _by_round(round_no)).config

    @v1.get(
        "/aggregates/{round_no}/adapter_model.safetensors",
        summary="adapter_model.safetensors of a round's aggregate",
        response_class=Response,
        responses={
            200: {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                }
            },
            404: {"model": Problem, "description": "no such aggregate"},
        },
    )
    async def aggregate_weights(round_no: RoundNo, _who: Client) -> Response:
        found = await _by_round(round_no)
        data = await state.store.blob(found.blob_key)
        return Response(
            data, media_type="application/octet-stream", headers={"ETag": f'"{found.blob_key}"'}
        )

    app.include_router(v1)
    _error_handlers(app)
    return app


def _check_terms(
    terms: RoundTerms, *, fingerprint: str, rank: int, layout: str | None, round_no: int | None
) -> None:
    """409 unless the upload matches the round (layout None: not known yet)."""
    which = "the open round" if round_no is None else f"round {round_no}"
    if fingerprint != terms.base_fingerprint:
        raise HTTPException(
            409,
            f"{which} is for the base model {terms.base_fingerprint[:12]}...; this "
            f"adapter was trained on {fingerprint[:12]}...: train on the same base model",
        )
    if rank != terms.rank:
        raise HTTPException(
            409, f"{which} takes rank {terms.rank} adapters; this one has rank {rank}"
        )
    if layout is not None and layout != terms.layout:
        raise HTTPException(
            409,
            f"{which} takes adapters on other modules or shapes than this one "
            "(train with the same target modules)",
        )


async def _close_round(state: _State, settings: AggregateIn) -> Aggregate:
    store = state.store
    round_no = await store.current_round()
    chosen = await store.latest_uploads(round_no)
    if len(chosen) < settings.min_clients:
        raise HTTPException(
            409,
            f"round {round_no} has uploads from {len(chosen)} clients; "
            f"min_clients is {settings.min_clients}",
        )
    terms = await store.round_terms(round_no)
    assert terms is not None
    blobs = [await store.blob(u.blob_key) for u in chosen]

    def compute() -> tuple[bytes, dict[str, Any]]:
        updates = [
            parse_update(data, alpha=u.alpha, rslora=u.rslora)
            for u, data in zip(chosen, blobs, strict=True)
        ]
        result = aggregate(
            updates,
            method=settings.method,
            weights=[u.examples for u in chosen],
            trim=settings.trim,
        )
        return write_safetensors(result.tensors()), adapter_config(result)

    try:
        data, config = await asyncio.to_thread(compute)
    except (FederationError, PeftFileError) as exc:
        raise HTTPException(422, f"cannot aggregate round {round_no}: {exc}") from None
    params: dict[str, Any] = {"min_clients": settings.min_clients}
    if settings.method == "trimmed":
        params["trim"] = settings.trim
    try:
        return await store.add_aggregate(
            data,
            round_no=round_no,
            method=settings.method,
            params=params,
            clients=[{"client": u.client, "upload": u.id, "examples": u.examples} for u in chosen],
            terms=terms,
            config=config,
        )
    except FederationConflict as exc:
        raise HTTPException(409, str(exc)) from None


def _error_handlers(app: FastAPI) -> None:
    async def invalid(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{' '.join(str(part) for part in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return JSONResponse({"detail": problems or "invalid request"}, 422)

    async def storage_down(_request: Request, exc: Exception) -> JSONResponse:
        log.error("federation storage error: %s", exc)
        return JSONResponse({"detail": "the server's storage is unavailable; try again"}, 503)

    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("federation server error", exc_info=exc)
        return JSONResponse({"detail": "internal server error"}, 500)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            # Starlette names only the methods of the first route on the path; list them all.
            allowed: set[str] = set()
            for route in request.app.router.routes:
                if isinstance(route, APIRoute) and route.matches(request.scope)[0] != Match.NONE:
                    allowed |= route.methods or set()
            headers = {"Allow": ", ".join(sorted(allowed))}
            return JSONResponse({"detail": exc.detail}, 405, headers=headers)
        return await http_exception_handler(request, exc)

    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        RequestValidationError: invalid,
        StarletteHTTPException: http_error,
        StorageError: storage_down,
        Exception: unexpected,
    }
    for kind, handler in handlers.items():
        app.add_exception_handler(kind, handler)
