"""Fixtures of the API tests: stores on both engines, an app over a tiny real Ansible project."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import REPO_ROOT, Settings
from api.store import TERMINAL, Store
from api.tokens import Role, issue_token

if str(REPO_ROOT) not in sys.path:  # tests/support is not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.pgserver import PgServer  # noqa: E402
from tests.support.served_api import ServedClient, start_api  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

PROJECT = Path(__file__).parent / "project"


# --- stores -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server():
    with PgServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_factory(request, tmp_path):
    opened: list[Store] = []
    if request.param == "postgresql":
        server: PgServer = request.getfixturevalue("pg_server")
        name = "t" + uuid.uuid4().hex[:12]
        server.create_database(name, owner="emsops", password="test-only")  # noqa: S106
        url = f"postgresql://emsops:test-only@{server.host}:{server.port}/{name}"

        def open_store() -> Store:
            opened.append(Store(database_url=url))
            return opened[-1]
    else:

        def open_store() -> Store:
            opened.append(Store(sqlite_path=tmp_path / "store.sqlite3"))
            return opened[-1]

    yield open_store
    for store in opened:
        store.close()
    if request.param == "postgresql":
        server.drop_database(name)


@pytest.fixture
def store(store_factory):
    store = store_factory()
    store.put_customer(customer_id="c1", name="Customer One", webhook_url=None)
    return store


@pytest.fixture
def reopen(store_factory):
    return store_factory


# --- a project with a vault-encrypted inventory --------------------------------------------------


@dataclass
class Project:
    root: Path
    inventory: Path
    vault_password_file: Path
    secrets: list[str]


def _vault(password: str):
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([("default", VaultSecret(password.encode()))])


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Project:
    """The test project copied aside, with secrets that exist nowhere else, vault-encrypted."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(PROJECT, root, dirs_exist_ok=True)
    password = "vault-pw-" + uuid.uuid4().hex
    token = "tok-" + uuid.uuid4().hex
    inline = "inline-" + uuid.uuid4().hex
    vault = _vault(password)
    group_vars = root / "inventory" / "group_vars" / "all"
    (group_vars / "vault.yml").write_bytes(
        vault.encrypt(yaml.safe_dump({"vault_api_token": token}))
    )
    host_vars = root / "inventory" / "host_vars"
    host_vars.mkdir()
    cipher = vault.encrypt(inline).decode()
    (host_vars / "app1.yml").write_text(
        "inline_secret: !vault |\n" + "".join(f"  {line}\n" for line in cipher.splitlines())
    )
    pass_file = root.parent / f"{root.name}-vault-pass"
    pass_file.write_text(password + "\n")
    pass_file.chmod(0o600)
    return Project(root, root / "inventory" / "hosts.yml", pass_file, [password, token, inline])


# --- the app ------------------------------------------------------------------------------------


@dataclass
class FakeVerifier:
    """Stands in for api.verify.run_verification (testinfra against the lab's hosts), the one
    substitute these tests use: the lab tests run the real one. Records every call; each host
    reports running `version` (the expected one when unset), as the real suites observe it."""

    failing: set[str] = field(default_factory=set)
    version: str | None = None
    calls: list[tuple[Path, str | None]] = field(default_factory=list)
    expected: list[dict[str, str]] = field(default_factory=list)
    called: threading.Event = field(default_factory=threading.Event)

    def __call__(self, inventory: Path, limit: str | None, expect: Mapping[str, str]) -> dict:
        self.calls.append((inventory, limit))
        self.expected.append(dict(expect))
        self.called.set()
        hosts = (limit or "").split(",")
        observed = self.version or expect.get("ems_release_version")
        return {
            "ok": not (self.failing & set(hosts)),
            "hosts": {
                h: {
                    "ok": h not in self.failing,
                    "failures": ["fake failure"] if h in self.failing else [],
                    "observed": {"version": observed} if observed else {},
                }
                for h in hosts
            },
        }


@pytest.fixture
def settings(tmp_path, project) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        project_dir=project.root,
        vault_password_file=project.vault_password_file,
        workers=2,
        job_timeout_s=120,
        webhook_secret="test-webhook-secret-0123456789",  # noqa: S106
        webhook_backoff_s=0.01,
        webhook_timeout_s=2,
        sites={"acme": project.inventory},
        inventory_root=project.inventory.parent,
    )


@pytest.fixture
def verifier() -> FakeVerifier:
    return FakeVerifier()


