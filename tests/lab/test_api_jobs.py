"""Issue 4 on real hosts: the ticket system's API runs a catalog playbook on the lab.

A real `emsops serve` process, real ansible-runner, the real testinfra verification, a real
webhook receiver. Nothing here is substituted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml
from labapi import CUSTOMER, Api, Hooks, served
from labkit import BIN, REPO, lab_ssh, layout, restic_settings, run_playbook, wait_until

from api.launch import hand_run_command
from lab import faults, manager
from lab.inventory import vault_password_file

pytestmark = pytest.mark.lab
FINISHED_JOBS: list[str] = []


@pytest.fixture(scope="module")
def api(lab_site, tmp_path_factory):
    with served(lab_site, tmp_path_factory.mktemp("api")) as server:
        yield server


def _site_job(ticket: str, limit: str = "ems_app") -> dict:
    return {"ticket_id": ticket, "customer_id": CUSTOMER, "service": "site", "limit": limit}


def _reinstall_job(ticket: str) -> dict:
    return {"ticket_id": ticket, "customer_id": CUSTOMER, "service": "reinstall",
            "limit": "ems-gw1"}


def note_path() -> str:
    """Gateway state only the backup knows."""
    return f"{layout('ems-gw1')['ems_layout_state_dir']}/site-note"


def _note() -> str:
    return lab_ssh("ems-gw1", f"cat {note_path()}", check=False).stdout


def forget_snapshots(host: str) -> None:
    """Drop every snapshot of `host` from its own repository, on the host itself with the
    wrapper's own settings (so the password never leaves it). The protected generations on the
    backup server keep them: that is their point."""
    script = layout(host)["ems_layout_backup_script"]
    if lab_ssh(host, f"test -x {script}", check=False).returncode:  # rebuilt by another test
        run_playbook("backup.yml", "-l", f"{host}:backup_servers")
    snapshots = json.loads(lab_ssh(host, f"{script} snapshots").stdout or "[]")
    if snapshots:
        lab_ssh(host, restic_settings(host) + 'restic -o sftp.command="$SFTP_CMD" forget '
                + " ".join(s["id"] for s in snapshots))
    assert json.loads(lab_ssh(host, f"{script} snapshots").stdout or "[]") == []


def test_reinstall_with_no_backup_deploys_fresh_and_says_data_not_recoverable(api):
    # The repository holds no snapshot of the gateway (forgotten here; other tests may have
    # backed it up): a dead gateway can only be deployed fresh, and the job must say so instead
    # of pretending it restored. The test backs it up again at the end.
    forget_snapshots("ems-gw1")
    manager.wipe("ems-gw1", log=lambda _m: None)
    status, _ = api.call("POST", "/v1/tickets/T-LAB-0/settlements", api.admin,
                         {"customer_id": CUSTOMER, "service": "reinstall", "kind": "guarantee",
                          "reference": "sales-0"})
    assert status == 201
    status, job = api.call("POST", "/v1/jobs", api.engineer, _reinstall_job("T-LAB-0"))
    assert status == 202, job

    done = api.wait_finished(api.engineer, job["id"])
    assert done["state"] == "succeeded" and done["verdict"] is True, done
    result = done["set_stats"]["reinstall"]["ems-gw1"]
    assert result["status"] == "data not recoverable", result
    assert result["data_recoverable"] is False and result["snapshot"] is None
    run_playbook("backup.yml", "-l", "ems-gw1:backup_servers")


def test_reinstall_ticket_is_quoted_paid_run_verified_and_signed_back(api):
    """The paid service end to end: the gateway's disk died, the ticket asks for a reinstall."""
    note = secrets.token_hex(8)
    lab_ssh("ems-gw1", f"echo {note} > {note_path()}")
    run_playbook("backup.yml", "-l", "ems-gw1:backup_servers")
    manager.wipe("ems-gw1", log=lambda _m: None)

    quoted_status, quoted = api.call("POST", "/v1/jobs", api.engineer, _reinstall_job("T-LAB-1"))
    assert quoted_status == 402, quoted
    quote = quoted["error"]["detail"]["quote"]
    status, _ = api.call("POST", "/v1/tickets/T-LAB-1/settlements", api.admin,
                         {"customer_id": CUSTOMER, "service": "reinstall", "kind": "payment",
                          "amount": quote["total"], "reference": "bank-T-LAB-1"})
    assert status == 201

    status, job = api.call("POST", "/v1/jobs", api.engineer, _reinstall_job("T-LAB-1"))
    assert status == 202, job
    assert job["decision"]["outcome"] == "billable" and job["decision"]["settled"] is True
    # The ticket system retries: the same request is the same job.
    again_status, again = api.call("POST", "/v1/jobs", api.engineer, _reinstall_job("T-LAB-1"))
    assert again_status == 200 and again["id"] == job["id"]
    # Another ticket on the same host while this one holds it.
    held_status, held = api.call("POST", "/v1/jobs", api.engineer, _site_job("T-LAB-2", "ems-gw1"))
    assert held_status == 409, held
    assert held["error"]["code"] == "hosts_held"

    done = api.wait_finished(api.engineer, job["id"])
    assert done["state"] == "succeeded", done
    assert done["verdict"] is True
    assert done["verification"]["ok"] is True
    assert done["verification"]["hosts"]["ems-gw1"]["checks"] > 0
    assert done["host_stats"]["ems-gw1"]["failures"] == 0
    result = done["set_stats"]["reinstall"]["ems-gw1"]
    assert result["status"] == "restored", result
    assert _note().strip() == note
    # The backup server knows the redeployed gateway by its new key only.
    server = layout("backup")
    keys_file = (f"{server['ems_layout_backup_keys_dir']}/"
                 f"{server['ems_layout_backup_accounts']['ems-gw1']}")
    keys = lab_ssh("backup", f"cat {keys_file}").stdout.splitlines()
    key = f"{layout('ems-gw1')['ems_layout_backup_etc_dir']}/id_ed25519.pub"
    new_key = lab_ssh("ems-gw1", f"cat {key}").stdout.strip()
    assert [k for k in keys if k.endswith(" emsops-backup@ems-gw1")] == [new_key]
    FINISHED_JOBS.append(job["id"])

    wait_until(lambda: any(json.loads(b)["job_id"] == job["id"] for _h, b in Hooks.received),
               60, "the webhook")
    headers, body = next((h, b) for h, b in Hooks.received if json.loads(b)["job_id"] == job["id"])
    assert json.loads(body)["verdict"] is True
    expected = hmac.new(api.secret.encode(), headers["X-Emsops-Timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Emsops-Signature"], f"sha256={expected}")


