"""Small wrappers around the host commands the lab drives (ip, mount, nspawn)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from lab.errors import LabError

REQUIRED_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "apt-cacher-ng": "apt-cacher-ng",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
}


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates a bridge, mounts and containers); "
                       "run it as root, e.g. with sudo")


def require_tools() -> None:
    missing = {tool: pkg for tool, pkg in REQUIRED_TOOLS.items() if shutil.which(tool) is None}
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        raise LabError(f"missing {', '.join(sorted(missing))}: install them with "
                       f"`apt-get install {pkgs}`")


def run(cmd: Sequence[str], *, check: bool = True, capture: bool = True,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), text=True, capture_output=capture, input=input_text,
                          check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()
        raise LabError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {detail}")
    return proc


def is_mounted(path: os.PathLike[str] | str) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def pid_alive(pid: int) -> bool:
    """Is pid a live (not zombie) systemd-nspawn process?

    A live process can read back an empty cmdline for a moment (seen while nspawn sets up a
    container), so only a non-empty foreign cmdline or a zombie state counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if state in ("Z", "X"):
        return False
    return not cmdline or b"systemd-nspawn" in cmdline
