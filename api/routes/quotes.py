"""`/v1/quotes`: what on-site work or a value-added service would cost this customer."""

from __future__ import annotations

from fastapi import APIRouter

from api import jobs as service
from api.deps import AnyCaller, Ctx
from api.models import DecisionOut, ErrorBody, QuoteRequest

router = APIRouter(prefix="/v1/quotes", tags=["quotes"])


@router.post("", response_model=DecisionOut, responses={404: {"model": ErrorBody}})
def make_quote(body: QuoteRequest, _: AnyCaller, ctx: Ctx) -> DecisionOut:
    """The decision with its quote; nothing is recorded and nothing runs."""
    return DecisionOut(**service.quote(ctx, body=body).as_dict())
