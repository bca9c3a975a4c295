"""`/v1/jobs/{id}/webhooks`: the completion webhook of a job and every attempt to deliver it."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AnyCaller, Ctx
from api.errors import NotFound
from api.models import ErrorBody, WebhookAttemptOut, WebhookLogOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}/webhooks", response_model=WebhookLogOut, responses={404: {"model": ErrorBody}}
)
def job_webhooks(job_id: str, _: AnyCaller, ctx: Ctx) -> WebhookLogOut:
    """The delivery (pending, delivered or failed) and its attempt log, oldest first."""
    if ctx.store.get_job(job_id) is None:
        raise NotFound(f"no job {job_id}")
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
