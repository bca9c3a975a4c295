"""Delivers the webhook outbox: every ended job's completion callback, retried with backoff.

The store queues a delivery in the same transaction that ends a job (api.store); worker threads
here claim due deliveries, log each attempt before sending it, and keep the retry schedule in the
store, so a killed API resumes where it stopped. Delivery is at least once: an answer lost with
a crashed process means that attempt is sent again, with the same delivery id.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from api import store as st
from api.store import Store
from api.webhook_wire import body_of, post, unsendable

log = logging.getLogger(__name__)
# Longest idle wait: deliveries queued by another process on a shared PostgreSQL store, or due
# after a lease ran out, are found within this.
POLL_S = 5.0
WORKERS = 2


class Notifier:
    """Worker threads over the store's outbox, started at construction, stopped by close()."""

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
        # A claim outlives the longest attempt; a worker that died mid-attempt frees it then.
        self._lease_s = 2 * timeout_s + 5
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"emsops-webhook-{n}", daemon=True)
            for n in range(WORKERS)
        ]
        for thread in self._threads:
            thread.start()

    def notify(self, job_id: str) -> None:
        """A job ended (its delivery is already stored): send it now rather than at the poll."""
        log.debug("job %s ended: waking the webhook workers", job_id)
        self._wake.set()

    def close(self) -> None:
        """Stop after the attempts in flight; pending deliveries wait in the store for the next
        start."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(self._lease_s)

    def _work(self) -> None:
        while not self._stop.is_set():
            # Cleared before looking: a notify() after this point makes the wait return at once.
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.deliver_due():
                    pass
                wait = self._seconds_until_due()
            except Exception:  # e.g. PostgreSQL restarting: keep the worker, try again later
                log.exception("webhook worker could not read the outbox")
                wait = POLL_S
            self._wake.wait(wait)

    def _seconds_until_due(self) -> float:
        due = self._store.next_webhook_due()
        if due is None:
            return POLL_S
        left = (datetime.fromisoformat(due) - datetime.fromisoformat(st.now())).total_seconds()
        return min(max(left, 0.0), POLL_S)

    def deliver_due(self) -> bool:
        """Make one attempt of the delivery due longest ago; False when none is due."""
        claimed = self._store.claim_webhook(due_by=st.now(), lease_until=st.now(self._lease_s))
        if claimed is None:
            return False
        job_id, delivery_id, done = claimed["job_id"], claimed["id"], claimed["attempts"]
        kind = claimed["kind"]
        if done >= self._attempts:
            # The last attempt allowed was cut short by a crash: its answer is unknown.
            self._end(job_id, done, None, st.UNANSWERED, st.FAILED, kind=kind)
            return True
        attempt = done + 1
        job = self._store.get_job(job_id)
        customer = self._store.get_customer(job["customer_id"]) or {}
        # Read at each attempt: an admin who fixes a customer's URL unblocks its deliveries.
        url = customer.get("webhook_url") or self._url or ""
        self._store.start_webhook_attempt(job_id=job_id, attempt=attempt, url=url, kind=kind)
        reason = unsendable(url, self._secret)
        if reason is not None:
            self._end(job_id, attempt, None, reason, st.FAILED, kind=kind)
            return True
        signoff = self._store.signoff(job_id) if kind == st.SIGNOFF else None
        status, error = post(
            url,
            body_of(job, delivery_id=delivery_id, signoff=signoff),
            secret=self._secret or "",
            delivery_id=delivery_id,
            attempt=attempt,
            timeout_s=self._timeout_s,
        )
        if status is not None and 200 <= status < 300:
            self._end(job_id, attempt, status, None, st.DELIVERED, kind=kind)
        elif attempt >= self._attempts:
            self._end(job_id, attempt, status, error, st.FAILED, kind=kind)
        else:
            backoff = self._backoff_s * 2 ** (attempt - 1)
            self._end(job_id, attempt, status, error, st.PENDING, next_attempt_at=st.now(backoff),
                      kind=kind)
        return True

    def _end(
        self,
        job_id: str,
        attempt: int,
        status: int | None,
        error: str | None,
        state: str,
        *,
        next_attempt_at: str | None = None,
        kind: str = st.COMPLETION,
    ) -> None:
        if state == st.FAILED:
            log.warning("%s webhook for job %s failed after %d attempts: %s", kind, job_id,
                        attempt, error)
        self._store.end_webhook_attempt(
            job_id=job_id,
            attempt=attempt,
            status_code=status,
            error=error,
            state=state,
            next_attempt_at=next_attempt_at,
            kind=kind,
        )
