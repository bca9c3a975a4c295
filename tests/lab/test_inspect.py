"""Issue 13 on real hosts: a healthy site inspects ok in every section; injected problems each
show as their finding with evidence, and everything broken is repaired before the test ends.

Thresholds are inputs: the machine's load is shared by every container on it (lifted here), a
backup counts as too old past one second, meters go offline after 15 s (not 30 min), and
read errors warn above 0.5 % (a few failed polls among a long-running collector's)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from labkit import address, emsops, inventory_path, lab_ssh, layout, run_playbook, wait_until

from api.reports.inspection import SECTIONS
from lab import faults
from tests.support.report_html import ReportPage

pytestmark = pytest.mark.lab
LOAD = ["-e", "inspection_load_per_core_warn=50", "-e", "inspection_load_per_core_fail=100"]
OFFLINE_UNIT, OFFLINE_METER = 3, "m03"
AGG_DROPIN = "zz-emsops-inspect-test.conf"


def inspect(*args: str) -> dict:
    proc = emsops("inspect", "-i", str(inventory_path()), "--json", *LOAD, *args)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


def findings(report: dict) -> dict[tuple[str, str], dict]:
    return {(f["host"], f["id"]): f for s in report["sections"] for f in s["findings"]}


def meter_ctl(mode: str) -> None:
    lay = layout("meters")
    lab_ssh("meters", f"PYTHONPATH={lay['ems_layout_root']}/current "
                      f"{lay['ems_layout_python']} -m kangpai_ems.meter_ctl --host 127.0.0.1 "
                      f"--port {lay['ems_layout_modbus_port']} --unit {OFFLINE_UNIT} --mode {mode}")


def gateway_meter(meter: str) -> dict:
    port = layout("ems-gw1")["ems_layout_gateway_status_port"]
    from labkit import http_json
    return http_json(f"http://{address('ems-gw1')}:{port}/health")["meters"][meter]


@pytest.fixture(scope="module")
def site(lab_site) -> Path:
    """The lab site with a snapshot of every backed-up host (backup.yml when one is missing)."""
    for host in ("ems-app", "ems-db", "ems-gw1"):
        script = layout(host)["ems_layout_backup_script"]
        out = lab_ssh(host, f"test -x {script} && {script} snapshots", check=False).stdout
        if not out.strip() or out.strip() == "[]":
            run_playbook("backup.yml")
            break
    return lab_site


def test_healthy_site_is_ok_in_every_section_and_the_html_shows_it(site):
    # A host without the duplicate-address test (the role installs it when the probe says so,
    # then probes again): its finding is still a tested, ok one, and the tool is back.
    lab_ssh("ems-gw1", "DEBIAN_FRONTEND=noninteractive apt-get -q -y remove iputils-arping")
    report = inspect()
    bad = [f for f in findings(report).values() if f["severity"] != "ok"]
    assert report["status"] == "ok", bad
    assert not bad
    dup = findings(report)[("ems-gw1", f"network.duplicate.{address('ems-gw1')}")]
    assert dup["evidence"].startswith("no other host answers"), dup
    lab_ssh("ems-gw1", "command -v arping")
    assert [s["key"] for s in report["sections"]] == [key for key, _t, _k in SECTIONS]
    assert all(s["findings"] for s in report["sections"]), "a section without findings"
    assert report["state"] == "final" and report["mode"] == "automated"
    page = ReportPage((Path(report["report_dir"]) / "report.html").read_text())
    for key in ["header", "actions", *(key for key, _t, _k in SECTIONS)]:
        assert key in page.ids, f"section {key} missing from the HTML"
    assert page.ids["header"]["data-status"] == "ok"
    bars = page.elements("g", "data-pct")
    assert {b["data-label"] for b in bars} >= {"memory", "disk /", "load/core"}
    cells = page.elements("td", "data-day")
    assert {c["data-meter"] for c in cells} == {f"m0{n}" for n in range(1, 9)}


def test_each_injected_problem_shows_as_its_finding(site):
    lay = layout("ems-app")
    dropin_dir = f"/run/systemd/system/{lay['ems_layout_aggregate_unit']}.service.d"
    aggregate = f"{lay['ems_layout_aggregate_unit']}.service"
    collector = layout("ems-gw1")["ems_layout_gateway_unit"]
    gw_address = address("ems-gw1")
    state_dir = layout("ems-gw1")["ems_layout_state_dir"]
    try:
        # A meter offline, a failing aggregation, and (by threshold) backups too old: one run.
        meter_ctl("offline")
        # The aggregation loses sight of its configuration (exit status 2) until repaired.
        lab_ssh("ems-app", f"mkdir -p {dropin_dir} && printf '[Service]\\n"
                           f"InaccessiblePaths={lay['ems_layout_config_file']}\\n' > "
                           f"{dropin_dir}/{AGG_DROPIN} && systemctl daemon-reload")
        lab_ssh("ems-app", f"systemctl start {aggregate}", check=False)
        wait_until(lambda: gateway_meter(OFFLINE_METER)["last_hour"]["errors"] >= 2, 60,
                   f"{OFFLINE_METER}'s reads failing")
        report = inspect("-e", "inspection_meter_stale_min_s=10",
                         "-e", "inspection_meter_offline_s=15",
                         "-e", "inspection_backup_warn_age_s=1",
                         "-e", "inspection_backup_fail_age_s=2",
                         "-e", "inspection_read_error_warn_pct=0.5")
        got = findings(report)
        assert report["status"] == "fail"
        meter = got[("ems-gw1", f"meter.{OFFLINE_METER}")]
        assert meter["severity"] == "fail" and "offline" in meter["evidence"], meter
        assert got[("ems-gw1", "meter.m01")]["severity"] == "ok"
        errors = got[("ems-gw1", f"meter.{OFFLINE_METER}.errors")]
        assert errors["severity"] == "warn" and errors["error_pct"] > 0.5, errors
        agg = got[("ems-app", f"unit.{aggregate}")]
        assert agg["severity"] == "fail" and "failed" in agg["evidence"], agg
        for host in ("ems-app", "ems-db", "ems-gw1"):
            old = got[(host, "backup.newest")]
            assert old["severity"] == "fail" and "threshold 1 s" in old["evidence"], old
        assert {a["id"] for a in report["actions"]} >= {f"meter.{OFFLINE_METER}",
                                                        f"unit.{aggregate}", "backup.newest"}

        # Through the lab's faults: the gateway's state folder full, its collector stopped,
        # and another interface answering for its address.
        for kind in ("disk-full", "unit-stopped", "ip-conflict"):
            faults.inject("ems-gw1", kind)
        report = inspect("--limit", "ems-gw1")
        got = findings(report)
        full = got[("ems-gw1", f"disk.{state_dir}")]
        assert full["severity"] == "fail" and "100.0 % used" in full["evidence"], full
        unit = got[("ems-gw1", f"unit.{collector}")]
        assert unit["severity"] == "fail" and "inactive" in unit["evidence"], unit
        assert got[("ems-gw1", "gateway.status")]["severity"] == "fail"
        dup = got[("ems-gw1", f"network.duplicate.{gw_address}")]
        assert dup["severity"] == "fail" and dup["macs"], dup
        assert set(report["hosts"]) == {"ems-gw1"}
    finally:
        faults.clear("ems-gw1")
        meter_ctl("normal")
        # A fresh collector: the failed reads leave its last-hour window with it.
        lab_ssh("ems-gw1", f"systemctl restart {collector}", check=False)
        lab_ssh("ems-app", f"rm -f {dropin_dir}/{AGG_DROPIN} && systemctl daemon-reload && "
                           f"systemctl reset-failed {shlex.quote(aggregate)}; "
                           f"systemctl start {aggregate}", check=False)
    wait_until(lambda: gateway_meter(OFFLINE_METER)["reads"] > 0
               and gateway_meter("m01")["reads"] > 0, 60, "the collector reading every meter")
    repaired = findings(inspect("--limit", "ems-app,ems-gw1"))
    assert repaired[("ems-app", f"unit.{aggregate}")]["severity"] == "ok"
    assert repaired[("ems-gw1", f"unit.{collector}")]["severity"] == "ok"
    assert repaired[("ems-gw1", f"meter.{OFFLINE_METER}")]["severity"] == "ok"
    assert repaired[("ems-gw1", f"network.duplicate.{gw_address}")]["severity"] == "ok"
    assert (("ems-gw1", f"disk.{state_dir}")) not in repaired  # its own disk again