class Api:
    """A TestClient plus a token per role."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.ctx = client.app.state.ctx
        self.tokens = {role: issue_token(self.ctx.store, role) for role in Role}

    def auth(self, role: Role = Role.TICKET_SYSTEM) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def request(self, method: str, url: str, role: Role | None = Role.TICKET_SYSTEM, **kw):
        headers = self.auth(role) if role else {}
        return self.client.request(method, url, headers=headers, **kw)

    def contract(
        self,
        customer="acme",
        tier="machine_inspection",
        state="active",
        modules=("electricity", "water"),
        installed="3.2.0",
    ):
        assert (
            self.request(
                "PUT",
                f"/v1/customers/{customer}/contract",
                Role.ADMIN,
                json={
                    "tier": tier,
                    "state": state,
                    "licensed_modules": list(modules),
                    "version_line": "3.2",
                },
            ).status_code
            == 200
        )
        site = self.ctx.store.get_site(customer)
        assert (
            self.request(
                "PUT",
                f"/v1/customers/{customer}/site",
                Role.ADMIN,
                json={"inventory": site["inventory"], "installed_version": installed},
            ).status_code
            == 200
        )

    def guarantee(self, ticket: str, service: str, customer: str = "acme") -> None:
        assert (
            self.request(
                "POST",
                f"/v1/tickets/{ticket}/settlements",
                Role.SALES,
                json={
                    "customer_id": customer,
                    "service": service,
                    "kind": "guarantee",
                    "reference": "sales",
                },
            ).status_code
            == 201
        )

    def hold(self, limit: str = "db1", ticket: str = "T-1") -> str:
        """Start a guaranteed troubleshoot_data job (its playbook waits a minute) that holds
        the hosts of `limit`; returns its id."""
        self.guarantee(ticket, "troubleshoot_data")
        response = self.request(
            "POST",
            "/v1/jobs",
            json={
                "ticket_id": ticket,
                "customer_id": "acme",
                "service": "troubleshoot_data",
                "limit": limit,
                "parameters": {"symptom": "missing"},
            },
        )
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def wait(self, job_id: str, timeout: float = 60) -> dict:
        return wait_for(
            lambda: (job := self.ctx.store.get_job(job_id))["state"] in TERMINAL and job,
            timeout,
            what=f"job {job_id} to end",
        )


@pytest.fixture
def make_api(settings, verifier):
    clients: list[TestClient] = []

    def make(app_settings: Settings | None = None) -> Api:
        client = TestClient(create_app(app_settings or settings, verifier=verifier))
        client.__enter__()
        clients.append(client)
        return Api(client)

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


@pytest.fixture
def queue_job(settings, project):
    """Put a job in the store as a crashed API would have left it, before any app starts."""

    def queue(
        *,
        ticket: str,
        host: str,
        service: str = "inspect",
        state: str = "queued",
        inventory: Path | None = None,
        runner: str | None = None,
    ) -> str:
        store = Store.from_settings(settings)
        try:
            if store.get_customer("acme") is None:
                store.put_customer(customer_id="acme", name="acme", webhook_url=None)
            decision = {"outcome": "covered", "details": {}}
            decision_id = store.add_decision(
                ticket_id=ticket,
                customer_id="acme",
                service=service,
                request={},
                decision=decision,
                caller="t",
            )
            job, _ = store.create_job(
                ticket_id=ticket,
                customer_id="acme",
                service=service,
                limit_pattern=host,
                inventory=str(inventory or project.inventory),
                hosts=[host],
                parameters={},
                fingerprint="f",
                decision_id=decision_id,
                decision=decision,
                created_by="t",
            )
            if state != "queued":
                store.update_job(job["id"], only_if_state="queued", state=state, runner=runner)
            return job["id"]
        finally:
            store.close()

    return queue


# --- the API in its own process -----------------------------------------------------------------


@pytest.fixture
def server_env(settings):
    """The environment that makes serve_app.py the API of `settings`."""
    env = dict(os.environ)
    env.update(
        {
            "EMSOPS_DATA_DIR": str(settings.data_dir),
            "EMSOPS_PROJECT_DIR": str(settings.project_dir),
            "EMSOPS_SITES": json.dumps({k: str(v) for k, v in settings.sites.items()}),
            "EMSOPS_VAULT_PASSWORD_FILE": str(settings.vault_password_file),
            "EMSOPS_INVENTORY_ROOT": str(settings.inventory_root),
            "EMSOPS_WORKERS": "2",
        }
    )
    return env


@pytest.fixture
def start_server():
    """start_server(env, log) -> (process, base URL), once its /healthz answers."""
    return lambda env, log: start_api(Path(__file__).parent / "serve_app.py", env, log)


@pytest.fixture
def served(settings) -> ServedClient:
    """A client of the served API, its tokens issued in the store of `settings`."""
    store = Store.from_settings(settings)
    try:
        return ServedClient({role: issue_token(store, role) for role in Role})
    finally:
        store.close()
