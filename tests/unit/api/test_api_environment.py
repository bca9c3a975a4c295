"""A run's environment is an allow-list: canaries in the server's environment reach no process
the API starts (issue 8 D 3), read from /proc while those processes run."""

from __future__ import annotations

import json
import os
import sys
import uuid
from pathlib import Path

from tests.support.api_runs import post_job, processes_naming
from tests.support.waiting import wait_for

HELPER = """#!{python}
# A vault-password helper that records its own environment and that of every ancestor below
# the API process, then prints the password.
import json, os, pathlib
seen, pid = [], os.getpid()
while pid not in ({api_pid}, 0, 1):
    proc = pathlib.Path("/proc", str(pid))
    seen.append({{"cmdline": (proc / "cmdline").read_bytes().decode("latin-1"),
                  "environ": (proc / "environ").read_bytes().decode("latin-1")}})
    pid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
with open({log!r}, "a") as out:
    out.write(json.dumps(seen) + "\\n")
print(pathlib.Path({password!r}).read_text().strip())
"""


def environs_with(marker: bytes) -> dict[int, tuple[bytes, bytes]]:
    """cmdline and environment of every process whose environment holds `marker`."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes()
            if entry.name.isdigit() and marker in environ:
                found[int(entry.name)] = ((entry / "cmdline").read_bytes(), environ)
        except OSError:
            continue
    return found


def test_no_server_secret_reaches_runs_the_verifier_or_the_vault_helper(
    settings, project, tmp_path, monkeypatch
):
    """The server's environment holds canaries; every process the API starts is read while it
    runs: the playbook's task processes, the verifier's pytest (and its ansible-inventory), the
    vault-password helper wherever it runs, and artifacts/<job>/command."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.verify import run_verification

    canary = "canary-" + uuid.uuid4().hex
    for name in ("EMSOPS_WEBHOOK_SECRET", "EMSOPS_DATABASE_URL", "DATABASE_URL", "PGPASSWORD"):
        monkeypatch.setenv(name, f"postgresql://emsops:{canary}@db.example/ems")
    log = tmp_path / "helper.log"
    helper = tmp_path / "vault-helper"
    helper.write_text(
        HELPER.format(
            python=sys.executable,
            api_pid=os.getpid(),
            log=str(log),
            password=str(project.vault_password_file),
        )
    )
    helper.chmod(0o700)
    # Where ansible-playbook, testinfra's ansible-inventory and the API itself find the vault.
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(helper))
    app = create_app(
        settings.model_copy(update={"vault_password_file": None}), verifier=run_verification
    )
    with TestClient(app) as client:
        from conftest import Api

        api = Api(client)
        api.contract()
        api.guarantee("T-1", "troubleshoot_data")
        slow = post_job(api, "troubleshoot_data", limit="db1", parameters={"symptom": "missing"})
        artifacts = api.ctx.settings.runs_dir / slow / "artifacts" / slow
        marker = f"AWX_ISOLATED_DATA_DIR={artifacts}".encode()
        running = wait_for(
            lambda: (
                (found := environs_with(marker))
                and any(cmd == b"sleep\x0060\x00" for cmd, _ in found.values())
                and found
            ),
            what="the playbook's task process",
        )
        command = (artifacts / "command").read_text()
        api.request("POST", f"/v1/jobs/{slow}/cancel")
        api.wait(slow)

        api.guarantee("T-2", "restore")  # a service the host suites verify
        verified = api.wait(post_job(api, "restore", ticket="T-2"), timeout=120)

    commands = b"\n".join(cmd for cmd, _ in running.values())
    assert b"ansible-playbook" in commands and len(running) >= 3
    for _cmd, environ in running.values():
        assert canary.encode() not in environ
    assert '"env"' in command and canary not in command

    assert verified["verification"] is not None  # the real verifier ran (and judged this host)
    chains = [json.loads(line) for line in log.read_text().splitlines()]
    ran_under = [" ".join(p["cmdline"].replace("\0", " ") for p in chain) for chain in chains]
    assert any("pytest" in chain and "ansible-inventory" in chain for chain in ran_under)
    assert any("ansible-playbook" in chain for chain in ran_under)
    assert any(len(chain) == 1 for chain in chains)  # the API's own call of the helper
    verifier_env = next(
        p["environ"] for chain in chains for p in chain if "-m\0pytest" in p["cmdline"]
    )
    assert "EMSOPS_VERIFY_REPORT=" in verifier_env
    for chain in chains:
        for process in chain:
            assert canary not in process["environ"], process["cmdline"]
    assert processes_naming(canary) == []
