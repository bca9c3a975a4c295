"""Writes the lab site's inventory: hosts and groups, and its vault of generated secrets."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import yaml

from lab import config
from lab.hosts import client_key, known_hosts
from lab.mirror import proxy_url

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
    for spec in config.HOSTS:
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


def write_inventory() -> Path:
    """Write hosts.yml and (once) the encrypted vault; return the hosts.yml path."""
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    inv = config.inventory_dir()
    hosts_yml = inv / "hosts.yml"
    text = ("# Written by `emsops lab up`; do not edit (it is rewritten on every `up`).\n"
            + yaml.safe_dump(render_hosts(), sort_keys=False))
    hosts_yml.write_text(text)
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
