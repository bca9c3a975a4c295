"""Issue 8 A on real hosts: a site that moves every path, unit, port, user and database name is
deployed, backed up, loses two disks and is reinstalled where it lives; verify measures it
against its own layout. The same run is the lab's proof that a wiped database host and a wiped
application host come back from their backups (every reading, the outage spool, the recorded
version, license and configuration folder): one reinstall proves both, in the moved layout.

It rebuilds the lab's hosts in the moved layout and leaves them so: it runs after every other
lab test but `lab down` (the default site needs no rebuild for the others).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from labkit import (
    address,
    emsops,
    http_json,
    inventory_path,
    lab_ssh,
    layout,
    psql_command,
    run_playbook,
    wait_until,
)

from api.layout import layout_defaults
from lab import manager

pytestmark = [pytest.mark.lab, pytest.mark.lab_last(1)]

# Every value of the layout that is not derived from another one, moved.
MOVED = {
    "ems_layout_root": "/opt/kp",
    "ems_layout_config_dir": "/etc/kp",
    "ems_layout_state_dir": "/srv/kp/state",
    "ems_layout_user": "kp-svc",
    "ems_layout_group": "kp-grp",
    "ems_layout_python": "/usr/bin/python3.11",
    "ems_layout_platform_unit": "kp-platform.service",
    "ems_layout_platform_port": 8190,
    "ems_layout_aggregate_unit": "kp-aggregate",
    "ems_layout_gateway_unit": "kp-collector.service",
    "ems_layout_gateway_status_port": 8191,
    "ems_layout_meter_sim_unit": "kp-meter-sim.service",
    "ems_layout_modbus_port": 1502,
    "ems_layout_db_port": 5433,
    "ems_layout_db_name": "kp_energy",
    "ems_layout_db_user": "kp_app",
    "ems_layout_backup_user": "kpbackup",
    "ems_layout_backup_home": "/srv/kpbackup",
    "ems_layout_backup_etc_dir": "/etc/kp-backup",
    "ems_layout_backup_dump_dir": "/srv/kp/backup-staging",
    "ems_layout_backup_script": "/usr/local/sbin/kp-backup",
    "ems_layout_backup_repo_dir": "/kp-restic",
    "ems_layout_backup_keys_dir": "/etc/ssh/kp-backup-keys",
    "ems_layout_backup_generations_script": "/usr/local/sbin/kp-backup-generations",
    "ems_layout_backup_generations_unit": "kp-backup-generations",
}
SITE_HOSTS = ("ems-app", "ems-db", "ems-gw1", "meters", "backup")
ENGINEER_FILE = "engineer-notes.txt"


def test_every_layout_value_is_moved():
    independent = {k for k, v in layout_defaults().items() if "{{" not in str(v)}
    assert set(MOVED) == independent
    assert all(MOVED[k] != v for k, v in layout_defaults().items() if k in MOVED)


@pytest.fixture(scope="module")
def moved_site(lab_site, tmp_path_factory) -> Path:
    """The lab's hosts, wiped and deployed in the moved layout; returns its inventory."""
    folder = tmp_path_factory.mktemp("moved") / "inventory"
    shutil.copytree(inventory_path().parent, folder)
    (folder / "group_vars" / "all" / "layout.yml").write_text(
        "---\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in MOVED.items()))
    for host in SITE_HOSTS:
        manager.wipe(host, log=lambda _m: None)
    inventory = folder / "hosts.yml"
    run_playbook("site.yml", inventory=inventory)
    return inventory


def _files(inventory: Path) -> dict[str, str]:
    """sha256 of every file of the app's configuration folder."""
    config_dir = layout("ems-app", inventory)["ems_layout_config_dir"]
    out = lab_ssh("ems-app", f"cd {config_dir} && find . -type f -exec sha256sum {{}} +").stdout
    return {name: digest for digest, name in (line.split() for line in out.splitlines())}


def _readings(inventory: Path) -> set[str]:
    sql = "SET timezone='UTC'; SELECT meter_id || '|' || ts FROM readings"
    out = lab_ssh("ems-db", psql_command(sql, inventory)).stdout
    return {line for line in out.splitlines() if "|" in line}


# Per meter: readings and a checksum of their values, over what was received before a time.
CHECKSUM_SQL = ("SET timezone='UTC'; SELECT meter_id, count(*), md5(string_agg(ts::text || '|' "
                "|| kwh::text || '|' || power::text, ',' ORDER BY ts)) FROM readings "
                "WHERE received_at <= to_timestamp({cutoff}) GROUP BY 1 ORDER BY 1")


def _checksums(inventory: Path, cutoff: float) -> dict[str, tuple[int, str]]:
    out = lab_ssh("ems-db", psql_command(CHECKSUM_SQL.format(cutoff=cutoff), inventory)).stdout
    return {m: (int(n), h) for m, n, h in (line.split() for line in out.splitlines()
                                           if line.count(" ") == 2)}


def _db_now() -> float:
    return float(lab_ssh("ems-db", "date +%s.%N").stdout)


def _gateway(inventory: Path) -> dict:
    port = layout("ems-gw1", inventory)["ems_layout_gateway_status_port"]
    return http_json(f"http://{address('ems-gw1')}:{port}/health")


def _edit_license_on_host(app: dict) -> None:
    """A license edited on the host: not what the inventory says, so only the snapshot has it."""
    lab_ssh("ems-app", f"python3 -c \"import json; p='{app['ems_layout_license_file']}'; "
                       "d=json.load(open(p)); d['expires']='2098-06-30'; "
                       "open(p,'w').write(json.dumps(d))\"")


def test_a_moved_site_is_backed_up_and_reinstalled_where_it_lives(moved_site):
    """Also the reinstall of a wiped database and application host in general (issue 3): every
    reading of the snapshot, the gateway's outage spool, the recorded version, the folder."""
    app = layout("ems-app", moved_site)
    assert app["ems_layout_config_file"] == "/etc/kp/ems.conf"  # derived values move too
    # Readings received a few seconds before the backup starts are surely in its dump.
    wait_until(lambda: len(_checksums(moved_site, _db_now() - 5)) == 8, 90,
               "readings of every meter in the moved database")
    lab_ssh("ems-app", f"echo 'breaker 7 replaced 2026-11-30' > "
                       f"{app['ems_layout_config_dir']}/{ENGINEER_FILE}")
    _edit_license_on_host(app)
    files = _files(moved_site)
    assert {"./ems.conf", "./license.json", f"./{ENGINEER_FILE}"} <= set(files)

    cutoff = _db_now() - 5
    run_playbook("backup.yml", inventory=moved_site)
    before = _checksums(moved_site, cutoff)
    assert len(before) == 8 and all(n > 0 for n, _ in before.values())
    in_dump = _readings(moved_site)
    # Readings the platform confirms after the backup: not in the dump, only in the gateway's
    # history, which the reinstall asks it to send again.
    wait_until(lambda: len(_readings(moved_site) - in_dump) >= 16, 60,
               "readings confirmed after the backup")
    at_wipe = _readings(moved_site)
    manager.wipe("ems-db", log=lambda _m: None)
    manager.wipe("ems-app", log=lambda _m: None)
    outage_start = time.time()
    wait_until(lambda: _gateway(moved_site)["backlog"]["size"] > 8, 60,
               "the gateway to spool readings")
    run_playbook("reinstall.yml", "-l", "ems-db,ems-app", inventory=moved_site)
    outage_end = time.time()

    assert _checksums(moved_site, cutoff) == before
    restore_dir = layout("ems-db", moved_site)["ems_backup_restore_dir"]
    assert lab_ssh("ems-db", f"ls -A {restore_dir}").stdout == "", \
        "the restored dump was left on the host"
    assert _files(moved_site) == files, "the configuration folder did not come back whole"
    snapshots = lab_ssh("ems-app", f"{app['ems_layout_backup_script']} snapshots").stdout
    newest = [s for s in json.loads(snapshots) if "kind=files" in s["tags"]][-1]
    recorded = next(t.split("=", 1)[1] for t in newest["tags"] if t.startswith("version="))
    health = http_json(f"http://{address('ems-app')}:{app['ems_layout_platform_port']}/health")
    assert health["status"] == "ok" and health["version"] == recorded
    assert health["license"]["expires"] == "2098-06-30"

    wait_until(lambda: _gateway(moved_site)["backlog"]["size"] == 0, 90, "the spool to drain")
    sql = (f"SELECT count(DISTINCT meter_id) FROM readings WHERE ts > to_timestamp({outage_start})"
           f" AND ts < to_timestamp({outage_end})")
    spooled = lab_ssh("ems-db", psql_command(sql, moved_site))
    assert int(spooled.stdout) == 8, "readings taken during the outage did not all arrive"
    lost = at_wipe - _readings(moved_site)
    assert not lost, f"{len(lost)} readings lost, e.g. {sorted(lost)[:5]}"
    verify = emsops("verify", "-i", str(moved_site), "--json")
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    hosts = json.loads(verify.stdout)["hosts"]
    assert all(hosts[h]["ok"] and hosts[h]["checks"] > 0 for h in SITE_HOSTS), hosts


def test_verify_fails_when_the_platform_listens_on_the_default_port(moved_site):
    app = layout("ems-app", moved_site)
    default = layout_defaults()["ems_layout_platform_port"]
    conf, unit = app["ems_layout_config_file"], app["ems_layout_platform_unit"]
    lab_ssh("ems-app", f"cp -p {conf} /root/ems.conf.good && "
                       f"sed -i 's/^port = {app['ems_layout_platform_port']}$/port = {default}/' "
                       f"{conf} && grep -q '^port = {default}$' {conf} && systemctl restart {unit}")
    try:
        wait_until(lambda: http_json(f"http://{address('ems-app')}:{default}/health"), 30,
                   "the platform on the default port")
        verify = emsops("verify", "-i", str(moved_site), "--limit", "ems-app", "--json")
        assert verify.returncode == 1, verify.stdout[-2000:]
        failures = json.loads(verify.stdout)["hosts"]["ems-app"]["failures"]
        assert any("port_listens" in f for f in failures), failures
    finally:
        lab_ssh("ems-app", f"cp -p /root/ems.conf.good {conf} && systemctl restart {unit}")
    port = app["ems_layout_platform_port"]
    wait_until(lambda: http_json(f"http://{address('ems-app')}:{port}/health"), 30,
               "the platform back on its configured port")


def test_a_backup_path_that_is_missing_fails_the_backup_and_names_it(moved_site):
    app = layout("ems-app", moved_site)
    missing = f"{app['ems_layout_state_dir']}/no-such-folder"
    paths = json.dumps({"ems_backup_paths": [app["ems_layout_config_dir"], missing]})
    try:
        proc = run_playbook("backup.yml", "-l", "ems-app:backup_servers", "-e", paths,
                            check=False, inventory=moved_site)
        assert proc.returncode != 0
        assert f"backup path {missing} does not exist on ems-app" in proc.stdout
    finally:
        run_playbook("backup.yml", "-l", "ems-app:backup_servers", inventory=moved_site)
