"""A real `emsops serve` process on the lab site, with a webhook receiver: for the lab tests
that drive the ticket system's API (nothing in it is substituted)."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from labkit import BIN, REPO, wait_until

from tests.support.net import free_port

CUSTOMER = "lab-customer"
# The lab site's license (inventories/lab/group_vars/all/main.yml) as the customer's contract.
LICENSED = ["electricity", "water", "gas"]


class Hooks(http.server.BaseHTTPRequestHandler):
    received: list[tuple[dict, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hooks.received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class Api:
    """One `emsops serve` process with its own data folder; restartable."""

    def __init__(self, data_dir: Path, inventory: Path, hook_url: str):
        self.port = free_port()
        self.inventory = inventory
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / "api.log"
        self.secret = secrets.token_hex(24)
        self.env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}",
                        EMSOPS_DATA_DIR=str(data_dir), EMSOPS_WEBHOOK_URL=hook_url,
                        EMSOPS_WEBHOOK_SECRET=self.secret, EMSOPS_WEBHOOK_BACKOFF_S="0.2",
                        EMSOPS_SITES=json.dumps({CUSTOMER: str(inventory)}))
        self.proc: subprocess.Popen | None = None

    def token(self, role: str) -> str:
        return subprocess.run([str(BIN / "emsops"), "token", "create", "--role", role],
                              env=self.env, cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    def start(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [str(BIN / "emsops"), "serve", "--port", str(self.port)], env=self.env, cwd=REPO,
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_until(lambda: self.call("GET", "/healthz")[0] == 200, 30, "the API to start",
                   interval_s=0.2)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def call(self, method: str, path: str, token: str | None = None, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, method=method, data=data)  # noqa: S310
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def contract(self, state: str) -> None:
        status, body = self.call("PUT", f"/v1/customers/{CUSTOMER}/contract", self.admin,
                                 {"tier": "machine_package", "state": state,
                                  "licensed_modules": LICENSED, "version_line": "3.2"})
        assert status in (200, 201), body

    def job(self, token: str, job_id: str) -> dict:
        return self.call("GET", f"/v1/jobs/{job_id}", token)[1]

    def wait_finished(self, token: str, job_id: str, timeout_s: float = 600) -> dict:
        return wait_until(lambda: (j := self.job(token, job_id))["state"] not in
                          ("queued", "running") and j, timeout_s, f"job {job_id} to finish")


@contextmanager
def served(inventory: Path, root: Path) -> Iterator[Api]:
    """The API on `inventory` as the site of CUSTOMER, on an active package contract; admin and
    engineer tokens as `.admin`, `.engineer`."""
    Hooks.received = []
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    server = Api(root / "data", inventory, f"http://127.0.0.1:{receiver.server_port}/hook")
    server.admin, server.engineer = server.token("admin"), server.token("engineer")
    server.start()
    try:
        status, _ = server.call("PUT", f"/v1/customers/{CUSTOMER}", server.admin, {"name": "Lab"})
        assert status in (200, 201)
        server.contract("active")
        yield server
    finally:
        server.stop()
        receiver.shutdown()
