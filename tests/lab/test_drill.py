"""Issue 3 on real hosts: `emsops drill` restores the newest backups onto standby and reports."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from labkit import (
    address,
    backup_repository,
    db_counts,
    emsops,
    inventory_path,
    lab_ssh,
    layout,
    psql_command,
    run_playbook,
)

from api.settings import Settings
from api.store import Store

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def backed_up(lab_site):
    run_playbook("backup.yml", "-l", "ems_db:ems_app")
    return lab_site


def _drill(data_dir):
    proc = emsops("drill", "-i", str(inventory_path()), "--json",
                  env={"EMSOPS_DATA_DIR": str(data_dir)})
    report = json.loads(proc.stdout[proc.stdout.index("{"):]) if "{" in proc.stdout else {}
    return proc, report


def test_drill_passes_without_touching_production(backed_up, tmp_path):
    before = db_counts()
    proc, report = _drill(tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert report["verdict"] == "pass"
    assert report["rto_s"] > 0 and report["rpo_s"] >= 0
    assert [p["name"] for p in report["phases"]] == [
        "prepare", "repository", "restore", "data", "services", "application"]
    assert report["data"]["equal"] and report["data"]["meters"]
    assert report["data"]["rows"] == sum(m["rows"] for m in report["data"]["meters"].values())
    folder = tmp_path / "reports" / "drills" / report["id"]
    assert json.loads((folder / "report.json").read_text())["verdict"] == "pass"
    html = (folder / "report.html").read_text()
    assert "RTO" in html and "RPO" in html and "m01" in html
    assert report["id"] in (tmp_path / "reports" / "drills" / "index.html").read_text()
    # It ran as a job through the one launcher: in the store with its events and verdict.
    store = Store(sqlite_path=Settings(data_dir=tmp_path).sqlite_path)
    try:
        job = store.get_job(report["job_id"])
        assert job["service"] == "drill" and job["state"] == "succeeded" and job["verdict"]
        assert store.events(job["id"], limit=5)
    finally:
        store.close()
    # Only standby ran tasks (the backup server is reached by delegation for its key).
    log = (folder / "ansible.log").read_text()
    assert set(re.findall(r"^(\S+)\s+: ok=", log, re.M)) == {"standby"}
    # Production kept ingesting from its gateways meanwhile.
    after = db_counts()
    assert all(after[m] > before[m] for m in before)


def test_drill_fails_and_says_where_when_the_newest_dump_is_corrupt(backed_up, tmp_path):
    # A fresh db snapshot: its dump is in the pack files written since the marker.
    lab_ssh("backup", "touch /root/drill-marker && sleep 1")
    lab_ssh("ems-db", "systemctl start ems-backup@run.service")
    script = layout("ems-db")["ems_layout_backup_script"]
    newest = json.loads(lab_ssh("ems-db", f"{script} snapshots").stdout)[-1]
    assert "kind=db" in newest["tags"]
    db_id = newest["id"]
    repo = backup_repository("ems-db")
    pack = lab_ssh("backup", f"find {repo}/data -type f -newer /root/drill-marker "
                   "-printf '%s %p\\n' | sort -n | tail -1 | cut -d' ' -f2").stdout.strip()
    assert pack
    lab_ssh("backup", f"cp -p {pack} /root/pack.orig && python3 -c \"import sys; p=sys.argv[1]; "
            "b=bytearray(open(p,'rb').read()); m=len(b)//2; b[m:m+64]=bytes(x ^ 0xff for x in "
            "b[m:m+64]); open(p,'wb').write(b)\" " + pack)
    try:
        proc, report = _drill(tmp_path)
    finally:
        lab_ssh("backup", f"cp -p /root/pack.orig {pack}")
    assert proc.returncode == 1
    assert report["verdict"] == "fail"
    assert report["db_snapshot"]["id"].startswith(db_id)
    failed = [p for p in report["phases"] if not p["ok"]]
    assert [p["name"] for p in failed] == [report["failure"]["phase"]]
    assert report["failure"]["phase"] in ("restore", "data")
    assert report["failure"]["message"]
    assert report["rto_s"] is None


def test_drill_refuses_a_standby_that_is_a_production_machine_under_another_name(
        backed_up, tmp_path):
    """`standby` reaches ems-db through a second address of ems-db: no name or address says
    so, only the machine itself (its machine id and host key)."""
    alias = address("ems-db").rsplit(".", 1)[0] + ".112"
    folder = tmp_path / "inventory"
    shutil.copytree(inventory_path().parent, folder)
    hosts = yaml.safe_load((folder / "hosts.yml").read_text())
    known = tmp_path / "known_hosts"
    ssh_args = hosts["all"]["vars"]["ansible_ssh_common_args"]
    lab_known = re.search(r"UserKnownHostsFile=(\S+)", ssh_args)
    pinned = Path(lab_known.group(1)).read_text()
    db_keys = [line.split(None, 1)[1] for line in pinned.splitlines()
               if address("ems-db") in line.split(None, 1)[0].split(",")]
    assert db_keys, "ems-db's host key is not pinned"
    known.write_text(pinned + "".join(f"{alias} {key}\n" for key in db_keys))
    hosts["all"]["vars"]["ansible_ssh_common_args"] = ssh_args.replace(lab_known.group(1),
                                                                       str(known))
    hosts["all"]["children"]["standby"]["hosts"]["standby"]["ansible_host"] = alias
    (folder / "hosts.yml").write_text(yaml.safe_dump(hosts))
    oid_sql = "SELECT oid FROM pg_database WHERE datname = current_database()"
    oid = lab_ssh("ems-db", psql_command(oid_sql)).stdout
    before = db_counts()
    lab_ssh("ems-db", f"ip addr add {alias}/24 dev host0")
    try:
        proc = emsops("drill", "-i", str(folder / "hosts.yml"), "--json",
                      env={"EMSOPS_DATA_DIR": str(tmp_path / "data")})
    finally:
        lab_ssh("ems-db", f"ip addr del {alias}/24 dev host0")
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert proc.returncode == 1
    assert report["failure"]["phase"] == "prepare"
    assert "is the same machine as production host(s) ems-db" in report["failure"]["message"]
    assert lab_ssh("ems-db", psql_command(oid_sql)).stdout == oid, "the database was recreated"
    after = db_counts()
    assert all(after[m] >= before[m] for m in before), "production readings were removed"
