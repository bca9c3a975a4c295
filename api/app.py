"""The FastAPI application: `create_app(settings)` for tests and servers, `app` for uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.context import AppContext
from api.deps import ANY_ROLE, Ctx
from api.errors import ApiError, Unauthenticated
from api.models import ErrorBody, Health
from api.routes import admin, jobs, quotes, webhooks
from api.runner import Verifier, default_verifier
from api.settings import Settings, get_settings


def _error(status: int, code: str, message: str, detail=None, headers=None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "detail": jsonable_encoder(detail)}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(settings: Settings | None = None, *, verifier: Verifier | None = None) -> FastAPI:
    """An app whose lifespan opens the store and starts the worker pool.

    `verifier` replaces the testinfra verification (tests without the lab of hosts).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await run_in_threadpool(
            AppContext.start, settings or get_settings(), verifier or default_verifier
        )
        app.state.ctx = ctx
        try:
            yield
        finally:
            await run_in_threadpool(ctx.stop)

    app = FastAPI(
        title="emsops",
        summary="Entitlement-gated O&M jobs for Kangpai EMS sites",
        version="1",
        lifespan=lifespan,
        # The schema stays public at /openapi.json; no HTML docs pages (they fetch scripts from a
        # CDN, and sites are air-gapped).
        docs_url=None,
        redoc_url=None,
        responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}},
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        return _error(exc.status, exc.code, exc.message, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", "the request does not match the schema", exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(
            exc.status_code, "http_error", str(exc.detail), None, getattr(exc, "headers", None)
        )

    @app.get("/healthz", response_model=Health, tags=["system"])
    def healthz(ctx: Ctx) -> Health:
        """Unauthenticated: the store answers and its schema is current."""
        return Health(status="ok", schema_version=ctx.store.schema_version())

    @app.get(
        "/metrics",
        tags=["system"],
        dependencies=[Depends(ANY_ROLE)],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics(ctx: Ctx) -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for router in (jobs.router, webhooks.router, quotes.router, admin.router):
        app.include_router(router)
    return app


app = create_app()
