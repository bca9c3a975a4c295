"""The sign-off record and its webhook in the store, on both engines."""

from __future__ import annotations

from api.store import COMPLETION, SIGNOFF


def ended_job(store) -> str:
    decision = {"outcome": "covered", "details": {"mode": "manual"}}
    decision_id = store.add_decision(ticket_id="T-1", customer_id="c1", service="inspect",
                                     request={}, decision=decision, caller="t")
    job, _ = store.create_job(ticket_id="T-1", customer_id="c1", service="inspect",
                              limit_pattern="app1", inventory="/inv", hosts=["app1"],
                              parameters={}, fingerprint="f", decision_id=decision_id,
                              decision=decision, created_by="t")
    assert store.finish_job(job["id"], state="succeeded")
    return job["id"]


def test_a_report_is_signed_once_and_each_kind_of_webhook_queued_once(store):
    job_id = ended_job(store)
    assert store.webhook(job_id, SIGNOFF) is None
    assert store.add_signoff(job_id=job_id, signed_by="tok1", role="engineer", remarks="fine")
    assert not store.add_signoff(job_id=job_id, signed_by="tok2", role="engineer", remarks="x")
    signed = store.signoff(job_id)
    assert (signed["signed_by"], signed["remarks"]) == ("tok1", "fine")
    completion, signoff = store.webhook(job_id, COMPLETION), store.webhook(job_id, SIGNOFF)
    assert completion["id"] != signoff["id"]
    assert (completion["state"], signoff["state"]) == ("pending", "pending")
    store.start_webhook_attempt(job_id=job_id, attempt=1, url="http://x", kind=SIGNOFF)
    store.end_webhook_attempt(job_id=job_id, attempt=1, status_code=204, error=None,
                              state="delivered", next_attempt_at=None, kind=SIGNOFF)
    assert store.webhook(job_id, SIGNOFF)["state"] == "delivered"
    assert store.webhook(job_id)["state"] == "pending"
    assert store.deliveries(job_id) == []
    assert [d["status_code"] for d in store.deliveries(job_id, SIGNOFF)] == [204]
