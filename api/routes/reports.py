"""`/v1/jobs/{id}/report` and `/signoff`: a job's inspection report, and an engineer's signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from api import jobs as service
from api.deps import Allow, Caller, Ctx, JobsCaller
from api.models import ErrorBody, InspectionReportOut, SignoffRequest
from api.reports import data as data_report
from api.reports import inspection
from api.tokens import Role

router = APIRouter(prefix="/v1/jobs", tags=["reports"])
# Only an engineer signs a manual inspection (the ticket system and sales never do).
EngineerCaller = Annotated[Caller, Depends(Allow(Role.ENGINEER))]


@router.get(
    "/{job_id}/report",
    response_model=InspectionReportOut,
    responses={
        200: {"content": {"text/html": {}}, "description": "JSON, or HTML with format=html "
                                                           "or Accept: text/html"},
        404: {"model": ErrorBody, "description": "no such job, or a job without a report"},
        409: {"model": ErrorBody, "description": "the job has not ended yet"},
    },
)
def get_report(
    job_id: str,
    request: Request,
    caller: JobsCaller,
    ctx: Ctx,
    format: Annotated[str | None, Query(pattern="^(json|html)$")] = None,  # noqa: A002
):
    """The report of an ended job: an inspect job's inspection report (manual ones:
    awaiting_signoff or signed), a troubleshoot_data job's data report."""
    job = service.visible_job(ctx, job_id, caller)
    wants_html = format == "html" or (
        format is None and "text/html" in request.headers.get("accept", ""))
    if job["service"] == "troubleshoot_data":
        report = data_report.job_report(ctx, job)
        if wants_html:
            return HTMLResponse(data_report.render_html(report))
        return JSONResponse(report)
    report = inspection.job_report(ctx, job)
    if wants_html:
        return HTMLResponse(inspection.render_html(report))
    return InspectionReportOut(**report)


@router.post(
    "/{job_id}/signoff",
    response_model=InspectionReportOut,
    responses={
        403: {"model": ErrorBody, "description": "only an engineer signs"},
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "automated, already signed, or still running"},
    },
)
def sign_report(job_id: str, body: SignoffRequest, caller: EngineerCaller,
                ctx: Ctx) -> InspectionReportOut:
    """Sign a manual inspection's report with the engineer's remarks (once)."""
    job = service.visible_job(ctx, job_id, caller)
    report = inspection.sign_job_report(ctx, job, signed_by=caller.token_id,
                                        role=caller.role.value, remarks=body.remarks)
    return InspectionReportOut(**report)
