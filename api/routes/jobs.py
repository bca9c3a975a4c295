"""`/v1/jobs`: submit, read, follow and cancel playbook runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from api import jobs as service
from api.context import AppContext
from api.deps import Ctx, JobsCaller
from api.errors import Unprocessable
from api.models import ErrorBody, EventOut, EventPage, JobOut, JobRequest
from api.store import TERMINAL

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
SSE_POLL_S = 0.5
MAX_COUNTER = 2**31 - 1  # event counters are stored as (SQLite/PostgreSQL) integers


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "the same request was made before: its job"},
        402: {"model": ErrorBody, "description": "billable and unpaid: the quote"},
        403: {"model": ErrorBody, "description": "refused by a catalog rule, or role"},
        404: {"model": ErrorBody, "description": "unknown customer"},
        409: {"model": ErrorBody, "description": "host held, or ticket+service taken"},
    },
)
def submit_job(
    body: JobRequest,
    response: Response,
    caller: JobsCaller,
    ctx: Ctx,
) -> JobOut:
    """Decide from the customer's entitlements and queue the playbook run when it may run."""
    job, created = service.submit_job(ctx, body=body, caller=caller)
    if not created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/jobs/{job['id']}"
    return JobOut.from_row(job)


@router.get("/{job_id}", response_model=JobOut, responses={404: {"model": ErrorBody}})
def get_job(job_id: str, caller: JobsCaller, ctx: Ctx) -> JobOut:
    return JobOut.from_row(service.visible_job(ctx, job_id, caller))


@router.post("/{job_id}/cancel", response_model=JobOut, responses={404: {"model": ErrorBody}})
def cancel_job(job_id: str, caller: JobsCaller, ctx: Ctx) -> JobOut:
    """Queued jobs are canceled at once; a running playbook is stopped within about a second."""
    service.visible_job(ctx, job_id, caller)
    return JobOut.from_row(ctx.runner.cancel(job_id))


@router.get(
    "/{job_id}/events",
    response_model=EventPage,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "a page of events, or a stream with Accept: text/event-stream",
        },
        404: {"model": ErrorBody},
    },
)
def job_events(
    job_id: str,
    request: Request,
    caller: JobsCaller,
    ctx: Ctx,
    after: Annotated[int, Query(ge=0, le=MAX_COUNTER, description="last counter already seen")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    last_event_id: Annotated[
        str | None,
        Header(pattern=r"^[0-9]{1,10}$", description="the last `id:` a stream delivered"),
    ] = None,
):
    """Redacted events in counter order: a page, or server-sent events until the job ends."""
    job = service.visible_job(ctx, job_id, caller)
    if "text/event-stream" in request.headers.get("accept", ""):
        # [0-9] in the pattern, not \d or isdigit(): "²" is a digit to those and not to int().
        start = after if last_event_id is None else int(last_event_id)
        if start > MAX_COUNTER:
            raise Unprocessable("Last-Event-ID is larger than any event counter")
        return StreamingResponse(
            _stream(ctx, job_id, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )
    events = ctx.store.events(job_id, after=after, limit=limit)
    return EventPage(
        job_id=job_id,
        state=job["state"],
        events=[EventOut(**e) for e in events],
        next_after=events[-1]["counter"] if events else after,
    )


async def _stream(ctx: AppContext, job_id: str, after: int) -> AsyncIterator[str]:
    while True:
        # Read the state before the events: a job that was terminal then has no later events.
        job = await run_in_threadpool(ctx.store.get_job, job_id)
        events = await run_in_threadpool(ctx.store.events, job_id, after=after, limit=500)
        for event in events:
            after = event["counter"]
            payload = EventOut(**event).model_dump_json()
            yield f"id: {after}\nevent: {event['event']}\ndata: {payload}\n\n"
        if job["state"] in TERMINAL and not events:
            yield f"event: end\ndata: {json.dumps({'state': job['state']})}\n\n"
            return
        if not events:
            await asyncio.sleep(SSE_POLL_S)
