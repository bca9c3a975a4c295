"""Issue 3 on real hosts: a wiped host comes back from its backup (playbooks/reinstall.yml).

The application host's reinstall (recorded version, configuration folder, a license edited on the
host) is proven once, in the moved layout (test_moved_layout.py); the database host's here too,
in the default layout, with the gateway's outage spool."""

from __future__ import annotations

import time

import pytest
from labkit import (
    address,
    http_json,
    lab_ssh,
    layout,
    psql_command,
    run_playbook,
    wait_until,
)

from lab import manager
from lab.demo import readings

pytestmark = pytest.mark.lab

# Per meter: readings and a checksum of their values, over what was received before a time.
CHECKSUM_SQL = ("SELECT meter_id, count(*), md5(string_agg(ts::text || '|' || kwh::text || '|' "
                "|| power::text, ',' ORDER BY ts)) FROM readings WHERE received_at <= "
                "to_timestamp({cutoff}) GROUP BY 1 ORDER BY 1")


def _checksums(cutoff: float) -> dict[str, tuple[int, str]]:
    sql = CHECKSUM_SQL.format(cutoff=cutoff)
    out = lab_ssh("ems-db", psql_command(f"SET timezone='UTC'; {sql}")).stdout
    return {m: (int(n), h) for m, n, h in (line.split() for line in out.splitlines()
                                           if line.count(" ") == 2)}


def _gateway() -> dict:
    port = layout("ems-gw1")["ems_layout_gateway_status_port"]
    return http_json(f"http://{address('ems-gw1')}:{port}/health")


def test_wiped_db_gets_every_snapshot_reading_back_and_the_outage_spool(lab_site):
    cutoff = float(lab_ssh("ems-db", "date +%s.%N").stdout) - 5
    run_playbook("backup.yml", "-l", "ems_db:backup_servers")
    before = _checksums(cutoff)
    assert len(before) == 8 and all(n > 0 for n, _ in before.values())
    in_dump = readings()
    # Readings the platform confirms after the backup: not in the dump, only in the gateway's
    # history, which the reinstall asks it to send again.
    wait_until(lambda: len(readings() - in_dump) >= 16, 60, "readings confirmed after the backup")
    at_wipe = readings()

    manager.wipe("ems-db", log=lambda _m: None)
    outage_start = time.time()
    wait_until(lambda: _gateway()["backlog"]["size"] > 8, 60, "the gateway to spool readings")
    run_playbook("reinstall.yml", "-l", "ems-db")
    outage_end = time.time()

    assert _checksums(cutoff) == before
    restore_dir = layout("ems-db")["ems_backup_restore_dir"]
    assert lab_ssh("ems-db", f"ls -A {restore_dir}").stdout == "", \
        "the restored dump was left on the host"
    wait_until(lambda: _gateway()["backlog"]["size"] == 0, 90, "the spool to drain")
    sql = (f"SELECT count(DISTINCT meter_id) FROM readings WHERE ts > to_timestamp({outage_start})"
           f" AND ts < to_timestamp({outage_end})")
    spooled = lab_ssh("ems-db", psql_command(sql))
    assert int(spooled.stdout) == 8, "readings taken during the outage did not all arrive"
    lost = at_wipe - readings()
    assert not lost, f"{len(lost)} confirmed readings lost, e.g. {sorted(lost)[:5]}"


def test_reinstall_refuses_a_host_that_is_not_bare(lab_site):
    proc = run_playbook("reinstall.yml", "-l", "ems-gw1", check=False)
    assert proc.returncode != 0
    assert "is not bare" in proc.stdout


