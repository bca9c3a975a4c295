"""Signed completion callbacks to the ticket system, retried with backoff, every attempt recorded.

Signature: `X-Emsops-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>.<body>">` with the
timestamp in `X-Emsops-Timestamp` (seconds since the epoch), so a receiver can refuse replays.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from api.store import Store

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Emsops-Signature"
TIMESTAMP_HEADER = "X-Emsops-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def job_summary(job: dict[str, Any]) -> dict[str, Any]:
    """What the ticket system learns on completion (it can GET the job for the rest)."""
    return {
        "job_id": job["id"],
        "ticket_id": job["ticket_id"],
        "customer_id": job["customer_id"],
        "service": job["service"],
        "state": job["state"],
        "verdict": None if job["verdict"] is None else bool(job["verdict"]),
        "error": job["error"],
        "finished_at": job["finished_at"],
    }


class Notifier:
    def __init__(
        self,
        *,
        store: Store,
        url: str | None,
        secret: str | None,
        attempts: int,
        backoff_s: float,
        timeout_s: float,
    ) -> None:
        self._store, self._url, self._secret = store, url, secret
        self._attempts, self._backoff_s, self._timeout_s = attempts, backoff_s, timeout_s
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="emsops-webhook")

    def notify(self, job_id: str) -> Future:
        return self._pool.submit(self.deliver, job_id)

    def close(self) -> None:
        """Deliveries already asked for get one attempt each; retries stop."""
        self._stop.set()
        self._pool.shutdown(wait=True)

    def deliver(self, job_id: str) -> bool:
        """POST the job's summary until a 2xx answer or the attempts run out."""
        job = self._store.get_job(job_id)
        customer = self._store.get_customer(job["customer_id"]) if job else None
        url = (customer or {}).get("webhook_url") or self._url
        if job is None or not url:
            return False
        if not self._secret:
            self._store.add_delivery(
                job_id=job_id,
                attempt=1,
                url=url,
                status_code=None,
                error="not sent: EMSOPS_WEBHOOK_SECRET is not set",
            )
            return False
        body = json.dumps(job_summary(job), sort_keys=True).encode()
        for attempt in range(1, self._attempts + 1):
            status, error = self._post(url, body, attempt, job_id)
            self._store.add_delivery(
                job_id=job_id, attempt=attempt, url=url, status_code=status, error=error
            )
            if status is not None and 200 <= status < 300:
                return True
            # Back off before the next attempt; a shutdown ends the waiting and the retries.
            if attempt < self._attempts and self._stop.wait(self._backoff_s * 2 ** (attempt - 1)):
                break
        log.warning("webhook for job %s failed after %d attempts", job_id, self._attempts)
        return False

    def _post(
        self, url: str, body: bytes, attempt: int, job_id: str
    ) -> tuple[int | None, str | None]:
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 - URL set by an admin, http(s) only
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(self._secret or "", timestamp, body),
                "X-Emsops-Delivery": f"{job_id}:{attempt}",
            },
        )
        if not url.startswith(("http://", "https://")):
            return None, "webhook URL must be http(s)"
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:  # noqa: S310
                return response.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return None, str(getattr(exc, "reason", exc))
