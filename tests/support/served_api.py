"""The API in its own process (a script running uvicorn), for tests that kill and restart it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from api.tokens import Role
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


class ServedClient:
    """Calls to a served API with one token per role; `base` changes with each restart."""

    def __init__(self, tokens: dict[Role, str]) -> None:
        self.tokens, self.base = tokens, ""

    def call(self, method: str, path: str, *, role: Role = Role.TICKET_SYSTEM, **kw: Any) -> Any:
        """The JSON answer, which must be a success."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        response = httpx.request(method, self.base + path, headers=headers, **kw)
        assert response.status_code < 300, response.text
        return response.json()

    def submit(self, ticket: str, service: str, limit: str, **fields: Any) -> str:
        """Queue a job for customer acme; its id."""
        body = {"ticket_id": ticket, "customer_id": "acme", "service": service, "limit": limit}
        return self.call("POST", "/v1/jobs", json=body | fields)["id"]

    def submit_slow(self, ticket: str, limit: str) -> str:
        """A job that runs until stopped (the test project's troubleshoot_data), guaranteed."""
        self.call(
            "POST",
            f"/v1/tickets/{ticket}/settlements",
            role=Role.SALES,
            json={"customer_id": "acme", "service": "troubleshoot_data", "kind": "guarantee",
                  "reference": "sales"},
        )
        return self.submit(ticket, "troubleshoot_data", limit, parameters={"symptom": "missing"})

    def cover_acme(self) -> None:
        """An active package contract for customer acme: its inspections run."""
        self.call(
            "PUT",
            "/v1/customers/acme/contract",
            role=Role.ADMIN,
            json={
                "tier": "machine_package",
                "state": "active",
                "licensed_modules": [],
                "version_line": "3.2",
            },
        )
