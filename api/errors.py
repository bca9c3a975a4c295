"""Domain errors and their one HTTP error body shape: {"error": {"code", "message", "detail"}}."""

from __future__ import annotations

import json
import math
from typing import Any

# An error body never grows with the input: a validation error shows at most this many errors,
# each value cut to this many characters (a 1 MiB body used to come back 25 MB large).
MAX_ERRORS = 20
MAX_TEXT = 200
MAX_MESSAGE = 1000


class ApiError(Exception):
    """An error the API reports to its caller; `status` is the HTTP status it maps to."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class Unauthenticated(ApiError):
    status, code = 401, "unauthenticated"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class Refused(ApiError):
    """The catalog refuses the service; `detail` holds the decision with its rule."""

    status, code = 403, "refused"


class PaymentRequired(ApiError):
    """Billable and not yet paid or guaranteed; `detail` holds the decision with its quote."""

    status, code = 402, "payment_required"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class HostsHeld(Conflict):
    code = "hosts_held"


class TicketServiceTaken(Conflict):
    code = "ticket_service_taken"


class SettlementConflict(Conflict):
    code = "settlement_conflict"


class InvalidTarget(ApiError):
    """A limit pattern that is malformed or matches no host of the site's inventory."""

    status, code = 422, "invalid_target"


class InvalidInventory(ApiError):
    """A site inventory the API may not hand to Ansible (where it is, what it is)."""

    status, code = 422, "invalid_inventory"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


def bounded(value: Any) -> Any:
    """A value safe to echo in an error body: short, finite, encodable (no lone surrogate)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value) and abs(value) < 2**53:
        return value
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def validation_detail(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's errors, bounded: the first MAX_ERRORS, every location part and value cut."""
    return [
        {
            "type": bounded(error.get("type")),
            "loc": [bounded(part) for part in error.get("loc", ())],
            "msg": bounded(error.get("msg")),
            "input": bounded(error.get("input")),
        }
        for error in errors[:MAX_ERRORS]
    ]


def error_body(code: str, message: str, detail: Any = None) -> bytes:
    """The one error body shape, as bytes. ASCII JSON: a lone surrogate an input smuggled into a
    message stays an escape instead of failing the UTF-8 encoding of the answer."""
    if len(message) > MAX_MESSAGE:  # messages may quote a path parameter of any length
        message = message[:MAX_MESSAGE] + "..."
    body = {"error": {"code": code, "message": message, "detail": detail}}
    return json.dumps(body, ensure_ascii=True).encode()
