"""Issue 12 on real hosts (systemd-networkd): a gateway is re-addressed into the second subnet with
a commit-confirmed change and back, through the one launcher; a change the controller cannot
confirm reverts by itself, the run fails saying so and the host's fingerprint is as before.

Each run's inventory is the lab's with the addresses an engineer would give: `ansible_host` where
the host is now, `network_repair_address` where it must be (a short revert window)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from labkit import address, inventory_path, lab_ssh, run_playbook

from api.launch import run_job, stdout_of
from api.settings import Settings
from lab import config, faults
from lab.fingerprint import diff, fingerprint

pytestmark = pytest.mark.lab
GW = "ems-gw1"
REVERT_S = 20
OLD = address(GW)
NEW = f"{config.SUBNET2_PREFIX}.{OLD.rsplit('.', 1)[1]}"
# Every run logs in once with a terminal (run_lock's session): sshd updates the login records.
LOGIN_RECORDS = ("files: /var/log/lastlog changed", "files: /var/log/wtmp changed")
# On the bridge but in no subnet the controller has an address in: a change it cannot confirm.
UNREACHABLE = f"{OLD.rsplit('.', 2)[0]}.{int(OLD.split('.')[2]) + 200}.{OLD.rsplit('.', 1)[1]}"


@pytest.fixture
def site_inventory(lab_site, tmp_path) -> Iterator:
    """Writes an inventory of the lab site beside the lab's (so its group_vars apply) where GW
    is at `now` and must be at `target`."""
    written: list[Path] = []

    def write(now: str, target: str) -> Path:
        inv = yaml.safe_load(inventory_path().read_text())
        for group in inv["all"]["children"].values():
            if GW in group.get("hosts", {}):
                group["hosts"][GW] = {
                    "ansible_host": now,
                    "network_repair_address": {"address": f"{target}/{config.PREFIX_LEN}"},
                    "network_repair_revert_after_s": REVERT_S,
                }
        path = inventory_path().with_name(f"test-network-repair-{len(written)}.yml")
        path.write_text(yaml.safe_dump(inv, sort_keys=False))
        written.append(path)
        return path

    yield write
    for path in written:
        path.unlink(missing_ok=True)


def repair(inventory: Path, settings: Settings, issue: str) -> dict:
    return run_job("repair_network", inventory, limit=GW, parameters={"issue": issue},
                   settings=settings)


def holders(ip: str) -> set[str]:
    """The MACs answering ARP for `ip` on the lab bridge."""
    return faults.arp_macs(ip)


def test_a_gateway_in_an_ip_conflict_moves_to_the_second_subnet_confirmed_and_back(
        site_inventory, tmp_path):
    settings = Settings(data_dir=tmp_path)
    mac = holders(OLD)
    assert len(mac) == 1 and not holders(NEW)
    faults.inject(GW, "ip-conflict")
    # As the engineer does on such a site: a static ARP entry for the gateway's own MAC, or the
    # controller's SSH lands on the intruder (which refuses it).
    pin = ["ip", "neigh", "replace", OLD, "lladdr", next(iter(mac)), "dev", config.BRIDGE,
           "nud", "permanent"]
    try:
        intruder = holders(OLD) - mac
        assert len(intruder) == 1
        subprocess.run(pin, check=True)
        moved = repair(site_inventory(OLD, NEW), settings, "ip_conflict")
    finally:
        subprocess.run(["ip", "neigh", "del", OLD, "dev", config.BRIDGE], check=False)
        faults.clear(GW)
    assert moved["state"] == "succeeded", (moved["error"], stdout_of(moved, settings)[-3000:])
    stats = moved["set_stats"]
    report = stats["network_repair"][GW]
    assert stats["network_repair_inventory"] == {GW: NEW}
    assert report["changed"] and report["planned"] and report["backend"] == "networkd"
    # The report names the device that holds the old address (the customer's, never touched).
    assert report["conflict"]["duplicate"] and set(report["conflict_macs"]) == intruder
    assert report["target_free"]["tested"] and not report["target_free"]["duplicate"]
    # The same machine answers on its new address only; no revert is left armed.
    assert holders(NEW) == mac and not holders(OLD)

    back = repair(site_inventory(NEW, OLD), settings, "lan_change")
    assert back["state"] == "succeeded", (back["error"], stdout_of(back, settings)[-3000:])
    assert back["set_stats"]["network_repair_inventory"] == {GW: OLD}
    assert holders(OLD) == mac and not holders(NEW)
    units = lab_ssh(GW, "systemctl list-units --all --plain --no-legend 'emsops-network-*'").stdout
    assert units.strip() == ""
    # A host already where the inventory says: diagnosed, nothing planned, nothing changed.
    again = repair(site_inventory(OLD, OLD), settings, "lan_change")
    assert again["state"] == "succeeded", (again["error"], stdout_of(again, settings)[-3000:])
    assert not again["set_stats"]["network_repair"][GW]["planned"]
    assert again["set_stats"].get("network_repair_inventory", {}) == {}
    assert again["host_stats"][GW]["changed"] == 0


def test_check_mode_diagnoses_and_changes_nothing(site_inventory):
    before, mac = fingerprint(GW), holders(OLD)
    run_playbook("repair_network.yml", "--check", "-l", GW, "-e", "network_repair_issue=lan_change",
                 inventory=site_inventory(OLD, NEW))
    assert holders(OLD) == mac and not holders(NEW)
    assert [d for d in diff(before, fingerprint(GW)) if not d.startswith(LOGIN_RECORDS)] == []


def test_a_change_the_controller_cannot_confirm_reverts_by_itself(site_inventory, tmp_path):
    settings = Settings(data_dir=tmp_path)
    before = fingerprint(GW)
    mac = holders(OLD)

    job = repair(site_inventory(OLD, UNREACHABLE), settings, "lan_change")
    assert job["state"] == "failed"
    out = stdout_of(job, settings)
    assert f"could not confirm the change to {UNREACHABLE}/{config.PREFIX_LEN}" in out, out[-3000:]
    assert f"the host reverted by itself to {OLD}" in out, out[-3000:]
    assert job["set_stats"].get("network_repair_inventory", {}) == {}
    # Back where it was, by itself: its address, its files and its units as before the run.
    assert holders(OLD) == mac and not holders(UNREACHABLE)
    assert [d for d in diff(before, fingerprint(GW)) if not d.startswith(LOGIN_RECORDS)] == []
