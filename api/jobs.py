"""Turning a ticket's request into a decision and, when it may run, a queued job."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from api.context import AppContext
from api.deps import Caller
from api.entitlements import (
    INTERNAL,
    Contract,
    ContractState,
    Decision,
    Outcome,
    Request,
    Service,
    Settlement,
    Tier,
    decide,
)
from api.errors import (
    Forbidden,
    NotFound,
    PaymentRequired,
    Refused,
    TicketServiceTaken,
    Unprocessable,
)
from api.inventory import resolve_limit, site_inventory
from api.models import QuoteRequest


def _today() -> date:
    return datetime.now(UTC).date()


def _contract(ctx: AppContext, customer_id: str) -> Contract | None:
    row = ctx.store.get_contract(customer_id)
    if row is None:
        return None
    return Contract(
        tier=Tier(row["tier"]),
        state=ContractState(row["state"]),
        licensed_modules=frozenset(row["licensed_modules"]),
        version_line=row["version_line"],
        ends_on=date.fromisoformat(row["ends_on"]) if row["ends_on"] else None,
    )


def _settlement(
    ctx: AppContext, ticket_id: str | None, service: str, customer_id: str
) -> Settlement:
    """What the ticket has on record for the service, counting only this customer's records."""
    if ticket_id is None:
        return Settlement()
    rows = ctx.store.settlements(ticket_id=ticket_id, service=service, customer_id=customer_id)
    return Settlement(
        paid=sum((Decimal(r["amount"]) for r in rows if r["kind"] == "payment"), Decimal("0")),
        guaranteed=any(r["kind"] == "guarantee" for r in rows),
    )


def _customer(ctx: AppContext, customer_id: str) -> dict:
    customer = ctx.store.get_customer(customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer


def visible_job(ctx: AppContext, job_id: str, caller: Caller) -> dict:
    """The job, when the caller may see it: internal work (backup, drill, site) is vendor
    staff's, for every route that reads or acts on a job."""
    job = ctx.store.get_job(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    if job["service"] in INTERNAL and not caller.is_vendor_staff:
        raise Forbidden(f"{job['service']} jobs are internal vendor work")
    return job


def fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def submit_job(ctx: AppContext, *, body: Any, caller: Caller) -> tuple[dict, bool]:
    """Decide, record the decision, and queue the job when it may run.

    Returns (job, created). Raises the API errors for 402/403/404/409/422; none of them runs
    anything.
    """
    service = Service(body.service)
    request_doc = body.model_dump(mode="json")
    print_ = fingerprint({k: v for k, v in request_doc.items() if k != "ticket_id"})
    _customer(ctx, body.customer_id)

    # Who may ask before what was asked: replaying an engineer's request must not hand the
    # ticket system that internal job.
    if service in INTERNAL and not caller.is_vendor_staff:
        decision = decide(
            Request(service=service, by_vendor_staff=False),
            contract=None,
            prices=ctx.prices,
            settlement=Settlement(),
            today=_today(),
        )
        _record(ctx, body, request_doc, decision, caller)
        _raise_unless_runnable(decision, decision.as_dict())

    # Idempotency next: the same request again gets the same job, even if rules changed since.
    existing = ctx.store.job_for_ticket(ticket_id=body.ticket_id, service=service.value)
    if existing is not None:
        if existing["fingerprint"] == print_:
            return existing, False
        raise TicketServiceTaken(
            f"ticket {body.ticket_id} already has a {service.value} job with other parameters",
            detail={"job_id": existing["id"]},
        )

    site = ctx.store.get_site(body.customer_id)
    if site is None:
        raise Unprocessable(f"customer {body.customer_id} has no site inventory on record")
    # Checked again at every job: the file may have changed since the site was recorded, and
    # the real path is the key of the host locks.
    inventory = site_inventory(ctx.settings, site["inventory"])
    targets = resolve_limit(inventory, body.limit)

    parameters = request_doc["parameters"]
    decision = decide(
        Request(
            service=service,
            by_vendor_staff=caller.is_vendor_staff,
            target_groups=targets,
            installed_version=site["installed_version"],
            target_version=parameters.get("target_version"),
            modules=(
                frozenset(parameters["modules"]) if parameters.get("modules") is not None else None
            ),
        ),
        contract=_contract(ctx, body.customer_id),
        prices=ctx.prices,
        settlement=_settlement(ctx, body.ticket_id, service.value, body.customer_id),
        today=_today(),
    )
    decision_doc = decision.as_dict()
    decision_id = _record(ctx, body, request_doc, decision, caller)
    _raise_unless_runnable(decision, decision_doc)

    playbook = ctx.settings.project_dir / "playbooks" / f"{service.value}.yml"
    if not playbook.is_file():
        raise Unprocessable(f"this installation has no catalog playbook for {service.value}")
    job, created = ctx.store.create_job(
        ticket_id=body.ticket_id,
        customer_id=body.customer_id,
        service=service.value,
        limit_pattern=body.limit,
        inventory=str(inventory),
        hosts=sorted(targets),
        parameters=parameters,
        note=body.note,
        fingerprint=print_,
        decision_id=decision_id,
        decision=decision_doc,
        created_by=caller.token_id,
    )
    if created:
        ctx.runner.submit(job["id"])
    return job, created


def _record(
    ctx: AppContext, body: Any, request_doc: dict, decision: Decision, caller: Caller
) -> str:
    """Store the decision (refusals too) and count it; returns its id."""
    decision_id = ctx.store.add_decision(
        ticket_id=body.ticket_id,
        customer_id=body.customer_id,
        service=body.service,
        request=request_doc,
        decision=decision.as_dict(),
        caller=caller.token_id,
    )
    ctx.metrics.decisions.labels(body.service, _label(decision)).inc()
    return decision_id


def _label(decision: Decision) -> str:
    if decision.outcome is Outcome.BILLABLE:
        return "billable_settled" if decision.settled else "billable_unpaid"
    return decision.outcome.value


def _raise_unless_runnable(decision: Decision, doc: dict[str, Any]) -> None:
    if decision.outcome is Outcome.REFUSED:
        raise Refused(decision.reason, detail=doc)
    if not decision.runnable:
        raise PaymentRequired(
            "billable: runs once the fee is received or a sales guarantee is recorded",
            detail=doc,
        )


def quote(ctx: AppContext, *, body: QuoteRequest) -> Decision:
    _customer(ctx, body.customer_id)
    return decide(
        Request(
            service=Service(body.service),
            ticket_started_at=body.ticket_started_at,
            ticket_ended_at=body.ticket_ended_at,
            long_distance=body.long_distance,
        ),
        contract=_contract(ctx, body.customer_id),
        prices=ctx.prices,
        settlement=_settlement(ctx, body.ticket_id, body.service, body.customer_id),
        today=_today(),
        onsite_max_days=ctx.settings.onsite_max_days,
    )
