"""The one launcher (issue 9 item 5): command-line jobs run through the API's JobRunner, so they
are in the store with their events and verdict, hold host locks, and get the allow-listed
environment; `emsops drill` is such a job."""

from __future__ import annotations

import json
import shutil
import uuid

import pytest
import yaml

from api import cli, drill, launch
from api.store import Store

ENV_PLAYBOOK = """\
- name: Test inspect (prints its environment)
  hosts: all
  gather_facts: false
  tasks:
    - name: Show the environment of a task process
      ansible.builtin.command: env
      changed_when: false
"""

DRILL_PLAYBOOK = """\
- name: Test drill (reports like roles/drill)
  hosts: standby
  gather_facts: false
  tasks:
    - name: Report the result
      ansible.builtin.set_stats:
        data:
          drill:
            started: "2026-01-01T10:00:00+00:00"
            finished: "2026-01-01T10:05:00+00:00"
            ok: true
            failure: null
            phases:
              - {name: prepare, ended: "2026-01-01T10:01:00+00:00"}
              - {name: application, ended: "2026-01-01T10:04:00+00:00"}
            app_snapshot: {time: "2026-01-01T09:00:00+00:00", id: aaaa}
            db_snapshot: {time: "2026-01-01T09:30:00+00:00", id: bbbb}
"""


@pytest.fixture
def cli_project(tmp_path, project, settings):
    """The test project with a standby host, a drill that reports, and an inspect that prints
    its environment."""
    root = tmp_path / "project"
    shutil.copytree(project.root, root)
    hosts = yaml.safe_load((root / "inventory" / "hosts.yml").read_text())
    hosts["all"]["children"]["standby"] = {"hosts": {"standby": {}}}
    (root / "inventory" / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (root / "playbooks" / "drill.yml").write_text(DRILL_PLAYBOOK)
    (root / "playbooks" / "inspect.yml").write_text(ENV_PLAYBOOK)
    return settings.model_copy(update={"project_dir": root}), root / "inventory" / "hosts.yml"


def _stored(settings, job_id):
    store = Store.from_settings(settings)
    try:
        return store.get_job(job_id), store.events(job_id, after=0, limit=1000)
    finally:
        store.close()


def test_a_cli_job_is_in_the_store_with_its_events_verdict_and_role_inputs(
    cli_project, verifier
):
    settings, inventory = cli_project
    job = launch.run_job("restore", inventory, limit="app1", parameters={"reason": "expansion"},
                         settings=settings, verifier=verifier)
    stored, events = _stored(settings, job["id"])
    assert stored["state"] == "succeeded" and stored["verdict"]
    assert stored["customer_id"] == launch.CLI_CUSTOMER and stored["ticket_id"].startswith("cli-")
    assert stored["hosts"] == ["app1"] and stored["parameters"] == {"reason": "expansion"}
    assert stored["set_stats"]["reason"] == "expansion"
    assert verifier.calls == [(inventory.resolve(), "app1")]
    assert events and events[-1]["event"] == "playbook_on_stats"
    assert any(e["task"] == "Report the result" for e in events)
    store = Store.from_settings(settings)
    try:
        assert store.webhook(job["id"]) is None  # no ticket system hears of it
        assert store.held_hosts() == []
    finally:
        store.close()


def test_the_cli_refuses_bad_parameters_and_unknown_hosts_and_runs_nothing(cli_project):
    settings, inventory = cli_project
    with pytest.raises(launch.LaunchError, match="reason"):
        launch.run_job("restore", inventory, limit="app1", parameters={"reason": "whim"},
                       settings=settings)
    with pytest.raises(launch.LaunchError, match="names no host"):
        launch.run_job("restore", inventory, limit="nohost", settings=settings)
    with pytest.raises(launch.LaunchError, match="snapshot"):
        launch.run_job("reinstall", inventory, parameters={"snapshot": "../x"}, settings=settings)
    assert not (settings.runs_dir).exists() or not any(settings.runs_dir.iterdir())


def test_emsops_run_exits_nonzero_on_a_failed_job_and_prints_its_result(
    cli_project, verifier, monkeypatch, capsys
):
    settings, inventory = cli_project
    monkeypatch.setattr(launch, "get_settings", lambda: settings)
    monkeypatch.setattr(launch, "default_verifier", verifier)
    assert cli.main(["run", "reinstall", "-i", str(inventory), "-l", "db1"]) == 1
    out = capsys.readouterr().out
    assert "disk still dead" in out and "(reinstall): failed" in out
    assert verifier.calls == []  # a failed playbook is not verified
    assert cli.main(["run", "restore", "-i", str(inventory), "-l", "app1", "--quiet"]) == 0
    assert "(restore): succeeded" in capsys.readouterr().out
    assert cli.main(["run", "restore", "-i", str(inventory), "-e", "reason"]) == 2


def test_no_secret_of_the_callers_environment_reaches_a_cli_run(cli_project, verifier,
                                                                 monkeypatch):
    settings, inventory = cli_project
    canary = "canary-" + uuid.uuid4().hex
    for name in ("EMSOPS_WEBHOOK_SECRET", "DATABASE_URL", "PGPASSWORD"):
        monkeypatch.setenv(name, canary)
    monkeypatch.setenv("LC_EMSOPS_TEST", "passed")  # allow-listed: must arrive
    job = launch.run_job("inspect", inventory, limit="app1", settings=settings,
                         verifier=verifier)
    stored, events = _stored(settings, job["id"])
    recorded = json.dumps([stored, events], default=str) + launch.stdout_of(job, settings)
    assert "LC_EMSOPS_TEST=passed" in recorded
    assert canary not in recorded


def test_emsops_drill_is_a_job_through_the_runner_with_its_report(cli_project, tmp_path):
    settings, inventory = cli_project
    report, folder = drill.run_drill(inventory, tmp_path / "reports", 26 * 3600,
                                     settings=settings)
    assert report["verdict"] == "pass", report
    assert report["rto_s"] == 240.0 and report["rpo_s"] == 3600.0
    assert [p["name"] for p in report["phases"]] == ["prepare", "application"]
    stored, events = _stored(settings, report["job_id"])
    assert stored["service"] == "drill" and stored["hosts"] == ["standby"]
    assert stored["state"] == "succeeded" and stored["verification"]["by"] == "playbook"
    assert events
    assert "standby" in (folder / "ansible.log").read_text()
    assert json.loads((folder / "report.json").read_text())["job_id"] == stored["id"]


def test_a_cli_run_is_refused_on_a_host_another_job_holds(cli_project):
    settings, inventory = cli_project
    settings.data_dir.mkdir(parents=True)
    store = Store.from_settings(settings)
    try:
        store.put_customer(customer_id="c1", name="c1", webhook_url=None)
        decision_id = store.add_decision(ticket_id="T-9", customer_id="c1", service="inspect",
                                         request={}, decision={}, caller="t")
        holder, _ = store.create_job(
            ticket_id="T-9", customer_id="c1", service="inspect", limit_pattern="app1",
            inventory=str(inventory.resolve()), hosts=["app1"], parameters={},
            fingerprint="f", decision_id=decision_id, decision={}, created_by="t")
    finally:
        store.close()
    with pytest.raises(launch.LaunchError, match=f"held by another job.*{holder['id']}"):
        launch.run_job("inspect", inventory, limit="app1", settings=settings)
