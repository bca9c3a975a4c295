"""Reinstall RTO of a wiped database host / the sum of its unavoidable steps measured alone.

    PATH=$PWD/.venv/bin:$PATH .venv/bin/python bench/reinstall.py -i inventories/lab/hosts.yml

Root, against the lab (with the same EMSOPS_LAB_* variables as its `emsops lab up`), deployed with
playbooks/site.yml. It wipes ems-db. Steps:
1. fill `readings` up to --readings rows (past timestamps, one INSERT ... SELECT), back ems-db up
   with playbooks/backup.yml and take the newest db snapshot;
2. wipe ems-db and time playbooks/reinstall.yml on it, its testinfra verification included
   (RTO = until verified); the per-task times come from the job's stored events.
Every playbook runs as a job through the one launcher (api.launch), as the API would run it.
3. on the reinstalled host, time alone what no reinstall can skip, for the same snapshot: the
   restic restore of the dump, `pg_restore` of it into an empty scratch database (as the role
   does it) and a start of the PostgreSQL cluster until it accepts connections.
Prints the RTO, each step, their sum and the ratio RTO / sum (the lower bound).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from api.launch import run_job, stdout_of
from api.settings import get_settings
from api.store import Store
from lab import config, manager
from lab.hosts import ssh_base_args

REPO = config.REPO_ROOT
DB_HOST = "ems-db"
METERS = 8  # m01..m08, the reference site's meters
GATEWAY = "ems-gw1"  # the lab's gateway, as in the live rows
# Role defaults (ems_backup, ems_postgresql) of the lab site.
DUMP_DIR = "/var/backups/kangpai-ems"
DUMP_NAME = "ems.dump"
DB_NAME = "ems"
DB_OWNER = "ems"
SCRATCH_DB = "bench_reinstall_scratch"
SLOWEST = 12  # tasks listed
# On the host's disk, like the role's /var/lib/emsops-backup/restore (the container's /tmp is
# a tmpfs, which would flatter the restore).
RESTORE_DIR = "/var/lib/emsops-backup/bench-restore"

# Minute readings from 2020 on: far from the live ones (no key clash), and received_at = ts so
# the platform's incremental aggregation, which follows received_at, never picks them up.
# ON CONFLICT: a second run on the same site adds nothing and still reaches the target.
SEED_SQL = """
INSERT INTO readings (meter_id, ts, kwh, voltage, current, power, gateway_id, received_at)
SELECT format('m%s', lpad(m::text, 2, '0')), ts, 1000 * m + i * 0.05, v, a, v * a / 1000,
       '{gateway}', ts
FROM (SELECT m, i, timestamptz '2020-01-01 00:00:00+00' + i * interval '1 minute' AS ts,
             228 + random() * 4 AS v, 8 + random() * 8 AS a
      FROM generate_series(1, {meters}) AS m, generate_series(1, {per_meter}) AS i) AS s
