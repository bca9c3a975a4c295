"""A completion webhook on the wire: its body, its signed headers, one POST.

Signature: `X-Emsops-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">` with the
timestamp in `X-Emsops-Timestamp` (seconds since the epoch), so a receiver can refuse replays.
`X-Emsops-Delivery` (also `delivery_id` in the signed body) is the same on every attempt of one
delivery, so a receiver can drop the second copy that at-least-once delivery may bring.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

SIGNATURE_HEADER = "X-Emsops-Signature"
TIMESTAMP_HEADER = "X-Emsops-Timestamp"
DELIVERY_HEADER = "X-Emsops-Delivery"
ATTEMPT_HEADER = "X-Emsops-Attempt"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def job_summary(job: dict[str, Any], *, delivery_id: str) -> dict[str, Any]:
    """What the ticket system learns on completion (it can GET the job for the rest)."""
    return {
        "delivery_id": delivery_id,
        "job_id": job["id"],
        "ticket_id": job["ticket_id"],
        "customer_id": job["customer_id"],
        "service": job["service"],
        "state": job["state"],
        "verdict": None if job["verdict"] is None else bool(job["verdict"]),
        "error": job["error"],
        "finished_at": job["finished_at"],
    }


def body_of(job: dict[str, Any], *, delivery_id: str, signoff: dict | None = None) -> bytes:
    """The completion body; with `signoff`, the second webhook of a manual inspection: its
    report was signed (event `report_signed`, who, when, remarks)."""
    summary = job_summary(job, delivery_id=delivery_id)
    if signoff is not None:
        summary |= {"event": "report_signed", "report_state": "signed",
                    "signoff": {"by": f"{signoff['role']} token {signoff['signed_by']}",
                                "at": signoff["signed_at"], "remarks": signoff["remarks"]}}
    # Sorted keys: every attempt of a delivery sends the same bytes.
    return json.dumps(summary, sort_keys=True).encode()


def unsendable(url: str | None, secret: str | None) -> str | None:
    """Why a delivery can never be sent as configured (retrying would not help), or None."""
    if not url:
        return "not sent: no webhook URL is configured"
    if not url.startswith(("http://", "https://")):
        return "not sent: webhook URL must be http(s)"
    if not secret:
        return "not sent: EMSOPS_WEBHOOK_SECRET is not set"
    return None


def post(
    url: str, body: bytes, *, secret: str, delivery_id: str, attempt: int, timeout_s: float
) -> tuple[int | None, str | None]:
    """One signed attempt: (HTTP status or None, error or None). Signed afresh each time, so a
    retry carries a current timestamp and the signing API's own secret."""
    timestamp = str(int(time.time()))
    try:
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked by unsendable()
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(secret, timestamp, body),
                DELIVERY_HEADER: delivery_id,
                ATTEMPT_HEADER: str(attempt),
            },
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return None, str(getattr(exc, "reason", exc))
    except ValueError as exc:  # a URL urllib cannot parse (http.client.InvalidURL among them)
        return None, f"invalid webhook URL: {exc}"
