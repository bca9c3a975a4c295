"""Hold one host's run lock for as long as the ansible-playbook that started this runs.

Reads a JSON request on stdin (host, address, port, user, key, ssh_args, sudo, path, owner),
opens an SSH session that takes `flock` on the host and keeps it in a `cat` reading the
session, and answers at once: exit 0 when held (a watcher process keeps the session open until
the ansible-playbook process is gone), exit 1 naming the holder when another run has it.
Runs on the controller, started by role run_lock.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

BUSY_EXIT = 75


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


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


def remote_command(path: str, owner: str, sudo: bool) -> str:
    owner_file = shlex.quote(path + ".owner")
    script = (
        f"mkdir -p {shlex.quote(os.path.dirname(path))} && exec 9>>{shlex.quote(path)} && "
        f"if flock -n 9; then printf '%s\\n' {shlex.quote(owner)} > {owner_file}; echo HELD; "
        f"exec cat >/dev/null; else echo \"BUSY $(cat {owner_file} 2>/dev/null)\"; "
        f"exit {BUSY_EXIT}; fi")
    command = f"sh -c {shlex.quote(script)}"
    return f"sudo -n {command}" if sudo else command


def main() -> int:
    request = json.load(sys.stdin)
    pid = playbook_pid()
    me = f"pid {pid} on {socket.gethostname()}"
    who = request["owner"] or (f"{os.environ.get('SUDO_USER') or pwd.getpwuid(os.getuid()).pw_name}"
                               " by hand")
    owner = (f"{who} ({me}, since "
             f"{datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')})")
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ServerAliveInterval=10", "-p",
           str(request["port"])]
    if request["key"]:
        ssh += ["-i", request["key"]]
    if request["user"]:
        ssh += ["-l", request["user"]]
    ssh += [*shlex.split(request["ssh_args"]), request["address"],
            remote_command(request["path"], owner, request["sudo"] in (True, "True", "true"))]
    proc = subprocess.Popen(ssh, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    answer = proc.stdout.readline().strip()
    if answer != "HELD":
        err = proc.stderr.read().strip()
        proc.wait()
        if answer.startswith("BUSY"):
            holder = answer[4:].strip() or "another run (holder unknown)"
            if me in holder:  # this same run, from an earlier play
                print(json.dumps({"held": True, "owner": holder}))
                return 0
            print(f"{request['host']} is being worked on by {holder}: wait for that run to end "
                  "(it releases the lock when it stops)", file=sys.stderr)
        else:
            print(f"cannot take the run lock on {request['host']}: {err or answer}",
                  file=sys.stderr)
        return 1
    if os.fork():  # the parent answers Ansible; the child keeps the session open
        print(json.dumps({"held": True, "owner": owner}))
        return 0
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    # ssh is the parent's child, not ours (waitpid would fail): watch both through /proc.
    while os.path.exists(f"/proc/{pid}") and os.path.exists(f"/proc/{proc.pid}"):
        time.sleep(0.5)
    proc.stdin.close()  # EOF: `cat` ends on the host and the lock is released
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
