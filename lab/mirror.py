"""The site package mirror: apt-cacher-ng on the bridge, the only way out for lab hosts."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from lab import config
from lab.errors import LabError
from lab.system import run

BACKENDS = Path("/etc/apt-cacher-ng/backends_debian")


def _pidfile() -> Path:
    return config.state_dir() / "mirror" / "apt-cacher-ng.pid"


def _pid() -> int | None:
    try:
        pid = int(_pidfile().read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return pid if b"apt-cacher-ng" in f.read() else None
    except FileNotFoundError:
        return None


def running() -> bool:
    return _pid() is not None


def ensure_mirror() -> None:
    if running():
        return
    if not BACKENDS.exists() or "deb.debian.org" not in BACKENDS.read_text():
        BACKENDS.write_text(f"{config.DEBIAN_URL}/\n")
    _pidfile().parent.mkdir(parents=True, exist_ok=True)
    logdir = config.state_dir() / "mirror" / "log"
    cachedir = config.state_dir() / "mirror" / "cache"
    logdir.mkdir(parents=True, exist_ok=True)
    cachedir.mkdir(parents=True, exist_ok=True)
    run(["apt-cacher-ng", "-c", "/etc/apt-cacher-ng", "ForeGround=0",
         f"BindAddress=127.0.0.1 {config.BRIDGE_ADDRESS}", f"Port={config.MIRROR_PORT}",
         f"PidFile={_pidfile()}", f"LogDir={logdir}", f"CacheDir={cachedir}"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((config.BRIDGE_ADDRESS, config.MIRROR_PORT), 1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise LabError(f"apt-cacher-ng did not start listening on port {config.MIRROR_PORT}; "
                   f"see {logdir}")


def stop_mirror() -> None:
    pid = _pid()
    if pid is None:
        return
    # It may exit at any moment between a look and a kill: a process already gone is stopped.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid() is not None:
            time.sleep(0.1)
        if _pid() is not None:
            os.kill(pid, signal.SIGKILL)
    _pidfile().unlink(missing_ok=True)


def proxy_url() -> str:
    return f"http://{config.BRIDGE_ADDRESS}:{config.MIRROR_PORT}"
