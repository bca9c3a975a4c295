"""The store behaves the same on SQLite and on a real PostgreSQL server (fixture `store`)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from api.errors import HostsHeld, TicketServiceTaken
from api.store import (
    CANCELED,
    DELIVERED,
    FAILED,
    INTERRUPTED,
    MIGRATIONS,
    PENDING,
    QUEUED,
    RUNNING,
    UNANSWERED,
    Store,
    now,
)


def make_job(store: Store, *, ticket="T-1", service="restore", hosts=("app",), fp="fp1"):
    decision_id = store.add_decision(
        ticket_id=ticket,
        customer_id="c1",
        service=service,
        request={"a": 1},
        decision={"outcome": "covered"},
        caller="tok",
    )
    return store.create_job(
        ticket_id=ticket,
        customer_id="c1",
        service=service,
        limit_pattern="all",
        inventory="/inv.yml",
        hosts=list(hosts),
        parameters={},
        fingerprint=fp,
        decision_id=decision_id,
        decision={"outcome": "covered"},
        created_by="tok",
    )


def test_migrations_apply_once(store, reopen):
    assert store.schema_version() == len(MIGRATIONS)
    again = reopen()
    assert again.schema_version() == len(MIGRATIONS)
    assert again.get_customer("c1") is not None  # data survived the second migrate()


def test_customer_contract_site_round_trip(store):
    store.put_customer(customer_id="c1", name="Other", webhook_url="http://x/hook")
    contract = store.put_contract(
        customer_id="c1",
        tier="machine_package",
        state="active",
        licensed_modules=["water", "electricity"],
        version_line="3.2",
        ends_on="2026-01-01",
    )
    assert contract["licensed_modules"] == ["electricity", "water"]
    store.put_contract(
        customer_id="c1",
        tier="machine_package",
        state="lapsed",
        licensed_modules=["water"],
        version_line="3.2",
        ends_on=None,
    )
    assert store.get_contract("c1")["state"] == "lapsed"
    site = store.put_site(customer_id="c1", inventory="inv/hosts.yml", installed_version="3.2.0")
    assert (site["inventory"], site["installed_version"]) == ("inv/hosts.yml", "3.2.0")
    assert store.get_customer("c1")["webhook_url"] == "http://x/hook"
    assert store.get_site("nobody") is None


def test_settlements_are_per_ticket_and_service(store):
    store.add_settlement(
        ticket_id="T-1",
        customer_id="c1",
        service="restore",
        kind="payment",
        amount=Decimal("10.50"),
        reference="r1",
        recorded_by="x",
    )
    store.add_settlement(
        ticket_id="T-1",
        customer_id="c1",
        service="restore",
        kind="guarantee",
        amount=None,
        reference="r2",
        recorded_by="x",
    )
    store.add_settlement(
        ticket_id="T-2",
        customer_id="c1",
        service="restore",
        kind="payment",
        amount=Decimal("1"),
        reference="r3",
        recorded_by="x",
    )
    rows = store.settlements(ticket_id="T-1", service="restore")
    assert [(r["kind"], r["amount"]) for r in rows] == [("payment", "10.50"), ("guarantee", None)]


def test_same_request_returns_same_job(store):
    job, created = make_job(store)
    again, created_again = make_job(store)
    assert (created, created_again) == (True, False)
    assert again["id"] == job["id"]
    assert job["state"] == QUEUED


def test_same_ticket_service_other_request_conflicts(store):
    make_job(store)
    with pytest.raises(TicketServiceTaken):
        make_job(store, fp="other")


def test_host_lock_conflict_names_the_holder_until_released(store):
    first, _ = make_job(store, hosts=("app", "db"))
    with pytest.raises(HostsHeld) as held:
        make_job(store, ticket="T-2", hosts=("db", "gw"))
    assert held.value.detail == {"held": {"db": first["id"]}}
    assert store.job_for_ticket(ticket_id="T-2", service="restore") is None  # nothing queued
    store.finish_job(first["id"], state=CANCELED)
    second, created = make_job(store, ticket="T-2", hosts=("db", "gw"))
    assert created
    assert {r["host"] for r in store.held_hosts()} == {"db", "gw"}


def test_recover_interrupts_running_and_keeps_queued(store):
    running, _ = make_job(store, ticket="T-1", hosts=("app",))
    queued, _ = make_job(store, ticket="T-2", hosts=("db",))
    assert store.update_job(running["id"], only_if_state=QUEUED, state=RUNNING, runner="gone")
    interrupted, requeued = store.recover(lambda runner: False)
    assert (interrupted, requeued) == ([running["id"]], [queued["id"]])
    assert store.get_job(running["id"])["state"] == INTERRUPTED
    assert [r["host"] for r in store.held_hosts()] == ["db"]


def test_recover_leaves_a_job_whose_process_still_runs_running_with_its_hosts(store):
    # e.g. `emsops run` on the same data dir while the API starts.
    alive, _ = make_job(store, ticket="T-1", hosts=("app",))
    dead, _ = make_job(store, ticket="T-2", hosts=("db",))
    store.update_job(alive["id"], only_if_state=QUEUED, state=RUNNING, runner="cli")
    store.update_job(dead["id"], only_if_state=QUEUED, state=RUNNING, runner="old-api")
    interrupted, _ = store.recover(lambda runner: runner == "cli")
    assert interrupted == [dead["id"]]
    assert store.get_job(alive["id"])["state"] == RUNNING
    assert [r["host"] for r in store.held_hosts()] == ["app"]


def test_update_job_guarded_by_state(store):
    job, _ = make_job(store)
    assert not store.update_job(job["id"], only_if_state=RUNNING, state=CANCELED)
    assert store.update_job(job["id"], only_if_state=QUEUED, verification={"ok": True})
    assert store.get_job(job["id"])["verification"] == {"ok": True}
    with pytest.raises(ValueError, match="not updatable"):
        store.update_job(job["id"], ticket_id="x")


def test_events_page_by_counter_and_ignore_duplicates(store):
    job, _ = make_job(store)

    def event(counter):
        return {
            "counter": counter,
            "event": "runner_on_ok",
            "host": "app",
            "task": "t",
            "created": None,
            "stdout": f"line {counter}",
            "data": {"n": counter},
        }

    store.add_events(job["id"], [event(1), event(2)])
    store.add_events(job["id"], [event(3), event(2)])
    store.add_events(job["id"], [])
    page = store.events(job["id"], after=1, limit=1)
    assert [(e["counter"], e["data"]) for e in page] == [(2, {"n": 2})]
    assert [e["counter"] for e in store.events(job["id"])] == [1, 2, 3]


def test_deliveries_and_tokens(store):
    job, _ = make_job(store)
    store.finish_job(job["id"], state=CANCELED)
    store.start_webhook_attempt(job_id=job["id"], attempt=1, url="u")
    end = {"job_id": job["id"], "status_code": None, "error": "refused"}
    store.end_webhook_attempt(**end, attempt=1, state=PENDING, next_attempt_at=now(1))
    store.start_webhook_attempt(job_id=job["id"], attempt=2, url="u")
    end = {"job_id": job["id"], "status_code": 200, "error": None}
    store.end_webhook_attempt(**end, attempt=2, state=DELIVERED, next_attempt_at=None)
    assert [(d["attempt"], d["status_code"]) for d in store.deliveries(job["id"])] == [
        (1, None),
        (2, 200),
    ]
    store.add_token(role="admin", token_hash="h1")  # noqa: S106
    assert store.token_by_hash("h1")["role"] == "admin"
    assert store.token_by_hash("h2") is None


# --- the webhook outbox ---------------------------------------------------------------------------


def test_ending_a_job_stores_one_delivery_due_at_once(store):
    job, _ = make_job(store)
    assert store.webhook(job["id"]) is None  # nothing to say before the end
    store.finish_job(job["id"], state=CANCELED)
    delivery = store.webhook(job["id"])
    assert (delivery["state"], delivery["attempts"]) == (PENDING, 0)
    assert delivery["next_attempt_at"] <= now()
    assert not store.finish_job(job["id"], state=CANCELED, only_if_state=QUEUED)
    assert store.webhook(job["id"])["id"] == delivery["id"]


def test_a_job_interrupted_by_a_restart_gets_a_delivery(store):
    job, _ = make_job(store)
    store.update_job(job["id"], only_if_state=QUEUED, state=RUNNING)
    store.recover(lambda runner: False)
    assert store.webhook(job["id"])["state"] == PENDING


def test_a_claimed_delivery_is_not_claimed_twice_and_a_delivered_one_never_again(store, reopen):
    job, _ = make_job(store)
    store.finish_job(job["id"], state=CANCELED)
    claimed = store.claim_webhook(due_by=now(), lease_until=now(60))
    assert claimed["job_id"] == job["id"]
    assert store.claim_webhook(due_by=now(), lease_until=now(60)) is None  # leased
    store.start_webhook_attempt(job_id=job["id"], attempt=1, url="u")
    retry_at = now(30)
    end = {"job_id": job["id"], "attempt": 1, "status_code": 500, "error": "HTTP 500"}
    store.end_webhook_attempt(**end, state=PENDING, next_attempt_at=retry_at)
    assert store.claim_webhook(due_by=now(), lease_until=now(60)) is None  # backing off
    assert store.next_webhook_due() == retry_at
    assert store.claim_webhook(due_by=retry_at, lease_until=now(90))["attempts"] == 1
    store.start_webhook_attempt(job_id=job["id"], attempt=2, url="u")
    end = {"job_id": job["id"], "attempt": 2, "status_code": 204, "error": None}
    store.end_webhook_attempt(**end, state=DELIVERED, next_attempt_at=None)
    again = reopen()
    assert again.claim_webhook(due_by=now(3600), lease_until=now(3660)) is None
    assert again.webhook(job["id"])["state"] == DELIVERED
    assert again.next_webhook_due() is None


def test_an_attempt_cut_short_by_a_crash_shows_as_unanswered(store):
    job, _ = make_job(store)
    store.finish_job(job["id"], state=CANCELED)
    store.claim_webhook(due_by=now(), lease_until=now())  # a lease that has already run out
    store.start_webhook_attempt(job_id=job["id"], attempt=1, url="u")
    # ...the process dies here; another claims the delivery once the lease has run out.
    assert store.claim_webhook(due_by=now(), lease_until=now(60))["attempts"] == 1
    store.start_webhook_attempt(job_id=job["id"], attempt=2, url="u")
    end = {"job_id": job["id"], "attempt": 2, "status_code": None, "error": "refused"}
    store.end_webhook_attempt(**end, state=FAILED, next_attempt_at=None)
    assert [(d["attempt"], d["error"]) for d in store.deliveries(job["id"])] == [
        (1, UNANSWERED),
        (2, "refused"),
    ]
    assert store.webhook(job["id"])["state"] == FAILED
