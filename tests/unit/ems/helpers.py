"""Helpers for the reference EMS tests: paths, config and license files, EMS subprocesses
under Debian's /usr/bin/python3 (the production runtime), HTTP and polling."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "lab" / "ems" / "src"
BUILD_SCRIPT = REPO / "lab" / "ems" / "build_releases.py"
PYTHON = "/usr/bin/python3"
DB_PASSWORD = "s3cret%with'quote"  # noqa: S105 (a test role; exercises quoting)

# pytest does not put the repository root on sys.path: the shared helper lives in tests/support,
# and the pure EMS modules (codec, energy, config) are imported from the source tree.
for _path in (str(REPO), str(SRC)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from tests.support.pgserver import PgServer, free_port  # noqa: E402


@dataclass(frozen=True)
class Database:
    host: str
    port: int
    name: str
    user: str
    password: str

    def section(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "name": self.name, "user": self.user,
                "password": self.password, "connect_timeout_s": 3}


def write_config(path: Path, sections: dict[str, dict[str, object]]) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def write_license(path: Path, **overrides: object) -> Path:
    data = {"customer_id": "C-001", "modules": ["electricity", "water"],
            "version_line": "3.2", "expires": "2099-12-31", **overrides}
    path.write_text(json.dumps(data))
    return path


class EmsProcess:
    """One EMS entry point running as a subprocess; stderr kept in a log file."""

    def __init__(self, module: str, config: Path, root: Path, log_path: Path) -> None:
        self.module = module
        self.log_path = log_path
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "LC_ALL": "C.UTF-8"}
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", f"kangpai_ems.{module}", "--config", str(config)],
                stdout=log, stderr=log, env=env, cwd=root)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait: the clean shutdown path systemd uses. The exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.module} ignored SIGTERM:\n{self.log()}") from None
        return self.proc.returncode


def run_ems(module: str, config: Path, root: Path = SRC, *args: str,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a one-shot entry point (migrate, aggregate, replay) to completion."""
    return subprocess.run(
        [PYTHON, "-m", f"kangpai_ems.{module}", "--config", str(config), *args],
        capture_output=True, text=True, timeout=timeout, cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "LC_ALL": "C.UTF-8"})


def http(method: str, url: str, body: object = None, timeout: float = 10) -> tuple[int, object]:
    """(status, decoded JSON or text) without raising on HTTP error statuses."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (tests build http:// URLs only)
        url, data=data, method=method, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            status, payload, ctype = response.status, response.read(), response.headers
    except urllib.error.HTTPError as exc:
        status, payload, ctype = exc.code, exc.read(), exc.headers
    if ctype.get_content_type() == "application/json":
        return status, json.loads(payload)
    return status, payload.decode()


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.1) -> object:
    """Poll until predicate() is truthy (exceptions count as not yet); its value."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # e.g. connection refused while a server starts
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def wait_http(url: str, process: EmsProcess, timeout: float = 15) -> None:
    def up() -> bool:
        if process.proc.poll() is not None:
            raise AssertionError(f"{process.module} exited {process.proc.returncode}:\n"
                                 f"{process.log()}")
        try:
            http("GET", url, timeout=2)
        except OSError:
            return False
        return True

    deadline = time.monotonic() + timeout
    while not up():
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not up after {timeout}s:\n{process.log()}")
        time.sleep(0.1)


__all__ = ["PgServer", "free_port"]
