"""The API in its own process (a script running uvicorn), for tests that kill and restart it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.net import free_port
from tests.support.waiting import wait_for


def start_api(script: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """Run `script PORT` with `env`, output appended to `log`; returns once /healthz answers."""
    port = free_port()
    with log.open("ab") as handle:
        proc = subprocess.Popen(  # noqa: S603 - our own test server
            [sys.executable, str(script), str(port)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited with {proc.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, what="the API to answer")
    return proc, base
