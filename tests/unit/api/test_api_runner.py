"""Real ansible-runner runs of the test project (tests/unit/api/project) against local hosts."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from api.runner import kill_processes_using
from api.store import Store
from api.tokens import Role, issue_token

UNTEMPLATED = "{{ lookup('pipe', 'id') }}"


def post_job(api, service, *, ticket="T-1", limit="app1", parameters=None, **extra):
    body = {"ticket_id": ticket, "customer_id": "acme", "service": service, "limit": limit, **extra}
    if parameters is not None:
        body["parameters"] = parameters
    response = api.request("POST", "/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_stores_redacted_events_and_leaves_no_secret(api, verifier, project, caplog, capfd):
    api.contract()
    api.guarantee("T-1", "restore")
    job_id = post_job(api, "restore", parameters={"reason": "expansion"}, note=UNTEMPLATED)
    job = api.wait(job_id)
    assert (job["state"], job["verdict"], job["rc"]) == ("succeeded", 1, 0)
    assert job["set_stats"] == {"restored": True, "reason": "expansion"}
    assert job["host_stats"]["app1"]["ok"] == 4
    assert verifier.calls == [(project.inventory, "app1")]

    events = api.request("GET", f"/v1/jobs/{job_id}/events?limit=1000").json()["events"]
    printed = next(
        e
        for e in events
        if e["event"] == "runner_on_ok"
        and e["task"] == "Print the vaulted values (redaction must catch this)"
    )
    # The secrets were printed and masked; the caller's text arrived untemplated.
    assert "token=******** inline=********" in printed["data"]["event_data"]["res"]["msg"]
    assert f"note={UNTEMPLATED}" in printed["stdout"]
    hidden = next(
        e
        for e in events
        if e["event"] == "runner_on_ok" and e["task"] == "Use the vaulted token without logging it"
    )
    assert "censored" in json.dumps(hidden["data"])

    data_dir = api.ctx.settings.data_dir
    run_dir = api.ctx.settings.runs_dir / job_id
    kept = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert kept == [f"artifacts/{job_id}/{name}" for name in ("rc", "status", "stderr", "stdout")]
    out, err = capfd.readouterr()
    everything = all_bytes(data_dir) + caplog.text.encode() + out.encode() + err.encode()
    assert b"token=********" in all_bytes(run_dir)  # the redacted stdout is what stays
    for secret in project.secrets:
        assert secret.encode() not in everything, "a vault secret leaked"


def test_caller_values_never_reach_the_command_line(api):
    api.contract()
    api.guarantee("T-1", "troubleshoot_data")
    marker = "marker-" + uuid.uuid4().hex
    job_id = post_job(
        api,
        "troubleshoot_data",
        limit="db1",
        parameters={"symptom": "missing", "meters": [marker]},
        note=marker,
    )
    private = str(api.ctx.settings.runs_dir / job_id)
    wait_for(lambda: processes_naming(private + "/emsops-vars.yml"), what="ansible-playbook")
    assert processes_naming(marker) == []
    api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert api.wait(job_id)["state"] == "canceled"


def test_cancel_stops_the_playbook_and_releases_hosts(api, verifier):
    api.contract()
    api.guarantee("T-1", "troubleshoot_data")
    job_id = post_job(api, "troubleshoot_data", limit="db1", parameters={"symptom": "missing"})
    private = str(api.ctx.settings.runs_dir / job_id)
    wait_for(lambda: processes_naming(private), what="the playbook to start")
    canceled = api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert canceled.json()["cancel_requested"] is True
    job = api.wait(job_id, timeout=20)
    assert (job["state"], job["playbook_status"]) == ("canceled", "canceled")
    assert api.ctx.store.held_hosts() == []
    assert verifier.calls == []
    wait_for(lambda: not processes_naming(private), timeout=2, what="the playbook to die")


def test_cancel_of_a_finished_job_changes_nothing(api):
    api.contract()
    job_id = post_job(api, "inspect")
    api.wait(job_id)
    response = api.request("POST", f"/v1/jobs/{job_id}/cancel")
    assert (response.json()["state"], response.json()["cancel_requested"]) == ("succeeded", False)


def test_jobs_check_host_keys_as_the_project_says(api, monkeypatch):
    # ansible-runner turns host key checking off unless told; the project's ansible.cfg says on.
    monkeypatch.delenv("ANSIBLE_HOST_KEY_CHECKING", raising=False)
    api.contract()
    job = api.wait(post_job(api, "inspect"))
    assert job["state"] == "succeeded"
    assert job["set_stats"]["host_key_checking"] is True


def test_failed_playbook_fails_without_verification(api, verifier):
    api.contract()
    api.guarantee("T-1", "reinstall")
    job = api.wait(post_job(api, "reinstall"))
    assert (job["state"], job["verdict"], job["playbook_status"]) == ("failed", 0, "failed")
    assert job["error"] == "playbook failed (rc=2)"
    assert job["host_stats"]["app1"]["failures"] == 1
    assert verifier.calls == []


def test_failed_verification_fails_the_verdict(api, verifier):
    verifier.failing.add("db1")
    api.contract()
    job = api.wait(post_job(api, "inspect", limit="ems_app,ems_db"))
    assert (job["state"], job["playbook_status"], job["verdict"]) == ("failed", "successful", 0)
    assert job["error"] == "verification failed on: db1"
    assert job["verification"]["hosts"]["db1"]["failures"] == ["fake failure"]


def test_restart_after_a_crash_recovers(settings, make_api, project):
    """A job left running by a dead process (its row and locks as the crash left them)."""
    store = Store.from_settings(settings)
    for customer in ("acme",):
        store.put_customer(customer_id=customer, name=customer, webhook_url=None)
    ids = {}
    for ticket, host in (("T-1", "app1"), ("T-2", "db1")):
        decision = {"outcome": "covered", "details": {}}
        decision_id = store.add_decision(
            ticket_id=ticket,
            customer_id="acme",
            service="inspect",
            request={},
            decision=decision,
            caller="t",
        )
        job, _ = store.create_job(
            ticket_id=ticket,
            customer_id="acme",
            service="inspect",
            limit_pattern=host,
            inventory=str(project.inventory),
            hosts=[host],
            parameters={},
            fingerprint="f",
            decision_id=decision_id,
            decision=decision,
            created_by="t",
        )
        ids[ticket] = job["id"]
    store.update_job(ids["T-1"], only_if_state="queued", state="running")
    store.close()

    api = make_api()
    interrupted = api.ctx.store.get_job(ids["T-1"])
    assert (interrupted["state"], interrupted["error"]) == (
        "interrupted",
        "the API stopped while the job ran",
    )
    assert api.wait(ids["T-2"])["state"] == "succeeded"  # the queued one ran
    assert api.ctx.store.held_hosts() == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server_env(settings):
    env = dict(os.environ)
    env.update(
        {
            "EMSOPS_DATA_DIR": str(settings.data_dir),
            "EMSOPS_PROJECT_DIR": str(settings.project_dir),
            "EMSOPS_SITES": json.dumps({k: str(v) for k, v in settings.sites.items()}),
            "EMSOPS_VAULT_PASSWORD_FILE": str(settings.vault_password_file),
            "EMSOPS_INVENTORY_ROOT": str(settings.inventory_root),
            "EMSOPS_WORKERS": "2",
        }
    )
    return env


def start_server(env, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    handle = log.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own test server
        [sys.executable, str(Path(__file__).parent / "serve_app.py"), str(port)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, what="the API to answer")
    return proc, base


def test_killed_api_leaves_job_interrupted_and_host_free(settings, server_env, project, tmp_path):
    log = tmp_path / "api.log"
    first, base = start_server(server_env, log)
    try:
        store = Store.from_settings(settings)
        admin, tickets = issue_token(store, Role.ADMIN), issue_token(store, Role.TICKET_SYSTEM)
        sales = issue_token(store, Role.SALES)
        store.close()
        h_admin = {"Authorization": f"Bearer {admin}"}
        h_tickets = {"Authorization": f"Bearer {tickets}"}
        assert (
            httpx.put(
                base + "/v1/customers/acme/contract",
                headers=h_admin,
                json={
                    "tier": "machine_package",
                    "state": "active",
                    "licensed_modules": [],
                    "version_line": "3.2",
                },
            ).status_code
            == 200
        )
        httpx.post(
            base + "/v1/tickets/T-1/settlements",
            headers={"Authorization": f"Bearer {sales}"},
            json={
                "customer_id": "acme",
                "service": "troubleshoot_data",
                "kind": "guarantee",
                "reference": "s",
            },
        )
        slow = httpx.post(
            base + "/v1/jobs",
            headers=h_tickets,
            json={
                "ticket_id": "T-1",
                "customer_id": "acme",
                "service": "troubleshoot_data",
                "limit": "db1",
                "parameters": {"symptom": "missing"},
            },
        ).json()["id"]
        private = str(settings.runs_dir / slow)
        wait_for(lambda: processes_naming(private), what="the playbook to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert processes_naming(private), "the playbook should outlive the killed API"
    finally:
        first.kill()

    second, base = start_server(server_env, log)
    try:
        job = httpx.get(f"{base}/v1/jobs/{slow}", headers=h_tickets).json()
        assert job["state"] == "interrupted"
        wait_for(lambda: not processes_naming(private), timeout=10, what="the orphan to die")
        nxt = httpx.post(
            base + "/v1/jobs",
            headers=h_tickets,
            json={"ticket_id": "T-2", "customer_id": "acme", "service": "inspect", "limit": "db1"},
        )
        assert nxt.status_code == 202
        done = wait_for(
            lambda: (
                (j := httpx.get(f"{base}/v1/jobs/{nxt.json()['id']}", headers=h_tickets).json())[
                    "finished_at"
                ]
                and j
            ),
            what="the next job",
        )
        assert done["state"] == "succeeded"
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        kill_processes_using(settings.runs_dir)
    logs = log.read_bytes()
    assert b"Application startup complete" in logs
    for secret in project.secrets:
        assert secret.encode() not in logs + all_bytes(settings.data_dir)


class _Receiver(BaseHTTPRequestHandler):
    """Answers 500 to the first `fail` requests, then 204; keeps what it received."""

    fail = 2
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((dict(self.headers), body))
        self.send_response(500 if len(type(self).received) <= type(self).fail else 204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_signed_and_retried_with_every_attempt_recorded(api, settings):
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        assert (
            api.request(
                "PUT", "/v1/customers/acme", Role.ADMIN, json={"name": "Acme", "webhook_url": url}
            ).status_code
            == 200
        )
        api.contract()
        job_id = post_job(api, "inspect")
        api.wait(job_id)
        rows = wait_for(
            lambda: (d := api.ctx.store.deliveries(job_id)) and len(d) == 3 and d,
            what="three delivery attempts",
        )
    finally:
        server.shutdown()
    assert [(r["attempt"], r["status_code"]) for r in rows] == [(1, 500), (2, 500), (3, 204)]
    headers, body = _Receiver.received[-1]
    expected = hmac.new(
        settings.webhook_secret.encode(),
        headers["X-Emsops-Timestamp"].encode() + b"." + body,
        hashlib.sha256,
    ).hexdigest()
    assert headers["X-Emsops-Signature"] == "sha256=" + expected
    assert json.loads(body) | {"finished_at": None} == {
        "job_id": job_id,
        "ticket_id": "T-1",
        "customer_id": "acme",
        "service": "inspect",
        "state": "succeeded",
        "verdict": True,
        "error": None,
        "finished_at": None,
    }


def test_webhook_gives_up_after_the_configured_attempts(api, settings):
    dead = f"http://127.0.0.1:{free_port()}/hook"
    api.request("PUT", "/v1/customers/acme", Role.ADMIN, json={"name": "A", "webhook_url": dead})
    api.contract()
    job_id = post_job(api, "inspect")
    api.wait(job_id)
    rows = wait_for(
        lambda: (
            (d := api.ctx.store.deliveries(job_id)) and len(d) == settings.webhook_attempts and d
        ),
        what="all attempts",
    )
    assert all(r["status_code"] is None and r["error"] for r in rows)


def test_vault_password_script_from_ansible_cfg_is_redacted_too(
    make_api, settings, project, tmp_path
):
    """Without EMSOPS_VAULT_PASSWORD_FILE the API learns the password where ansible-playbook
    does (the project's ansible.cfg, here an executable script as the lab uses)."""
    root = tmp_path / "proj"
    shutil.copytree(project.root, root)
    script = root / "vault-pass.sh"
    script.write_text(f"#!/bin/sh\ncat {project.vault_password_file}\n")
    script.chmod(0o700)
    with (root / "ansible.cfg").open("a") as cfg:
        cfg.write("vault_password_file = vault-pass.sh\n")
    api = make_api(
        settings.model_copy(
            update={
                "project_dir": root,
                "vault_password_file": None,
                "sites": {"acme": root / "inventory" / "hosts.yml"},
                "inventory_root": root / "inventory",
            }
        )
    )
    api.contract()
    api.guarantee("T-1", "restore")
    job = api.wait(post_job(api, "restore"))
    assert job["state"] == "succeeded"
    stdout = "".join(e["stdout"] or "" for e in api.ctx.store.events(job["id"], limit=1000))
    assert "token=******** inline=********" in stdout
    for secret in project.secrets:
        assert secret.encode() not in all_bytes(settings.data_dir)


def test_graceful_stop_interrupts_running_and_keeps_queued(settings, make_api):
    """Stopping the app kills the running playbook (interrupted); a queued job stays queued
    and runs at the next start."""
    api = make_api(settings.model_copy(update={"workers": 1}))
    api.contract()
    api.guarantee("T-1", "troubleshoot_data")
    slow = post_job(api, "troubleshoot_data", limit="db1", parameters={"symptom": "missing"})
    waiting = post_job(api, "inspect", ticket="T-2", limit="app1")
    private = str(api.ctx.settings.runs_dir / slow)
    wait_for(lambda: processes_naming(private), what="the playbook to start")
    api.client.__exit__(None, None, None)
    store = Store.from_settings(settings)
    try:
        stopped = store.get_job(slow)
        assert (stopped["state"], stopped["error"]) == (
            "interrupted",
            "the API stopped during the run",
        )
        assert store.get_job(waiting)["state"] == "queued"
        assert [lock["host"] for lock in store.held_hosts()] == ["app1"]
    finally:
        store.close()
    assert not processes_naming(private)
    again = make_api()
    assert again.wait(waiting)["state"] == "succeeded"


def test_wrong_vault_password_fails_the_job_before_ansible_runs(make_api, settings, tmp_path):
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("not-the-password\n")
    api = make_api(settings.model_copy(update={"vault_password_file": wrong}))
    api.contract()
    job = api.wait(post_job(api, "inspect"))
    assert job["state"] == "failed"
    assert job["error"].startswith("the vault password does not open the inventory's vault")
    assert job["playbook_status"] is None
    assert api.ctx.store.events(job["id"]) == []
    assert api.ctx.store.held_hosts() == []
    assert not (api.ctx.settings.runs_dir / job["id"]).exists()
