"""Writes the lab site's inventory from the lab's roster: hosts and groups (hosts.yml), each
host's own variables (host_vars/), and its vault of generated secrets."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import yaml

from lab import config, roster
from lab.config import HostSpec
from lab.hosts import client_key, known_hosts
from lab.mirror import proxy_url

# The first line of every host_vars file the lab writes: only those are rewritten or removed.
HOST_VARS_HEADER = "# Written by `emsops lab` from the lab's roster; do not edit.\n"

# Secrets the lab site needs; generated once per lab so repeated deployments stay idempotent.
SECRET_NAMES = ("vault_ems_db_password", "vault_restic_password")


def vault_password_file() -> Path:
    return config.state_dir() / "vault-password"


def _secrets() -> dict[str, str]:
    path = config.state_dir() / "secrets.json"
    values = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for name in SECRET_NAMES:
        if name not in values:
            values[name] = secrets.token_urlsafe(24)
            changed = True
    if changed:
        _write_private(path, json.dumps(values, indent=2) + "\n")
    if not vault_password_file().exists():
        _write_private(vault_password_file(), secrets.token_urlsafe(32) + "\n")
    return values


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def render_hosts() -> dict:
    children: dict[str, dict] = {group: {"hosts": {}} for group in config.GROUPS}
    for spec in roster.hosts():
        for group in spec.groups:
            children[group]["hosts"][spec.name] = {"ansible_host": spec.address}
    for group in children.values():
        if not group["hosts"]:
            del group["hosts"]
    return {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(client_key()),
            "ansible_ssh_common_args": (f"-o UserKnownHostsFile={known_hosts()} "
                                        "-o StrictHostKeyChecking=yes"),
            "ems_base_apt_proxy": proxy_url(),
        },
        "children": children,
    }}


def render_host_vars(spec: HostSpec) -> dict:
    """A host's own variables: a gateway's meters, unit ids on the lab's meters host."""
    if not spec.meters:
        return {}
    meters_host = next(s for s in roster.hosts() if "ems_meters" in s.groups)
    return {"ems_gateway_meters": [
        {"id": f"m{unit:02d}", "host": meters_host.address, "unit": unit}
        for unit in spec.meters]}


def _write_host_vars(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {}
    for spec in roster.hosts():
        values = render_host_vars(spec)
        if values:
            wanted[f"{spec.name}.yml"] = HOST_VARS_HEADER + yaml.safe_dump(values, sort_keys=False)
    for path in folder.glob("*.yml"):
        if path.name not in wanted and path.read_text().startswith(HOST_VARS_HEADER):
            path.unlink()
    for name, text in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def write_inventory() -> Path:
    """Write hosts.yml, host_vars/ and (once) the encrypted vault; return the hosts.yml path."""
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    inv = config.inventory_dir()
    hosts_yml = inv / "hosts.yml"
    text = ("# Written by `emsops lab` from the lab's roster (`lab up`, `lab add`, `lab remove`); "
            "do not edit.\n" + yaml.safe_dump(render_hosts(), sort_keys=False))
    if not hosts_yml.exists() or hosts_yml.read_text() != text:
        hosts_yml.write_text(text)
    _write_host_vars(inv / "host_vars")
    values = _secrets()
    vault = inv / "group_vars" / "all" / "vault.yml"
    if not vault.exists() or _vault_stale(vault, values):
        password = vault_password_file().read_text().strip().encode()
        lib = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])
        plain = yaml.safe_dump(values, sort_keys=True)
        _write_private(vault, lib.encrypt(plain).decode())
    return hosts_yml


def _vault_stale(vault: Path, values: dict[str, str]) -> bool:
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import AnsibleVaultError, VaultLib, VaultSecret

    password = vault_password_file().read_text().strip().encode()
    lib = VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password))])
    try:
        return yaml.safe_load(lib.decrypt(vault.read_text())) != values
    except AnsibleVaultError:
        return True