ON CONFLICT (meter_id, ts) DO NOTHING
"""


def on_db(command: str) -> str:
    proc = subprocess.run(
        [*ssh_base_args(config.host_spec(DB_HOST)), command],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"`{command}` on {DB_HOST} failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout


def timed_on_db(command: str) -> float:
    """Seconds the command took, clocked on the host itself: no SSH setup in the number."""
    out = on_db(f"set -e; cd /; s=$(date +%s%N); {command}; e=$(date +%s%N); echo $((e - s))")
    return int(out.split()[-1]) / 1e9


def psql(sql: str, db: str = DB_NAME) -> str:
    return on_db(
        f"cd / && runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d {db} "
        f"-c {shlex.quote(sql)}"
    ).strip()


def playbook(inventory: Path, service: str, limit: str) -> tuple[float, dict]:
    """Run a catalog service as a job through the one launcher (api.launch), verified; returns
    its wall time (until verified) and the job."""
    started = time.perf_counter()
    job = run_job(service, inventory, limit=limit)
    elapsed = time.perf_counter() - started
    if job["state"] != "succeeded":
        raise SystemExit(f"{service} -l {limit} failed: {job['error']}\n{stdout_of(job)[-6000:]}")
    return elapsed, job


def newest_db_snapshot() -> str:
    snapshots = json.loads(on_db("ems-backup snapshots"))
    return max((s for s in snapshots if "kind=db" in s["tags"]), key=lambda s: s["time"])["id"]


def seed_and_back_up(inventory: Path, readings: int) -> dict:
    per_meter = math.ceil(readings / METERS)
    psql(SEED_SQL.format(gateway=GATEWAY, meters=METERS, per_meter=per_meter))
    total = int(psql("SELECT count(*) FROM readings"))
    if total < readings:
        raise SystemExit(f"the database holds {total} readings after seeding, wanted {readings}")
    playbook(inventory, "backup", "ems_db")
    manifest = json.loads(on_db(f"cat {DUMP_DIR}/manifest.json"))
    return {
        "snapshot": newest_db_snapshot(),
        "readings": sum(m["rows"] for m in manifest["meters"].values()),
        "dump_bytes": int(on_db(f"stat -c %s {DUMP_DIR}/{DUMP_NAME}")),
    }


def task_times(job: dict) -> list[dict]:
    """The job's task runs (one per host and inclusion), slowest first, from its stored events."""
    store = Store.from_settings(get_settings())
    try:
        events = store.events(job["id"], after=0, limit=1_000_000)
    finally:
        store.close()
    tasks = []
    for event in events:
        data = event["data"].get("event_data") or {}
        if not event["event"].startswith("runner_on_") or data.get("duration") is None:
            continue
        # task_path "REPO/roles/ROLE/tasks/FILE.yml:LINE" (or REPO/playbooks/NAME.yml:LINE)
        where = (data.get("task_path") or "").removeprefix(f"{REPO}/")
        where = where.split("roles/", 1)[-1].replace("/tasks/", "/")
        tasks.append(
            {"seconds": float(data["duration"]), "task": data.get("task", ""), "where": where}
        )
    return sorted(tasks, key=lambda t: t["seconds"], reverse=True)


def by_role(tasks: list[dict]) -> dict[str, dict]:
    """Task runs and their seconds per role (fact gathering counts as "playbook")."""
    roles: dict[str, dict] = {}
    for t in tasks:
        role = t["where"].split("/")[0] if "/" in t["where"] else "playbook"
        role = "playbook" if role == "playbooks" else role
        entry = roles.setdefault(role, {"tasks": 0, "seconds": 0.0})
        entry["tasks"] += 1
        entry["seconds"] += t["seconds"]
    return dict(sorted(roles.items(), key=lambda r: r[1]["seconds"], reverse=True))


def reinstall(inventory: Path, snapshot: str, readings: int) -> tuple[float, list[dict]]:
    manager.wipe(DB_HOST, log=lambda _m: None)
    rto, job = playbook(inventory, "reinstall", DB_HOST)
    tasks = task_times(job)
    # The role restored the newest db snapshot (naming it with -e reinstall_snapshot=ID fails
    # on ansible-core 2.19 in the role's snapshot check). A fresh "data not recoverable"
    # deployment exits 0 too: require our snapshot and its readings.
    if newest_db_snapshot() != snapshot:
        raise SystemExit(f"a newer db snapshot than {snapshot[:8]} appeared during the run")
    back = int(psql("SELECT count(*) FROM readings"))
    if back < readings:
        raise SystemExit(
            f"after the reinstall the database holds {back} readings, the snapshot {readings}"
        )
    return rto, tasks


