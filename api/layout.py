"""A host's settings as the roles see them, computed on the controller.

Every path, unit, port, user and database name of a site is a default of role `ems_layout`
(other roles derive theirs from it) that an inventory may override. Code outside Ansible (the
host suites, the lab's helpers and tests, reports) takes the values a host is expected to have
from here: every role's defaults under the inventory's variables, templated by Ansible itself,
never from a copy of the defaults.

Secrets are not needed for the layout and are never read: vault-encrypted files count as empty
and a value that needs one cannot be templated here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
ROLES = REPO_ROOT / "roles"
LAYOUT_DEFAULTS = ROLES / "ems_layout" / "defaults" / "main.yml"
_ansible_lock = threading.Lock()  # ansible's plugin loader keeps global state


class LayoutError(Exception):
    """The inventory cannot be read, names no such host, or a value cannot be templated."""


def _trusted_role_files(loader: Any, kind: str) -> dict[str, Any]:
    """Every role's defaults (or vars) as Ansible loads them: templates trusted, as in a play."""
    merged: dict[str, Any] = {}
    for path in sorted(ROLES.glob(f"*/{kind}/main.yml")):
        merged.update(loader.load_from_file(str(path), trusted_as_template=True) or {})
    return merged


def layout_defaults() -> dict[str, Any]:
    """The site layout's own defaults (role ems_layout), untemplated."""
    return yaml.safe_load(LAYOUT_DEFAULTS.read_text()) or {}


class SiteVars(Mapping[str, Any]):
    """One host's variables: inventory over role defaults, each templated when it is read."""

    def __init__(self, raw: dict[str, Any], templar: Any, host: str) -> None:
        self._raw, self._templar, self.host = raw, templar, host
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            if name not in self._raw:
                raise KeyError(name)
            from ansible.errors import AnsibleError

            try:
                with _ansible_lock:
                    value = self._templar.template(self._raw[name])
            except AnsibleError as exc:
                raise LayoutError(f"{self.host}: cannot template {name}: {exc}") from exc
            self._cache[name] = _plain(value)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def _plain(value: Any) -> Any:
    """Ansible's tagged strings and containers as plain Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    return value


def _stamp(inventory: Path) -> int:
    """Changes when the inventory or its group_vars/host_vars change (the lab rewrites them)."""
    folder = inventory if inventory.is_dir() else inventory.parent
    files = [inventory, *folder.glob("*_vars/**/*")]
    return max((p.stat().st_mtime_ns for p in files if p.exists()), default=0)


@lru_cache(maxsize=8)
def _inventory(inventory: str, _stamp: int) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any]]:
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import is_encrypted
    from ansible.vars.hostvars import HostVars
    from ansible.vars.manager import VariableManager

    class _NoSecretsLoader(DataLoader):
        def _decrypt_if_vault_data(self, b_data: bytes) -> tuple[bytes, bool]:
            return (b"" if is_encrypted(b_data) else b_data), True

    loader = _NoSecretsLoader()
    try:
        manager = InventoryManager(loader=loader, sources=[inventory])
    except AnsibleError as exc:
        raise LayoutError(f"cannot read inventory {inventory}: {exc}") from exc
    if not manager.hosts:
        raise LayoutError(f"inventory {inventory} has no hosts")
    variables = VariableManager(loader=loader, inventory=manager)
    HostVars(inventory=manager, variable_manager=variables, loader=loader)  # gives `hostvars`
    return (loader, manager, variables, _trusted_role_files(loader, "defaults"),
            _trusted_role_files(loader, "vars"))


def site_vars(inventory: Path, host: str) -> SiteVars:
    """The variables `host` of `inventory` has in a play of this project's roles."""
    from ansible.template import Templar

    with _ansible_lock:
        path = Path(inventory).resolve()
        loader, manager, variables, defaults, role_vars = _inventory(str(path), _stamp(path))
        entry = manager.get_host(host)
        if entry is None:
            raise LayoutError(f"no host {host!r} in inventory {inventory}")
        # Role vars (derived values such as ems_layout_backup_accounts) win over the inventory.
        raw = {**defaults, **variables.get_vars(host=entry, include_hostvars=True), **role_vars}
        return SiteVars(raw, Templar(loader=loader, variables=raw), host)
