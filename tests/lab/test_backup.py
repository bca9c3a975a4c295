"""Issue 3, part 1 on real hosts: restic backups over SFTP, tagged, failing loudly and cleanly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest
from labkit import (
    address,
    backup_repository,
    lab_ssh,
    layout,
    restic_settings,
    run_playbook,
    wait_until,
)

from lab.inventory import _secrets

pytestmark = pytest.mark.lab


def backup(host: str, action: str) -> str:
    """The host's ems-backup command with an action."""
    return f"{layout(host)['ems_layout_backup_script']} {action}"


def snapshots(host: str) -> list[dict]:
    return json.loads(lab_ssh(host, backup(host, "snapshots")).stdout)


def tags(snapshot: dict) -> dict[str, str]:
    return dict(t.split("=", 1) for t in snapshot.get("tags", []))


def locks(host: str) -> list[str]:
    return lab_ssh(host, backup(host, "locks")).stdout.split()


def journal_says(host: str, text: str) -> None:
    """journald receives a unit's output asynchronously: wait for the line to arrive."""
    journal = ""
    for _ in range(40):
        journal = lab_ssh(host, "journalctl -u ems-backup@run.service -n 50 -o cat").stdout
        if text in journal:
            return
        time.sleep(0.5)
    pytest.fail(f"{text!r} not in {host}'s journal of ems-backup@run.service:\n{journal}")


def unit_failed(host: str) -> bool:
    state = lab_ssh(host, "systemctl is-failed ems-backup@run.service", check=False).stdout
    return state.strip() == "failed"


@pytest.fixture(scope="module")
def backed_up(lab_site) -> subprocess.CompletedProcess:
    return run_playbook("backup.yml", "-vv")


def test_every_ems_host_has_tagged_snapshots(backed_up):
    db = [tags(s) for s in snapshots("ems-db")]
    assert {"host": "ems-db", "role": "ems_db", "version": "3.2.1", "kind": "db"} in db
    app = [tags(s) for s in snapshots("ems-app") if tags(s)["host"] == "ems-app"]
    assert {"host": "ems-app", "role": "ems_app", "version": "3.2.1", "kind": "files"} in app
    gw = [tags(s) for s in snapshots("ems-gw1") if tags(s)["host"] == "ems-gw1"]
    assert any(t["kind"] == "files" and t["role"] == "ems_gateways" for t in gw)


def repository_password(host: str) -> str:
    """The password of `host`'s own repository, as the role derives it from the site's secret."""
    return hashlib.sha256(f"{_secrets()['vault_restic_password']}:{host}".encode()).hexdigest()


def password_file(host: str) -> str:
    return f"{layout(host)['ems_layout_backup_etc_dir']}/password-{host}"


def test_repository_password_never_reaches_output_or_command_lines(backed_up):
    secret = _secrets()["vault_restic_password"]
    hosts = ("ems-app", "ems-db", "ems-gw1")
    passwords = [secret, *map(repository_password, hosts)]
    assert not [p for p in passwords if p in backed_up.stdout + backed_up.stderr]
    for host in hosts:
        journal = lab_ssh(host, "journalctl --no-pager -o cat").stdout
        assert not [p for p in passwords if p in journal], f"password in {host}'s journal"
    db = layout("ems-db")
    script = lab_ssh("ems-db", f"cat {db['ems_layout_backup_script']}").stdout
    assert not [p for p in passwords if p in script]
    mode = lab_ssh("ems-db", f"stat -c '%a %U' {password_file('ems-db')}").stdout.split()
    assert mode == ["600", "root"]
    # Each host holds its own repository's password, never the site's secret or another's.
    held = lab_ssh("ems-db", f"cat {db['ems_layout_backup_etc_dir']}/password-*").stdout
    assert held == repository_password("ems-db")


def test_failed_dump_fails_the_backup_and_takes_no_snapshot(backed_up):
    before = len(snapshots("ems-db"))
    lab_ssh("ems-db", "systemctl stop postgresql.service")
    try:
        proc = lab_ssh("ems-db", "systemctl start ems-backup@run.service", check=False)
        assert proc.returncode != 0
        assert unit_failed("ems-db")
        journal_says("ems-db", f"the dump of {layout('ems-db')['ems_layout_db_name']} failed or "
                               "does not read back: no snapshot taken")
    finally:
        lab_ssh("ems-db", "systemctl start postgresql.service")
    assert len(snapshots("ems-db")) == before
    assert locks("ems-db") == []


def test_wrong_password_fails_clearly_and_leaves_no_lock(backed_up):
    password = password_file("ems-gw1")
    lab_ssh("ems-gw1", f"cp -p {password} {password}.good && "
                       f"echo not-the-password > {password}")
    try:
        proc = lab_ssh("ems-gw1", "systemctl start ems-backup@run.service", check=False)
        assert proc.returncode != 0
        journal_says("ems-gw1", "wrong password")
    finally:
        lab_ssh("ems-gw1", f"mv {password}.good {password}")
    assert locks("ems-gw1") == []
    lab_ssh("ems-gw1", "systemctl start ems-backup@run.service")


@pytest.mark.parametrize("timer", ["ems-backup.timer", "ems-backup-forget.timer",
                                   "ems-backup-check.timer"])
