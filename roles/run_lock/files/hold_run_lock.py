"""Hold one host's run lock for as long as the ansible-playbook that started this runs.

Reads a JSON request on stdin (host, address, port, user, key, ssh_args, sudo, path, owner,
idle_timeout_s), opens an SSH session that takes `flock` on the host and keeps it in a shell
reading the session, and answers: exit 0 when held (a watcher process, `--watch`, keeps the
session open until the ansible-playbook process is gone), exit 1 naming the holder when another
run has it. Runs on the controller, started by role run_lock.

The watcher sends a heartbeat line every idle_timeout_s / 4; the host gives the lock up when none
came for idle_timeout_s, so a half-open connection (the controller's end gone without a FIN, e.g.
after the host's address changed) cannot keep it forever. A lock whose holder was a run on this
controller that has ended (killed: its watcher has not closed the session yet) is waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shlex
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

BUSY_EXIT = 75
# How long a run waits for the lock of a run on this controller that has ended to be released.
RELEASE_WAIT_S = 60
# "<who> (pid N on HOST, since T)": the holder as written by main() below.
HOLDER = re.compile(r"\(pid (\d+) on ([^,]+), since ")


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _parent(pid: int) -> int:
    return int(_stat(pid)[1])


def alive(pid: int) -> bool:
    """Running (a zombie has ended, whoever has yet to reap it)."""
    try:
        return _stat(pid)[0] not in ("Z", "X")
    except OSError:
        return False


def _is_playbook(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"ansible-playbook") for part in argv[:2])


def playbook_pid() -> int:
    """The outermost ansible-playbook above us (its forks are ansible-playbook too)."""
    found, pid = 0, os.getppid()
    while pid > 1:
        if _is_playbook(pid):
            found = pid
        pid = _parent(pid)
    if not found:
        raise SystemExit("run_lock: not started by ansible-playbook")
    return found


def holder_has_ended(holder: str, hostname: str) -> bool:
    """The holder is a run of this controller whose ansible-playbook is no longer running."""
    match = HOLDER.search(holder)
    if not match or match[2] != hostname:
        return False
    pid = int(match[1])
    return not (alive(pid) and _is_playbook(pid))


def remote_command(path: str, owner: str, sudo: bool, idle_timeout_s: int) -> str:
    owner_file = shlex.quote(path + ".owner")
    # bash for `read -t` (dash has none); fd 9 (the lock) stays open across the exec.
    hold = f"while IFS= read -r -t {int(idle_timeout_s)} _; do :; done"
    script = (
        f"mkdir -p {shlex.quote(os.path.dirname(path))} && exec 9>>{shlex.quote(path)} && "
        f"if flock -n 9; then printf '%s\\n' {shlex.quote(owner)} > {owner_file}; echo HELD; "
        f"exec bash -c {shlex.quote(hold)}; else echo \"BUSY $(cat {owner_file} 2>/dev/null)\"; "
        f"exit {BUSY_EXIT}; fi")
    command = f"sh -c {shlex.quote(script)}"
    return f"sudo -n {command}" if sudo else command


def watch(playbook: int, ssh: int, fd: int, heartbeat_s: float) -> None:
    """Keep the session open while both the ansible-playbook and ssh run, with heartbeats."""
    session = os.fdopen(fd, "w")
    beat = time.monotonic()
    try:
        while alive(playbook) and alive(ssh):
            time.sleep(0.5)
            if time.monotonic() - beat >= heartbeat_s:
                session.write("\n")
                session.flush()
                beat = time.monotonic()
    except OSError:
        pass  # ssh is gone: the host has given the lock up already
    finally:
        with contextlib.suppress(OSError):
            session.close()  # EOF: the shell ends on the host and the lock is released


def _ssh(request: dict, owner: str) -> list[str]:
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=10", "-p",
           str(request["port"])]
    if request["key"]:
        ssh += ["-i", request["key"]]
    if request["user"]:
        ssh += ["-l", request["user"]]
    return [*ssh, *shlex.split(request["ssh_args"]), request["address"],
            remote_command(request["path"], owner, request["sudo"] in (True, "True", "true"),
                           int(request["idle_timeout_s"]))]


def main() -> int:
    request = json.load(sys.stdin)
    pid = playbook_pid()
    hostname = socket.gethostname()
    me = f"pid {pid} on {hostname}"
    who = request["owner"] or (f"{os.environ.get('SUDO_USER') or pwd.getpwuid(os.getuid()).pw_name}"
                               " by hand")
    owner = (f"{who} ({me}, since "
             f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')})")
    deadline = time.monotonic() + RELEASE_WAIT_S
    waiting = False
    while True:
        proc = subprocess.Popen(_ssh(request, owner), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        answer = proc.stdout.readline().strip()
        if answer == "HELD":
            break
        err = proc.stderr.read().strip()
        proc.wait()
        if not answer.startswith("BUSY"):
            print(f"cannot take the run lock on {request['host']}: {err or answer}",
                  file=sys.stderr)
            return 1
        holder = answer[4:].strip() or "another run (holder unknown)"
        if me in holder:  # this same run, from an earlier play
            print(json.dumps({"held": True, "owner": holder}))
            return 0
        if holder_has_ended(holder, hostname) and time.monotonic() < deadline:
            if not waiting:
                print(f"{request['host']}: waiting for the lock of {holder}, a run that has "
                      "ended, to be released", file=sys.stderr, flush=True)
                waiting = True
            time.sleep(0.5)
            continue
        print(f"{request['host']} is being worked on by {holder}: wait for that run to end "
              "(it releases the lock when it stops)", file=sys.stderr)
        return 1
    if os.fork():  # the parent answers Ansible; the child keeps the session open
        print(json.dumps({"held": True, "owner": owner}))
        return 0
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    session = proc.stdin.fileno()
    os.set_inheritable(session, True)
    # A process of its own, named for what it watches (`ps` shows which run holds a host).
    os.execv(sys.executable,  # noqa: S606 - our own interpreter and file, no shell
             [sys.executable, os.path.abspath(__file__), "--watch", str(pid), str(proc.pid),
              str(session), str(int(request["idle_timeout_s"]) / 4)])
    return 0  # not reached


if __name__ == "__main__":
    if sys.argv[1:2] == ["--watch"]:
        watch(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
