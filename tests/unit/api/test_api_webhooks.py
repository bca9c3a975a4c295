"""Completion webhooks: one for every job that ends, stored before it is sent, retried from the
stored schedule across restarts and kills, signed with the running API's secret, never sent
again once delivered."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest

from api.runner import kill_processes_using
from api.tokens import Role
from api.webhook_wire import verify_signature
from tests.support.api_runs import all_bytes, post_job, processes_naming
from tests.support.net import free_port
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import Received, WebhookReceiver


def hook_customer_to(api, url: str) -> None:
    response = api.request(
        "PUT", "/v1/customers/acme", Role.ADMIN, json={"name": "Acme", "webhook_url": url}
    )
    assert response.status_code == 200


def webhook_log(api, job_id: str) -> dict:
    response = api.request("GET", f"/v1/jobs/{job_id}/webhooks")
    assert response.status_code == 200, response.text
    return response.json()


def signed_with(secret: str, received: Received) -> bool:
    return verify_signature(
        secret,
        received.headers["X-Emsops-Timestamp"],
        received.body,
        received.headers["X-Emsops-Signature"],
    )


def test_webhook_signed_retried_and_every_attempt_logged(api, settings):
    with WebhookReceiver(fail_first=2) as receiver:
        hook_customer_to(api, receiver.url)
        api.contract()
        job_id = post_job(api, "inspect")
        api.wait(job_id)
        wait_for(receiver.successes, what="the delivery")
        log = wait_for(
            lambda: (w := webhook_log(api, job_id))["state"] == "delivered" and w,
            what="the delivery to be recorded",
        )

    attempts = log["attempts"]
    assert [(a["attempt"], a["status_code"], a["url"]) for a in attempts] == [
        (1, 500, receiver.url),
        (2, 500, receiver.url),
        (3, 204, receiver.url),
    ]
    for failed in attempts[:2]:
        assert failed["error"] == "HTTP 500"
        assert failed["next_attempt_at"] > failed["attempted_at"]
    assert attempts[2]["next_attempt_at"] is None and log["next_attempt_at"] is None
    # One delivery id on every attempt, in a header and in the signed body, for de-duplication.
    assert [r.headers["X-Emsops-Delivery"] for r in receiver.received] == [log["delivery_id"]] * 3
    assert [r.headers["X-Emsops-Attempt"] for r in receiver.received] == ["1", "2", "3"]
    delivered = receiver.received[-1]
    assert signed_with(settings.webhook_secret, delivered)
    assert json.loads(delivered.body) | {"finished_at": None} == {
        "delivery_id": log["delivery_id"],
        "job_id": job_id,
        "ticket_id": "T-1",
        "customer_id": "acme",
        "service": "inspect",
        "state": "succeeded",
        "verdict": True,
        "error": None,
        "finished_at": None,
    }


def test_webhook_gives_up_after_the_configured_attempts_and_says_so(api, settings):
    hook_customer_to(api, f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there
    api.contract()
    job_id = post_job(api, "inspect")
    api.wait(job_id)
    log = wait_for(
        lambda: (w := webhook_log(api, job_id))["state"] == "failed" and w, what="giving up"
    )
    attempts = log["attempts"]
    assert [a["attempt"] for a in attempts] == list(range(1, settings.webhook_attempts + 1))
    assert all(a["status_code"] is None and a["error"] for a in attempts)
    assert [a["next_attempt_at"] is None for a in attempts] == [False] * (len(attempts) - 1) + [
        True
    ]


def test_a_running_job_has_no_delivery_yet(api):
    api.contract()
    api.guarantee("T-1", "troubleshoot_data")
    job_id = post_job(api, "troubleshoot_data", limit="db1", parameters={"symptom": "missing"})
    assert webhook_log(api, job_id) == {
        "job_id": job_id,
        "delivery_id": None,
        "state": None,
        "next_attempt_at": None,
        "attempts": [],
    }
    assert api.request("GET", "/v1/jobs/nope/webhooks").json()["error"]["code"] == "not_found"
    assert api.request("GET", f"/v1/jobs/{job_id}/webhooks", role=None).status_code == 401
    api.request("POST", f"/v1/jobs/{job_id}/cancel")
    api.wait(job_id)


def _wrong_vault_password(settings, tmp_path):
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("not-the-password\n")
    return {"vault_password_file": wrong}, {}


def _vault_password_file_gone(settings, tmp_path):
    return {"vault_password_file": tmp_path / "no-such-pass-file"}, {}


def _inventory_gone(settings, tmp_path):
    return {}, {"inventory": tmp_path / "gone" / "hosts.yml"}


def _playbook_gone(settings, tmp_path):
    project = tmp_path / "project-without-inspect"
    shutil.copytree(settings.project_dir, project)
    (project / "playbooks" / "inspect.yml").unlink()
    return {"project_dir": project}, {}


@pytest.mark.parametrize(
    "break_it",
    [_wrong_vault_password, _vault_password_file_gone, _inventory_gone, _playbook_gone],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_job_that_cannot_start_still_gets_its_webhook(
    break_it, make_api, settings, queue_job, tmp_path
):
    """Queued by an API that could run it, started by one that cannot."""
    settings_update, job_update = break_it(settings, tmp_path)
    job_id = queue_job(ticket="T-1", host="app1", **job_update)
    with WebhookReceiver() as receiver:
        api = make_api(settings.model_copy(update={**settings_update, "webhook_url": receiver.url}))
        job = api.wait(job_id)
        [delivered] = wait_for(receiver.successes, what="the webhook")
    assert job["state"] == "failed" and job["error"]
    body = json.loads(delivered.body)
    assert (body["job_id"], body["state"], body["error"]) == (job_id, "failed", job["error"])


def test_a_graceful_stop_keeps_the_interrupted_jobs_webhook_for_the_next_start(make_api, settings):
    with WebhookReceiver(fail_first=1) as receiver:
        # A backoff that outlasts the stop: a retry before it would deliver without a restart.
        app_settings = settings.model_copy(
            update={"webhook_url": receiver.url, "webhook_backoff_s": 1}
        )
        api = make_api(app_settings)
        api.contract()
        api.guarantee("T-1", "troubleshoot_data")
        job_id = post_job(api, "troubleshoot_data", limit="db1", parameters={"symptom": "missing"})
        wait_for(lambda: processes_naming(str(settings.runs_dir / job_id)), what="the playbook")
        api.client.__exit__(None, None, None)  # the stop interrupts the run
        assert receiver.successes() == []
        again = make_api(app_settings)
        [delivered] = wait_for(receiver.successes, what="the webhook after the restart")
        log = wait_for(
            lambda: (w := webhook_log(again, job_id))["state"] == "delivered" and w,
            what="the delivery to be recorded",
        )
    body = json.loads(delivered.body)
    assert (body["job_id"], body["state"], body["verdict"], body["error"]) == (
        job_id,
        "interrupted",
        None,
        "the API stopped during the run",
    )
    assert log["attempts"][0]["status_code"] == 500  # the one the receiver failed
    assert log["attempts"][-1]["status_code"] == 204


def test_kill_9_during_a_retry_backoff_then_restart_delivers_once(
    settings, server_env, start_server, served, tmp_path
):
    """A real API process: its first attempt fails, it is SIGKILLed while waiting to retry, and
    the next process delivers from the stored schedule, signed with its own secret. A job it
    killed mid-run gets its `interrupted` webhook. A third process sends nothing again."""
    secrets = [f"{which}-webhook-secret-{uuid.uuid4().hex}" for which in ("first", "second")]
    log_file = tmp_path / "api.log"

    def webhooks(job_id: str) -> dict:
        return served.call("GET", f"/v1/jobs/{job_id}/webhooks")

    with WebhookReceiver(fail_first=1) as receiver:
        env = server_env | {
            "EMSOPS_WEBHOOK_URL": receiver.url,
            "EMSOPS_WEBHOOK_BACKOFF_S": "3",
            "EMSOPS_WEBHOOK_SECRET": secrets[0],
        }
        first, served.base = start_server(env, log_file)
        try:
            served.cover_acme()
            slow = served.submit_slow("T-2", "db1")
            wait_for(lambda: processes_naming(str(settings.runs_dir / slow)), what="the playbook")
            quick = served.submit("T-1", "inspect", "app1")
            in_backoff = wait_for(
                lambda: (
                    (w := webhooks(quick))["attempts"]
                    and w["attempts"][0]["status_code"] == 500
                    and w
                ),
                what="the first attempt to fail",
            )
            first.kill()
            first.wait(10)
        finally:
            first.kill()
        assert len(receiver.received) == 1, "the kill should come before the second attempt"
        assert in_backoff["state"] == "pending"
        retry_due = in_backoff["attempts"][0]["next_attempt_at"]

        env["EMSOPS_WEBHOOK_SECRET"] = secrets[1]
        second, served.base = start_server(env, log_file)
        try:
            wait_for(lambda: len(receiver.successes()) == 2, what="both webhooks")
            logs = {
                job: wait_for(
                    lambda job=job: (w := webhooks(job))["state"] == "delivered" and w,
                    what="the deliveries to be recorded",
                )
                for job in (quick, slow)
            }
            second.kill()  # -9 again, after both were delivered
            second.wait(10)
        finally:
            second.kill()

        third, served.base = start_server(env, log_file)
        try:
            last = served.submit("T-3", "inspect", "app1")
            wait_for(lambda: len(receiver.successes()) == 3, what="the third job's webhook")
        finally:
            third.terminate()
            third.wait(30)
            kill_processes_using(settings.runs_dir)

    bodies = [json.loads(r.body) for r in receiver.received]
    assert [b["job_id"] for b in bodies] in ([quick, quick, slow, last], [quick, slow, quick, last])
    retried = next(r for r in receiver.received[1:] if json.loads(r.body)["job_id"] == quick)
    assert retried.headers["X-Emsops-Delivery"] == receiver.received[0].headers["X-Emsops-Delivery"]
    assert retried.headers["X-Emsops-Attempt"] == "2"
    assert signed_with(secrets[1], retried) and not signed_with(secrets[0], retried)
    quick_attempts = logs[quick]["attempts"]
    assert [(a["attempt"], a["status_code"]) for a in quick_attempts] == [(1, 500), (2, 204)]
    assert quick_attempts[1]["attempted_at"] >= retry_due  # the stored backoff was honoured
    interrupted = next(b for b in bodies if b["job_id"] == slow)
    assert (interrupted["state"], interrupted["verdict"], interrupted["error"]) == (
        "interrupted",
        None,
        "the API stopped while the job ran",
    )
    stored = all_bytes(settings.data_dir) + log_file.read_bytes()
    for secret in secrets:
        assert secret.encode() not in stored