def lower_bound(snapshot: str) -> tuple[dict[str, float], int]:
    """Seconds of each unavoidable step, and the readings the scratch database got."""
    dump = f"{RESTORE_DIR}{DUMP_DIR}/{DUMP_NAME}"
    unit = f"postgresql@{on_db('ls /etc/postgresql').split()[-1]}-main.service"
    cleanup = (
        f"cd / && systemctl start {unit} && runuser -u postgres -- dropdb --if-exists "
        f"{SCRATCH_DB} && rm -rf {RESTORE_DIR}"
    )
    try:
        on_db(f"rm -rf {RESTORE_DIR}")
        steps = {
            # --no-cache: a bare host has no restic cache; the reinstall left a warm one here.
            "restic restore": timed_on_db(
                f"ems-backup restore {snapshot} {RESTORE_DIR} --no-cache {DUMP_DIR} >/dev/null"
            ),
        }
        on_db(f"cd / && runuser -u postgres -- createdb -O {DB_OWNER} {SCRATCH_DB}")
        # As the role loads it: one transaction, stop at the first error, dump on stdin.
        steps["pg_restore"] = timed_on_db(
            f"runuser -u postgres -- pg_restore --exit-on-error --single-transaction "
            f"-d {SCRATCH_DB} < {dump}"
        )
        restored = int(psql("SELECT count(*) FROM readings", db=SCRATCH_DB))
        # "Service start" on the database host is the PostgreSQL cluster's: it is what serves
        # the site once the data is in. The platform and gateways run elsewhere and only
        # reconnect, so a db reinstall starts none of them. Timed from a clean stop (no
        # crash recovery) until the server accepts connections.
        on_db(f"systemctl stop {unit}")
        steps["PostgreSQL start"] = timed_on_db(
            f"systemctl start {unit}; until pg_isready -q; do sleep 0.02; done"
        )
    finally:
        on_db(cleanup)
    return steps, restored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--inventory", type=Path, required=True)
    parser.add_argument(
        "--readings",
        type=int,
        default=1_000_000,
        help="readings the database holds at least (default: 1000000)",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it wipes a lab host")
    inventory = args.inventory.resolve()

    data = seed_and_back_up(inventory, args.readings)
    rto, tasks = reinstall(inventory, data["snapshot"], data["readings"])
    steps, restored = lower_bound(data["snapshot"])
    if restored != data["readings"]:
        raise SystemExit(
            f"the scratch restore holds {restored} readings, the snapshot {data['readings']}"
        )
    bound = sum(steps.values())
    roles = by_role(tasks)
    in_tasks = sum(t["seconds"] for t in tasks)
    result = {
        **data,
        "rto_s": round(rto, 2),
        "lower_bound_s": {k: round(v, 2) for k, v in steps.items()},
        "lower_bound_sum_s": round(bound, 2),
        "ratio": round(rto / bound, 3),
        "reinstall_by_role": {
            r: {"tasks": v["tasks"], "seconds": round(v["seconds"], 2)} for r, v in roles.items()
        },
        "reinstall_outside_tasks_s": round(rto - in_tasks, 2),
        "slowest_tasks": [{**t, "seconds": round(t["seconds"], 2)} for t in tasks[:SLOWEST]],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"snapshot {data['snapshot'][:8]}: {data['readings']:,} readings, "
        f"dump {data['dump_bytes'] / 2**20:.1f} MiB"
    )
    print(f"reinstall.yml -l {DB_HOST}, until verified (RTO): {rto:8.2f} s")
    print("lower bound, each step alone on the reinstalled host:")
    for name, seconds in steps.items():
        print(f"  {name:<38} {seconds:8.2f} s")
    print(f"  {'sum':<38} {bound:8.2f} s")
    print(f"ratio RTO / lower bound: {rto / bound:.2f}")
    print("the reinstall's time by role (task runs):")
    for role, v in roles.items():
        print(f"  {role:<32} {v['tasks']:4d}  {v['seconds']:8.2f} s")
    print(f"  {'outside tasks (start-up, dispatch)':<38} {rto - in_tasks:8.2f} s")
    print("its slowest tasks:")
    for t in tasks[:SLOWEST]:
        print(f"  {t['seconds']:7.2f} s  {t['where']:<36} {t['task']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
