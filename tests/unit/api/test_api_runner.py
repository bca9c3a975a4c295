"""Real ansible-runner runs of the test project (tests/unit/api/project) against local hosts."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import uuid

from api.runner import kill_processes_using, runner_alive, runner_id
from api.store import Store
from tests.support.api_runs import all_bytes, post_job, processes_naming
from tests.support.waiting import wait_for

UNTEMPLATED = "{{ lookup('pipe', 'id') }}"


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
    api.guarantee("T-1", "restore")
    job = api.wait(post_job(api, "restore", limit="ems_app,ems_db"))
    assert (job["state"], job["playbook_status"], job["verdict"]) == ("failed", "successful", 0)
    assert job["error"] == "verification failed on: db1"
    assert job["verification"]["hosts"]["db1"]["failures"] == ["fake failure"]


def test_an_inspection_is_judged_by_its_report_not_by_the_host_suites(api, verifier):
    # A broken site is what an inspection reports; the suites would fail the job for it.
    verifier.failing.add("db1")
    api.contract()
    job = api.wait(post_job(api, "inspect", limit="ems_app,ems_db"))
    assert (job["state"], job["verdict"]) == ("succeeded", 1), job
    assert job["verification"]["by"] == "playbook"
    assert set(job["set_stats"]["inspection"]) == {"app1", "db1"}
    assert verifier.calls == []


def test_a_network_repair_is_judged_by_its_report_not_by_the_host_suites(api, verifier):
    # The stored inventory names the old addresses until the engineer writes in the new ones:
    # the suites would fail a moved host; the playbook confirmed each change itself.
    verifier.failing.add("app1")
    api.contract()
    api.guarantee("T-1", "repair_network")  # a value-added service: paid (guaranteed) first
    job = api.wait(post_job(api, "repair_network", limit="app1",
                            parameters={"issue": "lan_change"}))
    assert (job["state"], job["verdict"]) == ("succeeded", 1), job
    assert job["verification"]["by"] == "playbook"
    assert set(job["set_stats"]["network_repair"]) == {"app1"}
    assert verifier.calls == []


def test_restart_after_a_crash_recovers(make_api, queue_job):
    """A job left running by a dead process (its row and locks as the crash left them)."""
    ids = {"T-1": queue_job(ticket="T-1", host="app1", state="running")}
    ids["T-2"] = queue_job(ticket="T-2", host="db1")

    api = make_api()
    interrupted = api.ctx.store.get_job(ids["T-1"])
    assert (interrupted["state"], interrupted["error"]) == (
        "interrupted",
        "the API stopped while the job ran",
    )
    assert api.wait(ids["T-2"])["state"] == "succeeded"  # the queued one ran
    assert api.ctx.store.held_hosts() == []


def test_a_restart_leaves_a_job_whose_process_still_runs_alone(make_api, queue_job, settings):
    # Another process on the same data dir (an `emsops run` while the API starts) runs a job.
    other = subprocess.Popen(["sleep", "300"])
    recorded = runner_id(other.pid)
    try:
        job = queue_job(ticket="T-1", host="app1", state="running", runner=recorded)
        api = make_api()
        assert api.ctx.store.get_job(job)["state"] == "running"
        assert [r["host"] for r in api.ctx.store.held_hosts()] == ["app1"]
    finally:
        other.kill()
        other.wait()
    # Once that process is gone, its job is recovered as interrupted.
    assert runner_alive(runner_id()) and not runner_alive(recorded)
    # A live pid with another start time is another process (the pid was reused).
    assert not runner_alive(runner_id().rsplit(":", 1)[0] + ":1")
    assert api.ctx.store.recover(runner_alive)[0] == [job]
    assert api.ctx.store.get_job(job)["state"] == "interrupted"


def test_killed_api_leaves_job_interrupted_and_host_free(
    settings, server_env, start_server, served, project, tmp_path
):
    log = tmp_path / "api.log"
    first, served.base = start_server(server_env, log)
    try:
        served.cover_acme()
        slow = served.submit_slow("T-1", "db1")
        private = str(settings.runs_dir / slow)
        wait_for(lambda: processes_naming(private), what="the playbook to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert processes_naming(private), "the playbook should outlive the killed API"
    finally:
        first.kill()

    second, served.base = start_server(server_env, log)
    try:
        assert served.call("GET", f"/v1/jobs/{slow}")["state"] == "interrupted"
        wait_for(lambda: not processes_naming(private), timeout=10, what="the orphan to die")
        nxt = served.submit("T-2", "inspect", "db1")
        done = wait_for(
            lambda: (j := served.call("GET", f"/v1/jobs/{nxt}"))["finished_at"] and j,
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
