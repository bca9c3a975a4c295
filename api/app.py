"""The FastAPI application: `create_app(settings)` for tests and servers, `app` for uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.context import AppContext
from api.deps import ANY_ROLE, Ctx
from api.errors import (
    MAX_ERRORS,
    ApiError,
    PayloadTooLarge,
    Unauthenticated,
    error_body,
    validation_detail,
)
from api.models import ErrorBody, Health
from api.routes import admin, jobs, quotes, reports, webhooks
from api.runner import Verifier, default_verifier
from api.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _error(status: int, code: str, message: str, detail=None, headers=None) -> Response:
    return Response(
        error_body(code, message, jsonable_encoder(detail)),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


class BodyLimit:
    """Request bodies over `max_bytes` are answered 413: one that declares its length before
    anything routes or parses it, a streamed (chunked) one as soon as its bytes pass the limit.
    """

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request bodies are limited to {self.max_bytes} bytes"
        length = dict(scope["headers"]).get(b"content-length", b"")
        # The header's length first: int() refuses more than 4300 digits.
        if length.isdigit() and (len(length) > 18 or int(length) > self.max_bytes):
            response = _error(413, PayloadTooLarge.code, message)
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException: FastAPI passes it on from its body reading to our
                    # handler (anything else would become its generic 400).
                    raise StarletteHTTPException(413, message)
            return event

        await self.app(scope, counted, send)


def create_app(settings: Settings | None = None, *, verifier: Verifier | None = None) -> FastAPI:
    """An app whose lifespan opens the store and starts the worker pool.

    `verifier` replaces the testinfra verification (tests without the lab of hosts).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = await run_in_threadpool(
            AppContext.start, settings, verifier or default_verifier
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
        responses={
            401: {"model": ErrorBody},
            403: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthenticated) else None
        return _error(exc.status, exc.code, exc.message, exc.detail, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        message = "the request does not match the schema"
        if len(errors) > MAX_ERRORS:
            message += f" ({len(errors)} errors, the first {MAX_ERRORS} shown)"
        return _error(422, "invalid_request", message, validation_detail(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = PayloadTooLarge.code if exc.status_code == 413 else "http_error"
        return _error(
            exc.status_code, code, str(exc.detail), None, getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        # The guard behind every other handler: logged with its traceback, answered in the one
        # error shape without any of the exception's text (it may hold input or paths).
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal error; the API's log has the details")

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

    for router in (jobs.router, reports.router, webhooks.router, quotes.router, admin.router):
        app.include_router(router)
    return app


app = create_app()
