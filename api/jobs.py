"""Turning a ticket's request into a decision and, when it may run, a queued job."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from api.context import AppContext
from api.deps import Caller
from api.entitlements import (
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
from api.errors import NotFound, PaymentRequired, Refused, TicketServiceTaken, Unprocessable
from api.inventory import resolve_limit
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


def _settlement(ctx: AppContext, ticket_id: str | None, service: str) -> Settlement:
    if ticket_id is None:
        return Settlement()
    rows = ctx.store.settlements(ticket_id=ticket_id, service=service)
    return Settlement(
        paid=sum((Decimal(r["amount"]) for r in rows if r["kind"] == "payment"), Decimal("0")),
        guaranteed=any(r["kind"] == "guarantee" for r in rows),
    )


def _customer(ctx: AppContext, customer_id: str) -> dict:
    customer = ctx.store.get_customer(customer_id)
    if customer is None:
        raise NotFound(f"no customer {customer_id}")
    return customer


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

    # Idempotency first: the same request again gets the same job, even if rules changed since.
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
    inventory = ctx.settings.resolve(Path(site["inventory"]))
    if not inventory.exists():
        raise Unprocessable(f"the inventory of customer {body.customer_id} is missing on disk")
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
        settlement=_settlement(ctx, body.ticket_id, service.value),
        today=_today(),
    )
    decision_doc = decision.as_dict()
    decision_id = ctx.store.add_decision(
        ticket_id=body.ticket_id,
        customer_id=body.customer_id,
        service=service.value,
        request=request_doc,
        decision=decision_doc,
        caller=caller.token_id,
    )
    ctx.metrics.decisions.labels(service.value, _label(decision)).inc()
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
        settlement=_settlement(ctx, body.ticket_id, body.service),
        today=_today(),
    )
