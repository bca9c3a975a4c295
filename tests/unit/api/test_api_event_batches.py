"""The runner's event callbacks store events in batches, and never lose one (fixture `store`)."""

from __future__ import annotations

import threading

import pytest
from test_api_store import make_job

from api import runner
from api.inventory import Redactor
from api.runner import _RunCallbacks
from api.store import RUNNING

SECRET = "vaulted-s3cret-value"  # noqa: S105 - a test value to redact


@pytest.fixture
def job_callbacks(store):
    job, _ = make_job(store)
    store.update_job(job["id"], state=RUNNING)
    callbacks = _RunCallbacks(
        job_id=job["id"],
        store=store,
        redactor=Redactor([SECRET]),
        cancel=threading.Event(),
        stopping=threading.Event(),
    )
    return job["id"], callbacks


def runner_event(counter: int) -> dict:
    return {
        "counter": counter,
        "event": "runner_on_ok",
        "uuid": f"u{counter}",
        "stdout": f"ok: [app] {SECRET} {counter}",
        "event_data": {"host": "app", "task": f"task {counter}", "res": {"msg": SECRET}},
    }


def counters(store, job_id: str) -> list[int]:
    return [e["counter"] for e in store.events(job_id, limit=10_000)]


def test_every_event_is_stored_in_counter_order_when_the_run_ends(store, job_callbacks):
    job_id, callbacks = job_callbacks
    total = 3 * runner.FLUSH_EVENTS + 5  # full batches and a partial one
    for counter in range(1, total + 1):
        assert callbacks.event(runner_event(counter)) is True
    callbacks.status_changed({"status": "successful"})
    assert counters(store, job_id) == list(range(1, total + 1))
    assert store.get_job(job_id)["playbook_status"] == "successful"
    stored = store.events(job_id, limit=10_000)
    assert all(SECRET not in e["stdout"] and SECRET not in str(e["data"]) for e in stored)


def test_a_full_batch_is_visible_while_the_run_goes_on(store, job_callbacks, monkeypatch):
    monkeypatch.setattr(runner, "FLUSH_S", 3600.0)
    job_id, callbacks = job_callbacks
    for counter in range(1, runner.FLUSH_EVENTS + 2):
        callbacks.event(runner_event(counter))
    assert counters(store, job_id) == list(range(1, runner.FLUSH_EVENTS + 1))
    callbacks.flush()
    assert counters(store, job_id) == list(range(1, runner.FLUSH_EVENTS + 2))


def test_a_quiet_run_stores_held_events_on_the_cancel_check(store, job_callbacks, monkeypatch):
    job_id, callbacks = job_callbacks
    monkeypatch.setattr(runner, "FLUSH_S", 3600.0)
    callbacks.event(runner_event(1))
    assert not callbacks.cancelled()
    assert counters(store, job_id) == []  # held: younger than FLUSH_S
    monkeypatch.setattr(runner, "FLUSH_S", 0.0)
    assert not callbacks.cancelled()  # a long task: no new event, ansible-runner still asks
    assert counters(store, job_id) == [1]
