"""Issue 8 E on real hosts: a compromised EMS host, through its own backup account and key,
can neither reach another host's backups nor destroy its own for good.

One module, one order (each step needs the one before): ems-db is backed up and the backup
server records a protected generation; (a) the host deletes every file of its repository: its
backup fails with the alarm and never creates a repository, the protected copy refuses that
state however often it runs, and the restore entry points put the generation back with the
very dump that was backed up; (b) the host overwrites a pack in place and truncates another:
the protected copy refuses again, N+1 times, and reinstall.yml of the wiped ems-db restores from
the protected generation by itself, says so, and brings back every reading. One reinstall in
all (~100 s); case (a) goes through the same restore path (entry points snapshot and restore,
with the fallback) without a second wipe, and proves it byte for byte."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from labkit import (
    REPO,
    backup_repository,
    db_counts,
    inventory_path,
    lab_ssh,
    layout,
    run_playbook,
    wait_until,
)

from lab import manager

pytestmark = pytest.mark.lab

HOST, OTHER = "ems-db", "ems-app"


def server() -> dict:
    return layout("backup")


def account(host: str) -> str:
    return server()["ems_layout_backup_accounts"][host]


def sftp(commands: str, user: str | None = None) -> tuple[int, str]:
    """An SFTP session from ems-db with ems-db's own backup key, as a compromised ems-db would
    open one; returns its status and what it said."""
    db = layout(HOST)
    etc = db["ems_layout_backup_etc_dir"]
    target = f"{user or account(HOST)}@{db['ems_backup_server_address']}"
    proc = lab_ssh(HOST, f"printf %s {shlex.quote(commands)} | sftp -b - -i {etc}/id_ed25519 "
                         f"-o UserKnownHostsFile={etc}/known_hosts -o BatchMode=yes {target}",
                   check=False)
    return proc.returncode, proc.stdout + proc.stderr


def generations() -> list[str]:
    script = server()["ems_layout_backup_generations_script"]
    return lab_ssh("backup", f"{script} list {account(HOST)}").stdout.split()


def protect() -> None:
    """One run of the backup server's protected copy (its unit, as the timer starts it)."""
    unit = server()["ems_layout_backup_generations_unit"]
    lab_ssh("backup", f"systemctl start {unit}.service", check=False)


def alarm_journal() -> str:
    unit = server()["ems_layout_backup_generations_unit"]
    return lab_ssh("backup", f"journalctl -u {unit}.service -n 20 -o cat").stdout


def keep() -> int:
    return int(server()["ems_backup_server_keep_generations"])


def newest_db_snapshot() -> dict:
    script = layout(HOST)["ems_layout_backup_script"]
    listing = json.loads(lab_ssh(HOST, f"{script} snapshots").stdout)
    return [s for s in listing if "kind=db" in s["tags"]][-1]


def playbook_stats(playbook: Path, tmp_path: Path, *args: str) -> dict:
    """Run a playbook through ansible-runner, as the API does, and return its set_stats data
    (judged from the runner's events, not from printed text)."""
    import ansible_runner

    private = tmp_path / f"runner-{playbook.stem}"
    private.mkdir(mode=0o700)
    run = ansible_runner.run(private_data_dir=str(private), project_dir=str(REPO),
                             playbook=str(playbook), inventory=str(inventory_path()),
                             cmdline=" ".join(args), quiet=True)
    events = list(run.events)
    assert run.rc == 0, [e.get("stdout", "") for e in events][-40:]
    stats = next(e for e in events if e["event"] == "playbook_on_stats")
    return stats["event_data"].get("artifact_data") or {}


@pytest.fixture(scope="module")
def protected(lab_site):
    """ems-db backed up, a protected generation recorded from it, and the dump's sha256."""
    run_playbook("backup.yml", "-l", HOST)
    protect()
    good = generations()
    assert good, alarm_journal()
    dump_dir, name = layout(HOST)["ems_layout_backup_dump_dir"], layout(HOST)["ems_layout_db_name"]
    digest = lab_ssh(HOST, f"sha256sum {dump_dir}/{name}.dump").stdout.split()[0]
    return {"generation": good[-1], "snapshot": newest_db_snapshot()["id"], "dump": digest,
            "dump_path": f"{dump_dir}/{name}.dump"}


def test_the_account_is_chrooted_and_cannot_change_its_keys(protected):
    status, said = sftp("ls /\n")
    assert status == 0, said
    assert [line for line in said.split() if line.startswith("/") and line != "/"] == \
        [server()["ems_layout_backup_repo_dir"]]
    keys = f"{server()['ems_layout_backup_keys_dir']}/{account(HOST)}"
    for path in (keys, "/.ssh/authorized_keys", "/authorized_keys"):
        status, said = sftp(f"put /etc/hostname {path}\n")
        assert status != 0, f"wrote {path}: {said}"
    before = lab_ssh("backup", f"sha256sum {keys}").stdout
    assert lab_ssh("backup", f"stat -c '%U %a' {keys}").stdout.split() == ["root", "644"]
    assert lab_ssh("backup", f"sha256sum {keys}").stdout == before


def test_a_host_cannot_reach_another_hosts_repository(protected):
    other = f"{server()['ems_layout_backup_chroot_dir']}/{account(OTHER)}"
    other_repo = f"{other}{server()['ems_layout_backup_repo_dir']}"
    for path in (other, other_repo, f"../{account(OTHER)}"):
        status, said = sftp(f"ls {path}/config\n")
        assert status != 0, said
    status, said = sftp("ls /\n", user=account(OTHER))  # its key opens no other account
    assert status != 0, said
    held = lab_ssh(HOST, f"ls {layout(HOST)['ems_layout_backup_etc_dir']}").stdout.split()
    assert [f for f in held if f.startswith("password")] == [f"password-{HOST}"]


