"""Helpers to drive the lab site from tests: playbooks, SSH, the CLI, HTTP, waiting."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from api.launch import hand_run_command
from lab import config
from lab.hosts import host as lab_host
from lab.hosts import ssh_base_args
from lab.site import layout, psql_command

__all__ = ["layout", "psql_command"]  # a host's expected layout; SQL on the site database

REPO = config.REPO_ROOT
BIN = Path(sys.executable).parent
RELEASES = REPO / "build" / "releases"


def run_playbook(playbook: str, *args: str, check: bool = True,
                 inventory: Path | None = None, stats: bool = False) -> subprocess.CompletedProcess:
    """The engineer's hand run: `ansible-playbook` of a catalog playbook against the lab (or
    another inventory of its hosts), as an engineer types it, a legitimate path of the product
    beside the launcher's jobs (`emsops run`, the API). Its command line: api.launch.
    `stats`: print the run's set_stats as JSON for `custom_stats`."""
    cmd = hand_run_command(inventory or inventory_path(), playbook, *args)
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_FORCE_COLOR="0")
    if stats:
        env.update(ANSIBLE_SHOW_CUSTOM_STATS="1", ANSIBLE_CALLBACK_RESULT_FORMAT="json")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{playbook} failed (rc {proc.returncode}):\n{proc.stdout[-6000:]}\n"
                    f"{proc.stderr[-2000:]}")
    return proc


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host."""
    result = {}
    for m in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        result[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return result


def custom_stats(output: str) -> dict:
    """The set_stats data (aggregated) of a `run_playbook(..., stats=True)`."""
    m = re.search(r"^\tRUN: (.*)$", output, re.M)
    return json.loads(m.group(1)) if m else {}


def changed_tasks(output: str) -> list[str]:
    """`TASK name: host` for every task that reported a change (default callback's output)."""
    changes, task = [], "?"
    for line in output.splitlines():
        if m := re.match(r"^TASK \[(.*)\]", line):
            task = m.group(1)
        elif m := re.match(r"^changed: \[([^\]]+)\]", line):
            changes.append(f"{task}: {m.group(1)}")
    return changes


def lab_ssh(host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*ssh_base_args(lab_host(host).spec), command], capture_output=True,
                          text=True, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"`{command}` on {host} failed ({proc.returncode}): {proc.stderr}")
    return proc


def emsops(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", **(env or {}))
    return subprocess.run([str(BIN / "emsops"), *args], cwd=REPO, capture_output=True, text=True,
                          check=False, env=environ)


def http_json(url: str, timeout: float = 5) -> dict | list:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - lab address
        return json.load(resp)


def address(host: str) -> str:
    return config.host_spec(host).address


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - keep the last error for the message
            last = exc
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


def db_counts() -> dict[str, int]:
    """Readings per meter in the site's PostgreSQL, read on the database host itself."""
    sql = "SELECT meter_id, count(*) FROM readings GROUP BY 1 ORDER BY 1"
    out = lab_ssh("ems-db", psql_command(sql)).stdout
    return {m: int(n) for m, n in (line.split() for line in out.splitlines() if line.strip())}


# (meter, ts) of every reading a gateway's spool holds that it took in [since, until] (epoch s).
_SPOOL_READINGS = (
    "import json, sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
    "print(json.dumps(db.execute('SELECT meter_id, ts FROM readings WHERE read_at BETWEEN ? AND ?',"
    " (float(sys.argv[2]), float(sys.argv[3]))).fetchall()))")


def spool_readings(host: str, since: float, until: float = float("inf")) -> set[tuple[str, str]]:
    """What the gateway took between the two times, waiting or kept as history, read from its
    spool as the spool's owner (a root reader could leave WAL files the collector cannot open)."""
    spool = layout(host)["ems_layout_spool_file"]
    out = lab_ssh(host, f"runuser -u $(stat -c %U {spool}) -- python3 -c "
                        f"{shlex.quote(_SPOOL_READINGS)} {spool} {since} {until}").stdout
    return {(meter, ts) for meter, ts in json.loads(out)}


def missing_in_database(readings: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of the (meter, ts) readings the site's database does not hold."""
    if not readings:
        return set()
    meters = ",".join(f"'{m}'" for m, _ in readings)
    stamps = ",".join(f"'{t}'" for _, t in readings)
    sql = (f"SELECT u.m, u.t FROM unnest(ARRAY[{meters}]::text[], ARRAY[{stamps}]::text[]) "
           "AS u(m, t) WHERE NOT EXISTS (SELECT 1 FROM readings r "
           "WHERE r.meter_id = u.m AND r.ts = u.t::timestamptz)")
    out = lab_ssh("ems-db", psql_command(sql)).stdout
    return {tuple(line.split()) for line in out.splitlines() if line.strip()}


def backlog_drained(host: str) -> bool:
    """The gateway has forwarded every reading it spooled."""
    port = layout(host)["ems_layout_gateway_status_port"]
    return http_json(f"http://{address(host)}:{port}/health")["backlog"]["size"] == 0


def backup_repository(host: str) -> str:
    """`host`'s restic repository as root on the backup server sees it (outside the chroot of
    the host's own backup account)."""
    server = layout("backup")
    return (f"{server['ems_layout_backup_chroot_dir']}/{server['ems_layout_backup_accounts'][host]}"
            f"{server['ems_layout_backup_repo_dir']}")


def restic_settings(host: str) -> str:
    """Shell lines that give restic, on `host`, what its ems-backup gives it for the host's own
    repository (environment, `$SFTP_CMD`), read from the installed script itself so the password
    never leaves the host: then `restic -o sftp.command="$SFTP_CMD" ...` acts as the wrapper."""
    script = layout(host)["ems_layout_backup_script"]
    account = layout("backup")["ems_layout_backup_accounts"][host]
    return (f"REPO_HOST={host}; ACCOUNT={account}; "
            f"eval \"$(grep -E '^(export |SSH=|SFTP_CMD=)' {script})\"; export SFTP_CMD; ")


def inventory_path() -> Path:
    return config.inventory_dir() / "hosts.yml"
