"""The read API's query-string filters (meter_id, since, until) as a SQL WHERE clause."""

from __future__ import annotations

from datetime import datetime

from .httpjson import HttpError, Request
from .timeutil import parse_iso


def timestamp(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise HttpError(400, f"{what} must be an ISO 8601 string")
    try:
        return parse_iso(value)
    except ValueError as exc:
        raise HttpError(400, f"{what}: {exc}") from None


def where(request: Request, time_column: str,
          meter_column: str = "meter_id") -> tuple[str, list[object]]:
    """Optional meter_id (exact), since (inclusive) and until (exclusive)."""
    clauses, params = [], []
    if request.query.get("meter_id"):
        clauses.append(f"{meter_column} = %s")
        params.append(request.query["meter_id"])
    for name, op in (("since", ">="), ("until", "<")):
        if request.query.get(name):
            clauses.append(f"{time_column} {op} %s")
            params.append(timestamp(request.query[name], name))
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