def test_a_deleted_repository_is_an_alarm_and_comes_back_from_the_protected_copy(protected,
                                                                                tmp_path):
    # (a) Every file of the repository deleted, through the account itself.
    repo = server()["ems_layout_backup_repo_dir"]
    files = lab_ssh("backup", f"cd {backup_repository(HOST)} && find . -type f").stdout.split()
    assert "./config" in files
    status, said = sftp("".join(f"rm {repo}/{f[2:]}\n" for f in files))
    assert status == 0, said
    assert lab_ssh("backup", f"find {backup_repository(HOST)} -type f").stdout == ""

    # The backup fails with the alarm and creates no repository; so does the playbook.
    backup = run_playbook("backup.yml", "-l", HOST, check=False)
    assert backup.returncode != 0
    assert f"ALARM: the repository of {HOST} is gone" in backup.stdout, backup.stdout[-3000:]
    assert lab_ssh("backup", f"find {backup_repository(HOST)} -type f").stdout == ""

    # The protected copy refuses that state however often it runs: the good one is kept.
    for _ in range(keep() + 1):
        protect()
    assert generations()[-1] == protected["generation"]
    assert "ALARM: the repository of" in alarm_journal()

    # The one restore path, with the fallback, as reinstall uses it; byte for byte the dump.
    restore_dir = layout(HOST)["ems_backup_restore_dir"]
    play = tmp_path / "restore-a.yml"
    play.write_text(f"""
- hosts: {HOST}
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: ems_backup
        tasks_from: snapshot
      vars:
        ems_backup_snapshot_kind: db
        ems_backup_snapshot_verify: data
        ems_backup_snapshot_fallback: true
    - ansible.builtin.include_role:
        name: ems_backup
        tasks_from: restore
      vars:
        ems_backup_restore_paths: ["{protected['dump_path']}"]
    - ansible.builtin.command: sha256sum {{{{ ems_backup_restored_dir }}}}{protected['dump_path']}
      register: digest
    - ansible.builtin.file:
        path: "{restore_dir}"
        state: absent
    - ansible.builtin.set_stats:
        data:
          picked: "{{{{ ems_backup_snapshot_picked.id }}}}"
          protected: "{{{{ ems_backup_snapshot_protected }}}}"
          digest: "{{{{ digest.stdout.split()[0] }}}}"
""")
    stats = playbook_stats(play, tmp_path)
    assert stats["protected"]["generation"] == protected["generation"]
    assert "is gone" in stats["protected"]["reason"]
    assert stats["picked"] == protected["snapshot"]
    assert stats["digest"] == protected["dump"]
    # The host backs up again into the repository that came back.
    run_playbook("backup.yml", "-l", HOST)


def test_damaged_packs_are_refused_and_reinstall_restores_from_the_protected_copy(protected,
                                                                                 tmp_path):
    # (b) One pack overwritten in place (same size, same inode), another truncated.
    repo_dir = server()["ems_layout_backup_repo_dir"]
    repo = backup_repository(HOST)
    packs = lab_ssh("backup", f"cd {repo} && find data -type f -printf '%s %p\\n' "
                              "| sort -n").stdout.split("\n")
    packs = [p.split()[1] for p in packs if p.strip()]
    assert len(packs) >= 2
    biggest, smallest = packs[-1], packs[0]
    inode = lab_ssh("backup", f"stat -c %i {backup_repository(HOST)}/{biggest}").stdout
    size = int(lab_ssh("backup", f"stat -c %s {backup_repository(HOST)}/{biggest}").stdout)
    lab_ssh(HOST, f"head -c {size} /dev/urandom > /root/garbage && head -c 100 /root/garbage "
                  "> /root/short")
    status, said = sftp(f"chmod 600 {repo_dir}/{biggest}\nput /root/garbage {repo_dir}/{biggest}\n"
                        f"chmod 600 {repo_dir}/{smallest}\nput /root/short {repo_dir}/{smallest}\n")
    lab_ssh(HOST, "rm -f /root/garbage /root/short")
    assert status == 0, said
    assert lab_ssh("backup", f"stat -c %i {backup_repository(HOST)}/{biggest}").stdout == inode

    # The protected copy refuses the damaged repository N+1 times: the good generation stays.
    before = generations()
    for _ in range(keep() + 1):
        protect()
    assert generations() == before
    assert "does not match its content" in alarm_journal()

    # The disk dies too: reinstall restores from the newest protected generation by itself.
    at_wipe = db_counts()
    manager.wipe(HOST, log=lambda _m: None)
    result = playbook_stats(REPO / "playbooks" / "reinstall.yml", tmp_path, "-l", HOST)
    result = result["reinstall"][HOST]
    assert result["status"] == "restored", result
    assert result["protected_generation"]["generation"] == before[-1], result
    assert "protected generation" in result["message"], result
    assert result["verified"] is True, result
    # Every reading comes back: those of the snapshot, and the gateways send the rest again.
    wait_until(lambda: all(db_counts().get(m, 0) >= n for m, n in at_wipe.items()), 90,
               f"every meter back to its readings at the wipe ({at_wipe})")
    assert newest_db_snapshot()  # and the host backs up to the repository again
    run_playbook("backup.yml", "-l", HOST)

