"""`/v1/jobs/{id}/webhooks`: the completion webhook of a job and every attempt to deliver it."""

from __future__ import annotations

from fastapi import APIRouter

from api import jobs as service
from api.deps import Ctx, JobsCaller
from api.models import ErrorBody, WebhookAttemptOut, WebhookLogOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/webhooks",
    response_model=WebhookLogOut,
    responses={403: {"model": ErrorBody}, 404: {"model": ErrorBody}},
)
def job_webhooks(job_id: str, caller: JobsCaller, ctx: Ctx) -> WebhookLogOut:
    """The delivery (pending, delivered or failed) and its attempt log, oldest first; internal
    jobs' only for vendor staff, as the job itself."""
    service.visible_job(ctx, job_id, caller)
    delivery = ctx.store.webhook(job_id) or {}
    return WebhookLogOut(
        job_id=job_id,
        delivery_id=delivery.get("id"),
        state=delivery.get("state"),
        next_attempt_at=delivery.get("next_attempt_at"),
        attempts=[
            WebhookAttemptOut(**{k: row[k] for k in WebhookAttemptOut.model_fields})
            for row in ctx.store.deliveries(job_id)
        ],
    )
