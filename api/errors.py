"""Domain errors and their one HTTP error body shape: {"error": {"code", "message", "detail"}}."""

from __future__ import annotations

from typing import Any


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


class InvalidTarget(ApiError):
    """A limit pattern that is malformed or matches no host of the site's inventory."""

    status, code = 422, "invalid_target"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"