def test_restore_ticket_is_paid_run_and_returns_its_findings_and_a_signed_webhook(api):
    """Remote recovery through the API: the gateway's collector stopped, the ticket asks for it."""
    faults.inject("ems-gw1", "unit-stopped")
    try:
        request = {"ticket_id": "T-LAB-R", "customer_id": CUSTOMER, "service": "restore",
                   "limit": "ems-gw1", "parameters": {"reason": "fails_to_start"}}
        quoted_status, quoted = api.call("POST", "/v1/jobs", api.engineer, request)
        assert quoted_status == 402, quoted
        status, _ = api.call("POST", "/v1/tickets/T-LAB-R/settlements", api.admin,
                             {"customer_id": CUSTOMER, "service": "restore", "kind": "payment",
                              "amount": quoted["error"]["detail"]["quote"]["total"],
                              "reference": "bank-T-LAB-R"})
        assert status == 201
        status, job = api.call("POST", "/v1/jobs", api.engineer, request)
        assert status == 202 and job["decision"]["outcome"] == "billable", job
        done = api.wait_finished(api.engineer, job["id"])
        assert done["state"] == "succeeded" and done["verdict"] is True, done
        assert done["verification"]["hosts"]["ems-gw1"]["ok"] is True
        result = done["set_stats"]["restore"]["ems-gw1"]
        unit = layout("ems-gw1")["ems_layout_gateway_unit"]
        assert any(f["id"] == f"unit.down.{unit}" and "inactive/dead" in " ".join(f["evidence"])
                   for f in result["found"]), result
        assert result["actions"] and result["left"] == [] and result["reason"] == "fails_to_start"
        wait_until(lambda: any(json.loads(b)["job_id"] == job["id"] for _h, b in Hooks.received),
                   60, "the webhook")
        headers, body = next((h, b) for h, b in Hooks.received
                             if json.loads(b)["job_id"] == job["id"])
        assert json.loads(body)["verdict"] is True
        expected = hmac.new(api.secret.encode(),
                            headers["X-Emsops-Timestamp"].encode() + b"." + body,
                            hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Emsops-Signature"], f"sha256={expected}")
    finally:
        faults.clear("ems-gw1")


def test_killed_api_leaves_the_job_interrupted_and_the_host_free(api):
    status, job = api.call("POST", "/v1/jobs", api.engineer, _site_job("T-LAB-3"))
    assert status == 202, job
    # Killed while its playbook works on the host (it holds the host's run lock).
    wait_until(lambda: f"job {job['id']}" in _lock_holder("ems-app"), 120,
               "the job to hold ems-app")
    api.kill()
    api.start()
    assert api.job(api.engineer, job["id"])["state"] == "interrupted"

    status, nxt = api.call("POST", "/v1/jobs", api.engineer, _site_job("T-LAB-4"))
    assert status == 202, nxt
    assert api.wait_finished(api.engineer, nxt["id"])["state"] == "succeeded"


def test_no_vault_secret_reaches_events_logs_or_the_database(api):
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    inventory = Path(json.loads(api.env["EMSOPS_SITES"])[CUSTOMER])
    vault = inventory.parent / "group_vars" / "all" / "vault.yml"
    lib = VaultLib([(DEFAULT_VAULT_ID_MATCH,
                     VaultSecret(vault_password_file().read_text().strip().encode()))])
    values = [v.encode() for v in yaml.safe_load(lib.decrypt(vault.read_text())).values()]
    assert values and all(len(v) >= 16 for v in values)

    data_dir = Path(api.env["EMSOPS_DATA_DIR"])
    files = [p for p in data_dir.rglob("*") if p.is_file()] + [api.log]
    assert any(p.suffix in (".sqlite3", ".db") for p in files), "no database file to inspect"
    # The reinstall job above opened the restic repository with the vault's restic password.
    assert FINISHED_JOBS and any("artifacts" in p.parts and p.name == "stdout" for p in files), \
        "no runner artifacts to inspect"
    for path in files:
        content = path.read_bytes()
        leaked = [v for v in values if v in content]
        assert not leaked, f"a vault secret is in {path}"
    # The events were stored: the search above looked at real content.
    assert FINISHED_JOBS, "no finished job to inspect"
    status, page = api.call("GET", f"/v1/jobs/{FINISHED_JOBS[0]}/events?limit=1000", api.engineer)
    assert status == 200
    stored = json.dumps(page).encode()
    assert b"Render ems.conf" in stored
    assert not [v for v in values if v in stored]


def _lock_holder(host: str) -> str:
    path = layout(host)["run_lock_path"]
    return lab_ssh(host, f"cat {path}.owner 2>/dev/null; flock -n {path} true || echo LOCKED",
                   check=False).stdout


def _failed_task_messages(api: Api, job_id: str) -> str:
    _, page = api.call("GET", f"/v1/jobs/{job_id}/events?limit=1000", api.engineer)
    return " ".join(json.dumps(e.get("data", {}).get("event_data", {}).get("res", {}))
                    for e in page["events"] if e["event"] == "runner_on_failed")


def test_a_hand_run_and_an_api_job_never_work_on_one_host_at_once(api, tmp_path):
    # An engineer's own playbook holds ems-gw1's run lock until the gate file goes away.
    gate = tmp_path / "gate"
    gate.touch()
    hold = tmp_path / "hold.yml"
    hold.write_text(yaml.safe_dump([{
        "name": "Hold ems-gw1", "hosts": "ems-gw1", "gather_facts": False,
        "roles": [{"role": "run_lock"}],
        "tasks": [{"name": "Wait for the gate", "delegate_to": "localhost", "become": False,
                   "ansible.builtin.wait_for": {"path": str(gate), "state": "absent",
                                                "timeout": 300}}]}]))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}",
               ANSIBLE_ROLES_PATH=str(REPO / "roles"))
    by_hand = subprocess.Popen(
        hand_run_command(api.inventory, hold), cwd=REPO, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: "LOCKED" in (h := _lock_holder("ems-gw1")) and "by hand" in h, 60,
                   "the hand run to hold ems-gw1")
        status, job = api.call("POST", "/v1/jobs", api.engineer, _site_job("T-LOCK-1", "ems-gw1"))
        assert status == 202, job
        done = api.wait_finished(api.engineer, job["id"], timeout_s=120)
        assert done["state"] == "failed" and done["host_stats"]["ems-gw1"]["failures"] == 1
        assert "ems-gw1 is being worked on by root by hand" in _failed_task_messages(api, job["id"])
        assert by_hand.poll() is None, "the hand run did not keep going"
    finally:
        gate.unlink(missing_ok=True)
        by_hand.wait(120)
    assert by_hand.returncode == 0, by_hand.stdout.read()[-3000:]
    wait_until(lambda: "LOCKED" not in _lock_holder("ems-gw1"), 30, "the hand run's lock to go")

    # And the other way round: while an API job works on ems-gw1, a hand run is refused at once.
    status, job = api.call("POST", "/v1/jobs", api.engineer, _site_job("T-LOCK-2", "ems-gw1"))
    assert status == 202, job
    wait_until(lambda: f"job {job['id']}" in _lock_holder("ems-gw1"), 60,
               "the job to hold ems-gw1")
    refused = run_playbook("site.yml", "-l", "ems-gw1", check=False)
    assert refused.returncode != 0
    assert f"ems-gw1 is being worked on by job {job['id']}" in refused.stdout
    done = api.wait_finished(api.engineer, job["id"])
    assert done["state"] == "succeeded", done
