"""The `make demo` story of issue 3 on the lab: deploy, accumulate readings, back up, lose ems-db
and ems-app, reinstall both from backup (the gateways send again what the platform confirmed
after the dump), verify, and tell what was lost and the RTO/RPO. Every playbook runs as a job
through the one launcher (api.launch), recorded in the API's store.

Run as root from the repository with the venv: `.venv/bin/python -m lab.demo`.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request

from api.drill import parse_time as restic_time
from api.launch import run_job, stdout_of, summary
from lab import config, manager
from lab.site import layout, psql, ssh

COUNT_SQL = ("SELECT meter_id, count(*) FROM readings WHERE received_at <= to_timestamp({t}) "
             "GROUP BY 1 ORDER BY 1")


def say(msg: str) -> None:
    print(f"\n=== {msg}", flush=True)


def playbook(service: str, limit: str = "all") -> dict:
    """Run a catalog service as a job through the one launcher (api.launch), verified."""
    job = run_job(service, config.inventory_dir() / "hosts.yml", limit=limit)
    print(summary(job))
    if job["state"] != "succeeded":
        print(stdout_of(job)[-4000:], file=sys.stderr)
        raise SystemExit(f"{service} failed: {job['error']}")
    return job


def counts(cutoff: float) -> dict[str, int]:
    out = psql(COUNT_SQL.format(t=cutoff))
    return {m: int(n) for m, n in (line.split() for line in out.splitlines() if line.strip())}


def readings() -> set[str]:
    """Every reading the platform holds, as `meter|ts`."""
    out = psql("SET timezone='UTC'; SELECT meter_id || '|' || ts FROM readings")
    return {line for line in out.splitlines() if "|" in line}


def gateway_backlog() -> int:
    port = layout("ems-gw1")["ems_layout_gateway_status_port"]
    url = f"http://{config.host_spec('ems-gw1').address}:{port}/health"
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - lab address
        return json.load(resp)["backlog"]["size"]


def main() -> int:
    say("lab up and site deployment")
    manager.up(log=print)
    playbook("site")
    say("letting readings accumulate for 30 s")
    time.sleep(30)
    say("backing up the site (restic over SFTP to the backup host)")
    before_backup = time.time()  # everything received before this is in the dump
    playbook("backup")
    script = layout("ems-db")["ems_layout_backup_script"]
    newest_db = [s for s in json.loads(ssh("ems-db", f"{script} snapshots"))
                 if "kind=db" in s["tags"]][-1]
    snapshot_at = restic_time(newest_db["time"]).timestamp()
    time.sleep(10)  # readings confirmed after the dump: only the gateways' history keeps them
    disaster = time.time()
    at_disaster = readings()
    at_snapshot = counts(before_backup)
    say("disaster: ems-db and ems-app lose their disks")
    manager.wipe("ems-db", log=print)
    manager.wipe("ems-app", log=print)
    say("reinstalling both from backup (database first, then the platform)")
    started = time.time()
    playbook("reinstall", "ems-db,ems-app")  # its job's verdict: the testinfra verification
    healthy = time.time()
    deadline = time.time() + 120
    while gateway_backlog() and time.time() < deadline:
        time.sleep(2)
    lost = at_disaster - readings()
    outage = psql("SELECT count(*), count(DISTINCT meter_id) FROM readings WHERE ts > "
                  f"to_timestamp({disaster}) AND ts < to_timestamp({healthy})").strip().split()
    snapshot_back = counts(before_backup) == at_snapshot
    say("result")
    print(f"readings on the server at the disaster:   {len(at_disaster)}")
    print(f"of those, received before the backup:     {sum(at_snapshot.values())}")
    print("received after it, sent again from the gateways' history: "
          f"{len(at_disaster) - sum(at_snapshot.values())}")
    print(f"lost:                                     {len(lost)}")
    print(f"every reading of the snapshot back:       {snapshot_back}")
    print(f"readings taken during the outage, sent later from the gateways' spools: {outage[0]} "
          f"(from {outage[1]} meters)")
    rpo = disaster - snapshot_at
    print(f"RPO (disaster - db snapshot {newest_db['short_id']}):    {rpo:.0f} s")
    print(f"RTO (reinstall start - verified healthy): {healthy - started:.0f} s")
    return 0 if snapshot_back and not lost and int(outage[0]) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
