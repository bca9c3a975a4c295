"""Issue 10's remote recovery on the deployed site: real faults (lab/faults.py) in batches on
several hosts at once, `restore.yml` finds each with its evidence, repairs it, the host suites
pass, a second run changes nothing; readings the gateway took while the platform or the database
was down arrive; a collector that was down is reported as a gap; `--check` changes nothing
(fingerprints); a full disk of someone else's file fails the run, naming the filesystem, and the
file stays."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from labkit import (
    backlog_drained,
    lab_ssh,
    layout,
    missing_in_database,
    recap,
    run_playbook,
    spool_readings,
)

from lab import faults
from lab.fingerprint import diff, fingerprint
from tests.support.waiting import wait_for

pytestmark = pytest.mark.lab

EMS_HOSTS = ("ems-db", "ems-app", "ems-gw1")
# Faults that do not interfere, several hosts at once. The first two batches must be repaired
# (the first keeps the gateway collecting while the database and the platform are broken);
# the third holds what must not be repaired (a file not the EMS's fills the gateway's disk).
BATCHES = {
    "db-and-platform-down-gateway-collecting": {
        "ems-db": ["db-config-broken"],
        "ems-app": ["config-corrupt", "license-missing", "timer-disabled"],
    },
    "everything-else": {
        "ems-db": ["db-down"],
        "ems-app": ["unit-masked", "release-link-broken"],
        "ems-gw1": ["disk-full-logs", "unit-crashloop", "release-file-corrupt", "config-missing"],
    },
}
NOT_REPAIRABLE = {"ems-app": ["unit-stopped"], "ems-gw1": ["disk-full"]}


def expected(host: str, kind: str) -> tuple[str, str]:
    """The finding id (or its prefix) a fault must produce, and a piece of its evidence."""
    v = layout(host)
    unit = v["ems_layout_platform_unit"] if host == "ems-app" else v["ems_layout_gateway_unit"]
    return {
        "db-config-broken": ("db.config", 'invalid value for parameter "shared_buffers"'),
        "db-down": ("db.down", "inactive/dead"),
        "config-corrupt": ("config.invalid", "parsing errors"),
        "config-missing": ("config.missing", f"{v['ems_layout_config_file']} does not exist"),
        "license-missing": ("license.missing", f"{v['ems_layout_license_file']} does not exist"),
        "timer-disabled": (f"unit.disabled.{v['ems_layout_aggregate_unit']}.timer",
                           "file disabled"),
        "unit-crashloop": (f"unit.dropin./etc/systemd/system/{unit}.d/", "refusing to start"),
        "release-file-corrupt": ("release.files", "manifest"),
        "unit-masked": (f"unit.masked.{unit}", "-> /dev/null"),
        "release-link-broken": ("release.link", "0.0.0-missing (which does not exist)"),
        "disk-full-logs": (f"disk.full.{v['ems_layout_state_dir']}",
                           f"{v['ems_layout_state_dir']}/{faults.LOG_FILLER}"),
        "disk-full": (f"disk.full.{v['ems_layout_state_dir']}",
                      f"{v['ems_layout_state_dir']}/{faults.FILLER}"),
        "unit-stopped": (f"unit.down.{unit}", "inactive/dead"),
    }[kind]


def restore(*args: str, check: bool = True) -> tuple[dict, dict, str]:
    """A hand run of restore.yml; its `restore` set_stats (printed as JSON), recap and output."""
    os.environ.update(ANSIBLE_SHOW_CUSTOM_STATS="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    try:
        proc = run_playbook("restore.yml", "-e", "system_restore_reason=fails_to_start", *args,
                            check=check)
    finally:
        for name in ("ANSIBLE_SHOW_CUSTOM_STATS", "ANSIBLE_CALLBACK_RESULT_FORMAT"):
            os.environ.pop(name)
    start = proc.stdout.index("\tRUN: ") + len("\tRUN: ")
    stats, _end = json.JSONDecoder().raw_decode(proc.stdout[start:])
    return stats["restore"], recap(proc.stdout), proc.stdout


def inject(plan: dict[str, list[str]]) -> None:
    for host, kinds in plan.items():
        for kind in kinds:
            faults.inject(host, kind)


def clear(plan: dict[str, list[str]]) -> None:
    """Undo what the repair left of the faults (disk-full's mount, saved originals), newest
    host first, and the drop-ins the repair kept for the engineer."""
    for host in reversed(plan):
        faults.clear(host)
        lab_ssh(host, "rm -rf /var/backups/emsops-restore")


def assert_found(report: dict, plan: dict[str, list[str]]) -> None:
    for host, kinds in plan.items():
        for kind in kinds:
            fid, evidence = expected(host, kind)
            hits = [f for f in report[host]["found"] if f["id"].startswith(fid)]
            assert hits, f"{host} {kind}: no finding {fid} in {report[host]['found']}"
            assert any(evidence in line for f in hits for line in f["evidence"]), (
                f"{host} {kind}: {fid}'s evidence lacks {evidence!r}: {hits}")


@pytest.mark.parametrize("batch", list(BATCHES))
def test_faults_are_found_with_their_evidence_repaired_and_a_second_run_changes_nothing(
        lab_site, batch):
    plan = BATCHES[batch]
    injected_at = time.time()
    inject(plan)
    try:
        report, counts, output = restore()
        repaired_at = time.time()
        assert_found(report, plan)
        for host in EMS_HOSTS:
            assert report[host]["verdict"] == "healthy", report[host]
            assert report[host]["verified"] is True, report[host]
            assert report[host]["left"] == []
        for host in plan:
            assert report[host]["actions"], f"{host}: nothing done for {plan[host]}"
        if "ems-gw1" in plan:  # its collector was down: the readings never taken, as a gap
            gap = report["ems-gw1"]["not_collected"]
            assert gap and gap[0]["start"] < gap[0]["end"] <= repaired_at, gap
        else:  # it kept collecting: every reading of the outage reached the platform
            wait_for(lambda: backlog_drained("ems-gw1"), 60, "the gateway's backlog to drain")
            taken = spool_readings("ems-gw1", injected_at, repaired_at)
            assert len(taken) > 10, f"the gateway took only {len(taken)} readings meanwhile"
            lost = missing_in_database(taken)
            assert not lost, f"{len(lost)} of {len(taken)} readings lost"
            print(f"{len(taken)} readings taken during the outage, all on the platform")
        again, counts, output = restore("-e", "system_restore_verify=false")
        assert {h: counts[h]["changed"] for h in EMS_HOSTS} == dict.fromkeys(EMS_HOSTS, 0), (
            output[-4000:])
        assert all(again[h]["found"] == [] for h in EMS_HOSTS), again
    finally:
        clear(plan)


def test_check_mode_reports_and_changes_nothing_and_a_foreign_full_disk_fails_the_run(lab_site):
    plan = NOT_REPAIRABLE
    inject(plan)
    try:
        with ThreadPoolExecutor(len(EMS_HOSTS)) as pool:
            before = dict(zip(EMS_HOSTS, pool.map(fingerprint, EMS_HOSTS), strict=True))
            report, counts, _ = restore("--check")
            after = dict(zip(EMS_HOSTS, pool.map(fingerprint, EMS_HOSTS), strict=True))
        assert_found(report, plan)
        # On its full disk ems-gw1's collector crash-loops by itself, check mode or not: its
        # unit's state between two fingerprints is the fault's, not the run's (its files count).
        flapping = f"units: {layout('ems-gw1')['ems_layout_gateway_unit']} changed"
        changes = {h: [d for d in diff(before[h], after[h])
                       if not (h == "ems-gw1" and d.startswith(flapping))] for h in EMS_HOSTS}
        assert changes == dict.fromkeys(EMS_HOSTS, [])
        assert all(counts[h]["changed"] == 0 for h in EMS_HOSTS), counts
        assert "deploy" in report["ems-app"]["would_do"]
        assert report["ems-app"]["actions"] == [] and report["ems-app"]["verified"] is None

        report, counts, output = restore(check=False)
        assert counts["ems-gw1"]["failed"] == 1, output[-4000:]
        # The platform is repaired (nothing left), but it cannot verify healthy while its only
        # gateway is down: no fresh readings. Its unit runs again.
        assert report["ems-app"]["left"] == [] and report["ems-app"]["actions"], report["ems-app"]
        unit = layout("ems-app")["ems_layout_platform_unit"]
        lab_ssh("ems-app", f"systemctl is-active --quiet {unit}")
        gw = report["ems-gw1"]
        assert gw["verdict"] == "needs an engineer"
        state = layout("ems-gw1")["ems_layout_state_dir"]
        full = [f for f in gw["left"] if f["id"] == f"disk.full.{state}"]
        assert full and full[0]["repair"] is None, gw["left"]
        assert f"filesystem {state}" in full[0]["engineer"]
        assert f"{state}/{faults.FILLER}" in full[0]["foreign"]
        assert any(f"free space on filesystem {state}" in e for e in gw["engineer"])
        lab_ssh("ems-gw1", f"test -s {state}/{faults.FILLER}")  # the file is still there
    finally:
        clear(plan)
