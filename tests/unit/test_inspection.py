"""The inspection probe's findings (pure functions of facts and thresholds) and the report built
from them: each problem becomes its finding with evidence, a healthy host is ok throughout."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest
import yaml

from api.reports import inspection as report_mod
from tests.support.report_html import ReportPage

ROLE = Path(__file__).resolve().parents[2] / "roles" / "inspection"
_loader = importlib.machinery.SourceFileLoader("ems_probe", str(ROLE / "files" / "ems-probe"))
_spec = importlib.util.spec_from_loader("ems_probe", _loader)
probe = importlib.util.module_from_spec(_spec)
_loader.exec_module(probe)

NOW = 1_800_000_000.0
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
T = {k.removeprefix("inspection_"): v for k, v in DEFAULTS.items()}


def iso(epoch: float) -> str:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def healthy_facts() -> dict:
    return {
        "resources": {"cores": 4, "load": [0.5, 0.4, 0.3],
                      "memory": {"total_bytes": 8 << 30, "available_bytes": 6 << 30,
                                 "used_pct": 25.0},
                      "mounts": [{"mount": "/", "fstype": "ext4", "size_bytes": 50 << 30,
                                  "used_bytes": 10 << 30, "used_pct": 20.0, "inodes": 1000,
                                  "inodes_used_pct": 5.0}]},
        "units": {"ems-collector.service": {"LoadState": "loaded", "ActiveState": "active",
                                            "SubState": "running", "Result": "success"}},
        "gateway": {"poll_interval_s": 900.0, "status": {"ok": True, "body": {
            "version": "3.2.1", "gateway_id": "gw1",
            "meters": {"m01": {"last_good_read": iso(NOW - 60), "reads": 10, "errors": 0,
                               "last_hour": {"reads": 4, "errors": 0}}},
            "backlog": {"size": 0, "oldest_age_s": None}}}},
        "backups": {"configured": True, "snapshots": 3,
                    "newest": {"id": "abcd", "time": iso(NOW - 3600), "epoch": NOW - 3600}},
        "time": {"container": None, "synchronized": True},
        "network": {"addresses": {"10.0.0.5": "eth0"}, "expected": ["10.0.0.5"],
                    "duplicates": {"10.0.0.5": {"tested": True, "duplicate": False,
                                                "macs": []}}},
    }


SPEC = {"units": ["ems-collector.service"], "oneshot_units": [],
        "backup_check_unit": "ems-backup@check.service"}


def by_id(facts: dict, **overrides) -> dict[str, dict]:
    return {f["id"]: f for f in probe.findings(facts, SPEC, {**T, **overrides}, NOW)}


def test_a_healthy_host_is_ok_in_every_finding():
    got = probe.findings(healthy_facts(), SPEC, T, NOW)
    assert [f for f in got if f["severity"] != "ok"] == []
    assert probe.overall(got) == "ok"
    assert {f["section"] for f in got} == {"resources", "services", "gateways", "backups",
                                           "time", "network"}


@pytest.mark.parametrize(("used", "severity"), [(80.0, "ok"), (90.0, "warn"), (99.5, "fail")])
def test_disk_space_against_its_thresholds(used, severity):
    facts = healthy_facts()
    facts["resources"]["mounts"][0]["used_pct"] = used
    disk = by_id(facts)["disk./"]
    assert disk["severity"] == severity and f"{used} % used" in disk["evidence"]


def test_a_duplicate_address_names_the_other_mac():
    facts = healthy_facts()
    facts["network"]["duplicates"]["10.0.0.5"] = {"tested": True, "duplicate": True,
                                                  "macs": ["02:00:00:00:00:99"]}
    dup = by_id(facts)["network.duplicate.10.0.0.5"]
    assert dup["severity"] == "fail" and "02:00:00:00:00:99" in dup["evidence"]


def test_an_address_missing_from_the_host_fails():
    facts = healthy_facts()
    facts["network"]["addresses"] = {"10.0.0.9": "eth0"}
    got = by_id(facts)["network.address.10.0.0.5"]
    assert got["severity"] == "fail" and "10.0.0.9" in got["evidence"]


@pytest.mark.parametrize(("age", "severity", "word"), [
    (60, "ok", "last good read"), (3 * 300 + 10, "warn", "stale"), (1900, "fail", "offline")])
def test_meter_stale_then_offline(age, severity, word):
    facts = healthy_facts()
    facts["gateway"]["poll_interval_s"] = 300.0  # stale past 15 min, offline past 30
    facts["gateway"]["status"]["body"]["meters"]["m01"]["last_good_read"] = iso(NOW - age)
    got = by_id(facts)["meter.m01"]
    assert got["severity"] == severity and word in got["evidence"]


def test_stale_threshold_is_at_least_its_minimum_for_fast_polls():
    facts = healthy_facts()
    facts["gateway"]["poll_interval_s"] = 5.0
    facts["gateway"]["status"]["body"]["meters"]["m01"]["last_good_read"] = iso(NOW - 100)
    assert by_id(facts)["meter.m01"]["severity"] == "ok"  # 100 s < max(15 s, 180 s)


@pytest.mark.parametrize(("errors", "severity"), [(1, "ok"), (2, "warn"), (5, "fail")])
def test_read_error_ratio_over_the_last_hour(errors, severity):
    facts = healthy_facts()
    facts["gateway"]["status"]["body"]["meters"]["m01"]["last_hour"] = {
        "reads": 20 - errors, "errors": errors}
    got = by_id(facts)["meter.m01.errors"]
    assert got["severity"] == severity and "last hour" in got["evidence"]


def test_a_stopped_collector_fails_its_unit_and_status():
    facts = healthy_facts()
    facts["units"]["ems-collector.service"] |= {"ActiveState": "inactive", "SubState": "dead"}
    facts["gateway"]["status"] = {"ok": False, "error": "ConnectionRefusedError"}
    got = by_id(facts)
    assert got["unit.ems-collector.service"]["severity"] == "fail"
    assert "ConnectionRefused" in got["gateway.status"]["evidence"]


def test_a_failed_oneshot_run_fails_and_one_not_run_yet_is_ok():
    spec = {**SPEC, "units": ["agg.service"], "oneshot_units": ["agg.service"]}
    failed = {"agg.service": {"LoadState": "loaded", "ActiveState": "failed", "Result":
                              "exit-code", "ExecMainStatus": "2",
                              "ExecMainExitTimestamp": NOW - 30}}
    got = probe.unit_findings(failed, spec, NOW)[0]
    assert (got["severity"], got["section"]) == ("fail", "scheduled_tasks")
    assert "exit status 2" in got["evidence"]
    fresh = {"agg.service": {"LoadState": "loaded", "ActiveState": "inactive",
                             "ExecMainExitTimestamp": None}}
    assert probe.unit_findings(fresh, spec, NOW)[0]["severity"] == "ok"


def test_backup_age_against_its_thresholds_and_a_host_without_backups():
    assert by_id(healthy_facts(), backup_warn_age_s=60)["backup.newest"]["severity"] == "warn"
    assert by_id(healthy_facts(), backup_warn_age_s=60,
                 backup_fail_age_s=120)["backup.newest"]["severity"] == "fail"
    facts = healthy_facts()
    facts["backups"] = {"configured": False}
    assert by_id(facts)["backup.newest"]["severity"] == "fail"


def test_time_in_a_container_is_the_machines():
    facts = healthy_facts()
    facts["time"] = {"container": "systemd-nspawn", "synchronized": None}
    got = by_id(facts)["time.sync"]
    assert got["severity"] == "ok" and "machine's" in got["evidence"]


def test_completeness_per_meter_and_day_counts_from_the_first_sample():
    day = 86400 * (NOW // 86400)
    days = [{"meter_id": "m01", "day": "x", "samples": 4, "first": day + 3600}]
    days[0]["day"] = __import__("datetime").datetime.fromtimestamp(
        day, __import__("datetime").UTC).strftime("%Y-%m-%d")
    grid = probe.completeness(days, 900, day + 7200)
    assert grid[0]["expected"] == 4 and grid[0]["pct"] == 100.0
    low = probe.completeness_finding(days, {**T, "collection_interval_s": 60}, day + 7200)
    assert low["severity"] == "warn" and "1 of 1 meter-days" in low["evidence"]


def test_report_sections_actions_pictures_and_signoff(tmp_path):
    facts = healthy_facts()
    facts["resources"]["mounts"][0]["used_pct"] = 99.0
    items = probe.findings(facts, SPEC, T, NOW)
    for item in items:
        item["host"] = "gw1"
    stats = {"inspection": {"gw1": {"status": probe.overall(items), "facts": facts,
                                    "findings": items}}}
    report = report_mod.build_report(stats, site="acme", mode="manual", job_id="j1")
    assert (report["status"], report["state"]) == ("fail", "awaiting_signoff")
    assert [s["key"] for s in report["sections"]] == [k for k, _t, _s in report_mod.SECTIONS]
    assert [(a["id"], a["onsite"]) for a in report["actions"]] == [("disk./", True)]
    folder = report_mod.write_report(tmp_path, report)
    page = ReportPage((folder / "report.html").read_text())
    assert {b["data-label"]: b["data-pct"] for b in page.elements("g", "data-pct")}[
        "disk /"] == "99.0"
    signed = report_mod.sign(report, by="engineer token t", remarks="replace disk", at="now")
    assert signed["state"] == "signed" and signed["signoff"]["remarks"] == "replace disk"
    with pytest.raises(ValueError):
        report_mod.sign(signed, by="x", remarks="again")
    later = report_mod.build_report(stats, site="acme", mode="automated", job_id="j2",
                                    previous=report_mod.previous_report(tmp_path, "acme", "j2"))
    assert later["trend"]["previous_id"] == "j1" and later["state"] == "final"


def test_no_results_is_a_failed_report():
    report = report_mod.build_report({}, site="acme", mode="automated", job_id="j")
    assert report["status"] == "fail" and report["actions"][0]["id"] == "inspection"


@pytest.mark.parametrize(("args", "message"), [
    (["-i", "/nonexistent/hosts.yml"], "does not exist"),
    (["-i", "{inv}", "-e", "backup_warn_age_s=1"], "inspection_NAME=VALUE"),
])
def test_cli_refuses_bad_input_before_running_anything(tmp_path, capsys, args, message):
    from api.cli import main

    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    assert main(["inspect", *(a.format(inv=inventory) for a in args)]) == 2
    assert message in capsys.readouterr().err
