"""Role run_lock's holder (roles/run_lock/files/hold_run_lock.py), its protocol run for real.

The lab proves it over SSH to real hosts (tests/lab/test_api_jobs.py). Here `ssh` is replaced by
a program that runs the remote command on this machine (the one substitution: there is no sshd
on the controller), so the real flock, shell and watcher process are exercised, including the
cases that are timing-dependent on a real site: a killed run whose watcher has not released yet,
and a half-open connection whose heartbeats stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.waiting import wait_for

HOLDER = Path(__file__).resolve().parents[2] / "roles/run_lock/files/hold_run_lock.py"


@pytest.fixture
def tools(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ssh = bin_dir / "ssh"
    ssh.write_text("#!/bin/sh\n# every argument but the last is an ssh option\n"
                   'for last; do :; done\nexec sh -c "$last"\n')
    # Named ansible-playbook: the holder finds the run it belongs to by that name.
    playbook = bin_dir / "ansible-playbook"
    playbook.write_text(f"""#!{sys.executable}
import os, subprocess, sys, time
request, gate = sys.argv[1], sys.argv[2]
# Its stderr passes through as it comes (a "waiting" line comes before the answer).
done = subprocess.run([sys.executable, {str(HOLDER)!r}], input=request, text=True,
                      stdout=subprocess.PIPE)
print(done.returncode, done.stdout.strip(), flush=True)
while done.returncode == 0 and os.path.exists(gate):
    time.sleep(0.05)
""")
    for path in (ssh, playbook):
        path.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    return playbook, env, tmp_path


def _run(tools, owner: str, idle_timeout_s: int = 40):
    playbook, env, tmp = tools
    gate = tmp / f"gate-{owner}"
    gate.touch()
    request = {"host": "h1", "address": "h1", "port": 22, "user": "", "key": "", "ssh_args": "",
               "sudo": False, "path": str(tmp / "run" / "run.lock"), "owner": owner,
               "idle_timeout_s": idle_timeout_s}
    proc = subprocess.Popen([str(playbook), json.dumps(request), str(gate)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return proc, gate


def _answer(proc) -> tuple[int, dict | None]:
    rc, _, rest = proc.stdout.readline().strip().partition(" ")
    return int(rc), (json.loads(rest) if rest else None)


def _watcher(playbook_pid: int) -> int:
    def find():
        for entry in Path("/proc").iterdir():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--watch" in argv and argv[argv.index(b"--watch") + 1] == b"%d" % playbook_pid:
                return int(entry.name)
        return None
    return wait_for(find, what="the run's watcher")


def _locked(tools) -> bool:
    lock = tools[2] / "run" / "run.lock"
    return subprocess.run(["flock", "-n", str(lock), "true"]).returncode != 0


def _end(*runs) -> None:
    for proc, gate in runs:
        gate.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.wait(30)


def test_a_live_holder_refuses_a_second_run_at_once_naming_it(tools):
    first = _run(tools, "job A (ticket T-1)")
    try:
        assert _answer(first[0]) == (0, {"held": True, "owner": _answer_owner(tools)})
        second = _run(tools, "job B (ticket T-2)")
        rc, _ = _answer(second[0])
        assert rc == 1
        assert "h1 is being worked on by job A (ticket T-1) (pid" in second[0].stderr.read()
    finally:
        _end(first)
    wait_for(lambda: not _locked(tools), what="the lock to be released when the run ends")


def _answer_owner(tools) -> str:
    return (tools[2] / "run" / "run.lock.owner").read_text().strip()


def test_a_killed_run_whose_watcher_is_late_is_waited_for_not_refused(tools):
    first, gate = _run(tools, "job A (ticket T-1)")
    assert _answer(first)[0] == 0
    watcher = _watcher(first.pid)
    os.kill(watcher, signal.SIGSTOP)  # late: the run dies before its watcher notices
    try:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        second = _run(tools, "job B (ticket T-2)")
        # It waits (on today's holder it would fail at once: "being worked on by job A").
        assert "waiting for the lock of job A (ticket T-1)" in second[0].stderr.readline()
    finally:
        os.kill(watcher, signal.SIGCONT)
    try:
        rc, answer = _answer(second[0])
        assert rc == 0 and answer["owner"].startswith("job B (ticket T-2)")
    finally:
        _end(second, (first, gate))


def test_a_half_open_session_gives_the_lock_up_when_heartbeats_stop(tools):
    first = _run(tools, "job A (ticket T-1)", idle_timeout_s=2)
    assert _answer(first[0])[0] == 0
    watcher = _watcher(first[0].pid)
    try:
        assert _locked(tools)
        os.kill(watcher, signal.SIGSTOP)  # the session stays open, nothing comes through it
        wait_for(lambda: not _locked(tools), timeout=20, what="the host to give the lock up")
    finally:
        os.kill(watcher, signal.SIGCONT)
        _end(first)