def test_each_schedule_has_its_own_active_timer(backed_up, timer):
    state = lab_ssh("ems-db", f"systemctl is-enabled {timer}; systemctl is-active {timer}").stdout
    assert state.split() == ["enabled", "active"]


def test_forget_keeps_one_snapshot_per_day_and_kind_and_check_passes(backed_up):
    lab_ssh("ems-db", "systemctl start ems-backup@run.service")
    kinds = [tags(s)["kind"] for s in snapshots("ems-db")]
    assert kinds.count("db") >= 2

    lab_ssh("ems-db", "systemctl start ems-backup@forget.service")
    # Every snapshot was taken today: keep-daily leaves the newest of each kind.
    assert sorted([tags(s)["kind"] for s in snapshots("ems-db")]) == sorted(set(kinds))
    lab_ssh("ems-db", "systemctl start ems-backup@check.service")
    assert not unit_failed("ems-db")


def test_concurrent_runs_on_one_host_wait_for_each_other(backed_up):
    # A reinstall or an engineer lists snapshots while the timer's check runs: both succeed.
    both = lab_ssh("ems-db", f"{backup('ems-db', 'check')} >/dev/null & check=$!; sleep 0.3; "
                             f"{backup('ems-db', 'snapshots')} >/dev/null; listed=$?; "
                             "wait $check; echo $listed $?", check=False)
    assert both.stdout.split() == ["0", "0"], both.stderr


def test_unreachable_backup_server_is_not_taken_for_a_missing_repository(backed_up):
    route = f"blackhole {address('backup')}/32"
    lab_ssh("ems-gw1", f"ip route add {route}")
    try:
        proc = lab_ssh("ems-gw1", backup("ems-gw1", "init --first"), check=False)
    finally:
        lab_ssh("ems-gw1", f"ip route del {route}")
    assert proc.returncode != 0
    assert f"cannot reach the backup server {address('backup')} over SFTP" in proc.stderr
    assert "initialised" not in proc.stdout


COUNT = ("import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); "
         "print(db.execute('SELECT count(*) FROM readings WHERE confirmed_at IS NULL')"
         ".fetchone()[0], "
         "db.execute('PRAGMA integrity_check').fetchone()[0])")


def spool() -> str:
    return layout("ems-gw1")["ems_layout_spool_file"]


def spool_rows(path: str | None = None) -> tuple[int, str]:
    """(readings waiting to be sent, integrity verdict) of a gateway spool, read as its owner."""
    path = path or spool()
    out = lab_ssh("ems-gw1", f"runuser -u $(stat -c %U {path}) -- python3 -c \"{COUNT}\" {path}")
    rows, verdict = out.stdout.split()
    return int(rows), verdict


def test_gateway_spool_is_saved_as_a_consistent_copy_with_its_backlog(backed_up):
    # The platform is down, so the spool holds readings it has not forwarded: the snapshot must
    # keep them, from a copy SQLite made consistent, not from the live database and its WAL.
    platform = layout("ems-app")["ems_layout_platform_unit"]
    lab_ssh("ems-app", f"systemctl stop {platform}")
    try:
        waiting = wait_until(lambda: (n := spool_rows()[0]) >= 8 and n, 120,
                             "readings waiting in ems-gw1's spool")
        lab_ssh("ems-gw1", "systemctl start ems-backup@run.service")
    finally:
        lab_ssh("ems-app", f"systemctl start {platform}")
    newest = max((s for s in snapshots("ems-gw1") if tags(s)["kind"] == "files"),
                 key=lambda s: s["time"])
    lab_ssh("ems-gw1", f"rm -rf /root/restored && "
                       f"{backup('ems-gw1', 'restore')} {newest['id']} /root/restored")
    copy = f"{layout('ems-gw1')['ems_layout_backup_dump_dir']}/sqlite{spool()}"
    try:
        name = spool().rsplit("/", 1)[-1]
        saved = lab_ssh("ems-gw1", f"cd /root/restored && find . -name '{name}*'").stdout.split()
        assert saved == [f".{copy}"]
        rows, verdict = spool_rows(f"/root/restored{copy}")
        assert verdict == "ok" and rows >= waiting
    finally:
        lab_ssh("ems-gw1", "rm -rf /root/restored")


def test_a_crashed_run_leaves_a_stale_lock_the_next_run_clears(backed_up):
    # restic killed mid-backup (an OOM kill, a power cut) keeps its lock in the repository.
    # The repository settings come from the installed script itself.
    lab_ssh("ems-gw1", restic_settings("ems-gw1")
            + "setsid bash -c 'sleep 600 | restic -o sftp.command=\"$SFTP_CMD\" backup "
              "--stdin --host ems-gw1' </dev/null >/dev/null 2>&1 &")
    try:
        locks_dir = f"{backup_repository('ems-gw1')}/locks"
        wait_until(lambda: lab_ssh("backup", f"ls {locks_dir}").stdout.split(), 60,
                   "the lock of the restic about to crash")
    finally:
        lab_ssh("ems-gw1", "pkill -KILL -x restic; pkill -f '^sleep 600$'", check=False)
    assert len(locks("ems-gw1")) == 1
    lab_ssh("ems-gw1", "systemctl start ems-backup@run.service")
    assert locks("ems-gw1") == []
