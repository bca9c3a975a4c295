"""Customers, their contract and site (admin), and per-ticket payments and guarantees."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.context import AppContext
from api.deps import (
    SETTLEMENT_ROLES,
    AdminCaller,
    Ctx,
    SettlementsCaller,
    StaffCaller,
    require_role,
)
from api.errors import NotFound, Unprocessable
from api.inventory import site_inventory
from api.models import (
    ContractIn,
    ContractOut,
    CustomerIn,
    CustomerOut,
    ErrorBody,
    Ident,
    SettlementIn,
    SettlementOut,
    SettlementService,
    SiteIn,
    SiteOut,
)

router = APIRouter(prefix="/v1", tags=["admin"])
NOT_FOUND = {404: {"model": ErrorBody}}


def _existing_customer(ctx: AppContext, customer_id: str) -> None:
    if ctx.store.get_customer(customer_id) is None:
        raise NotFound(f"no customer {customer_id}")


@router.put("/customers/{customer_id}", response_model=CustomerOut)
def put_customer(
    customer_id: Ident,
    body: CustomerIn,
    _: AdminCaller,
    ctx: Ctx,
) -> CustomerOut:
    return CustomerOut(
        **ctx.store.put_customer(
            customer_id=customer_id, name=body.name, webhook_url=body.webhook_url
        )
    )


@router.get("/customers/{customer_id}", response_model=CustomerOut, responses=NOT_FOUND)
def get_customer(customer_id: str, _: StaffCaller, ctx: Ctx) -> CustomerOut:
    row = ctx.store.get_customer(customer_id)
    if row is None:
        raise NotFound(f"no customer {customer_id}")
    return CustomerOut(**row)


@router.put("/customers/{customer_id}/contract", response_model=ContractOut, responses=NOT_FOUND)
def put_contract(
    customer_id: str,
    body: ContractIn,
    _: AdminCaller,
    ctx: Ctx,
) -> ContractOut:
    _existing_customer(ctx, customer_id)
    return ContractOut(
        **ctx.store.put_contract(
            customer_id=customer_id,
            tier=body.tier.value,
            state=body.state.value,
            licensed_modules=body.licensed_modules,
            version_line=body.version_line,
            ends_on=body.ends_on.isoformat() if body.ends_on else None,
        )
    )


@router.get("/customers/{customer_id}/site", response_model=SiteOut, responses=NOT_FOUND)
def get_site(customer_id: str, _: StaffCaller, ctx: Ctx) -> SiteOut:
    """The site on record; its `installed_version` is what the hosts last reported."""
    row = ctx.store.get_site(customer_id)
    if row is None:
        raise NotFound(f"customer {customer_id} has no site on record")
    return SiteOut(**row)


@router.put("/customers/{customer_id}/site", response_model=SiteOut, responses=NOT_FOUND)
def put_site(customer_id: str, body: SiteIn, _: AdminCaller, ctx: Ctx) -> SiteOut:
    """The site's inventory, stored by its real path (it must lie in EMSOPS_INVENTORY_ROOT)."""
    _existing_customer(ctx, customer_id)
    inventory = site_inventory(ctx.settings, body.inventory)
    return SiteOut(
        **ctx.store.put_site(
            customer_id=customer_id,
            inventory=str(inventory),
            installed_version=body.installed_version,
        )
    )


@router.post(
    "/tickets/{ticket_id}/settlements",
    status_code=201,
    response_model=SettlementOut,
    responses={
        200: {"model": SettlementOut, "description": "the same reference again: its record"},
        409: {"model": ErrorBody, "description": "the reference with other values, or the "
              "ticket belongs to another customer"},
        **NOT_FOUND,
    },
)
def add_settlement(
    ticket_id: Ident,
    body: SettlementIn,
    response: Response,
    caller: SettlementsCaller,
    ctx: Ctx,
) -> SettlementOut:
    """Record a received payment (ticket system) or a sales guarantee (sales) for the ticket's
    billable service of that customer."""
    require_role(caller, SETTLEMENT_ROLES[body.kind])
    if (body.kind == "payment") != (body.amount is not None):
        raise Unprocessable("a payment needs an amount; a guarantee has none")
    _existing_customer(ctx, body.customer_id)
    record, created = ctx.store.add_settlement(
        ticket_id=ticket_id,
        customer_id=body.customer_id,
        service=body.service,
        kind=body.kind,
        amount=body.amount,
        reference=body.reference,
        recorded_by=caller.token_id,
    )
    if not created:
        response.status_code = 200
    return SettlementOut(**record)


@router.get("/tickets/{ticket_id}/settlements", response_model=list[SettlementOut])
def list_settlements(
    ticket_id: str,
    service: Annotated[SettlementService, Query()],
    _: SettlementsCaller,
    ctx: Ctx,
) -> list[SettlementOut]:
    return [
        SettlementOut(**row) for row in ctx.store.settlements(ticket_id=ticket_id, service=service)
    ]
