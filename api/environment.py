"""The environment of every process the API starts (playbooks, the verifier, the vault helper).

An allow-list, never the server's own environment: the server holds EMSOPS_WEBHOOK_SECRET, maybe
a database URL with its password, and whatever its service manager passed, and a task process
can read all of it from /proc/self/environ (and ansible-runner writes it to artifacts/*/command).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Variables a run needs from the server, none of them a secret:
# - locale and time zone, so tools behave and report as they do for an engineer;
# - HOME, USER, LOGNAME: ssh finds its config and keys, ansible its temporary folder;
# - SSH_AUTH_SOCK: the agent holding the SSH keys, when the server uses one (a socket path);
# - ANSIBLE_VAULT_PASSWORD_FILE: where ansible-playbook and testinfra find the vault password
#   (a path; the API honours it too), EMSOPS_LAB_DIR: where lab/vault-password.sh looks.
# Every other ANSIBLE_* stays out: Ansible's settings come from the project's ansible.cfg, and
# some ANSIBLE_* variables hold tokens (ANSIBLE_GALAXY_SERVER_*_TOKEN).
PASSED = frozenset(
    {
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "SSH_AUTH_SOCK",
        "ANSIBLE_VAULT_PASSWORD_FILE",
        "EMSOPS_LAB_DIR",
    }
)
PASSED_PREFIXES = ("LC_",)


def passed(name: str) -> bool:
    return name in PASSED or name.startswith(PASSED_PREFIXES)


def run_environment(
    extra: Mapping[str, str] | None = None, *, server: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allow-listed part of the server's environment, PATH led by this Python's `bin`
    (the ansible-playbook and pytest of the API's own environment), plus `extra`."""
    server = os.environ if server is None else server
    env = {name: value for name, value in server.items() if passed(name)}
    env["PATH"] = f"{Path(sys.executable).parent}:{server.get('PATH', '/usr/bin:/bin')}"
    env.update(extra or {})
    return env


def confine(prepared: Mapping[str, str], *, server: Mapping[str, str] | None = None) -> dict:
    """ansible-runner seeds a run's environment with the server's whole one and adds its own
    variables: keep what it added or changed, and of the server's only the allow-list."""
    server = os.environ if server is None else server
    return {
        name: value
        for name, value in prepared.items()
        if passed(name) or name == "PATH" or server.get(name) != value
    }
