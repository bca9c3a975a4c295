"""A site's inventory as the API sees it: which hosts a limit pattern names, and which vaulted
values must never be stored (the redaction list)."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from api.errors import InvalidInventory, InvalidTarget

if TYPE_CHECKING:
    from api.settings import Settings

# Host patterns a caller may send: names, groups, globs, `,`/`:` unions, `&` intersections, `!`
# exclusions and `[n:m]` subscripts. Never `@file` (reads a file) or `~regex`, no whitespace.
LIMIT_RE = r"^[A-Za-z0-9_.*\-\[\]:,&!]{1,512}$"
_LIMIT = re.compile(LIMIT_RE)
# A term is split on `,`, or on `:` outside a `[n:m]` subscript.
_TERMS = re.compile(r",|:(?![^\[]*\])")
# Shorter vaulted strings are not redacted: replacing "yes" or "root" everywhere would make the
# stored events unreadable and such values are not secrets.
MIN_SECRET_LEN = 6
_ansible_lock = threading.Lock()  # ansible's plugin loader keeps global state
# Ansible's yaml and ini plugins read these; anything else would go to another plugin (an
# executable file is run as an inventory script, as root inside the API).
INVENTORY_SUFFIXES = frozenset({".yml", ".yaml", ".ini"})


def site_inventory(settings: Settings, path: str | Path) -> Path:
    """The real path of a site inventory the API may hand to Ansible, else InvalidInventory.

    Only regular, non-executable YAML or INI files whose real path lies inside the inventory
    root qualify: the real path, so `..` and symlinks cannot leave the root, and so that two
    spellings of one file are one file (host locks are keyed by it).
    """
    root = Path(os.path.realpath(settings.resolve(settings.inventory_root)))
    shown = str(path)[:200]
    try:
        real = Path(os.path.realpath(settings.resolve(Path(path))))
        mode = real.stat().st_mode
    except (OSError, ValueError):  # missing, unreadable, a name too long, a NUL byte
        raise InvalidInventory(
            "no inventory file at that path on the API host", detail={"inventory": shown}
        ) from None
    checks = (
        (real.is_relative_to(root), "site inventories must lie inside EMSOPS_INVENTORY_ROOT"),
        (stat.S_ISREG(mode), "a site inventory must be a regular file"),
        (not mode & 0o111, "a site inventory must not be executable (Ansible would run it)"),
        (
            real.suffix.lower() in INVENTORY_SUFFIXES,
            "a site inventory must be YAML (.yml, .yaml) or INI (.ini)",
        ),
    )
    for ok, message in checks:
        if not ok:
            detail = {"inventory": shown, "inventory_root": str(root)}
            raise InvalidInventory(message, detail=detail)
    return real


def resolve_limit(inventory: Path, pattern: str) -> dict[str, frozenset[str]]:
    """The hosts `pattern` names in `inventory`, each with its groups.

    Refuses patterns outside the allowed syntax and any term that matches no host, where
    ansible-playbook would only warn and run on the rest.
    """
    if not _LIMIT.match(pattern):
        raise InvalidTarget(
            "limit pattern has characters outside [A-Za-z0-9_.*-[]:,&!]", detail={"limit": pattern}
        )
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    with _ansible_lock:
        manager = InventoryManager(loader=DataLoader(), sources=[str(inventory)])
        if not manager.hosts:
            raise InvalidTarget("the site's inventory has no hosts", detail={"limit": pattern})
        for term in filter(None, _TERMS.split(pattern)):
            name = term.lstrip("&!")
            if not name:  # Ansible's parser fails on a bare `&` or `!`
                raise InvalidTarget(f"{term!r} names nothing", detail={"limit": pattern})
            if not _site_hosts(manager, name, pattern):
                raise InvalidTarget(
                    f"{name!r} names no host of the site's inventory", detail={"limit": pattern}
                )
        hosts = _site_hosts(manager, pattern, pattern)
        if not hosts:
            raise InvalidTarget("the limit pattern leaves no host", detail={"limit": pattern})
        return {h.name: frozenset(g.name for g in h.get_groups()) for h in hosts}


def _site_hosts(manager: Any, pattern: str, limit: str) -> list[Any]:
    """The inventory's hosts matching `pattern`. Ansible adds an implicit `localhost` (the API
    host itself, also as 127.0.0.1) to patterns naming it: it is never a host of the site."""
    from ansible.errors import AnsibleError

    try:
        return [host for host in manager.get_hosts(pattern) if not host.implicit]
    except (AnsibleError, ValueError, IndexError) as exc:
        raise InvalidTarget(
            f"not a host pattern Ansible can use: {str(exc)[:200]}", detail={"limit": limit}
        ) from None


class _Vaulted(str):
    """Ciphertext of an inline `!vault` value."""


class _VarsLoader(yaml.SafeLoader):
    pass


_VarsLoader.add_constructor("!vault", lambda loader, node: _Vaulted(loader.construct_scalar(node)))
_VarsLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif isinstance(value, str):
        yield value  # keeps the _Vaulted marker
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _vars_files(inventory: Path, extra_dirs: Iterable[Path]) -> Iterable[Path]:
    base = inventory if inventory.is_dir() else inventory.parent
    if inventory.is_file():
        yield inventory
    for root in [base, *extra_dirs]:
        for sub in ("group_vars", "host_vars"):
            folder = root / sub
            if folder.is_dir():
                yield from (p for p in sorted(folder.rglob("*")) if p.is_file())
    if inventory.is_dir():
        yield from (p for p in sorted(inventory.iterdir()) if p.is_file())


def vault_secrets(inventory: Path, password: str, *, extra_dirs: Iterable[Path] = ()) -> set[str]:
    """Every value the inventory keeps in ansible-vault (whole files or inline `!vault`)."""
    from ansible.parsing.vault import VaultLib, VaultSecret

    vault = VaultLib([("default", VaultSecret(password.encode()))])
    found: set[str] = set()
    for path in _vars_files(inventory, extra_dirs):
        raw = path.read_bytes()
        encrypted_file = raw.lstrip().startswith(b"$ANSIBLE_VAULT")
        if encrypted_file:
            raw = vault.decrypt(raw)
        try:
            data = yaml.load(raw.decode(), Loader=_VarsLoader)  # noqa: S506 - SafeLoader subclass
        except (yaml.YAMLError, UnicodeDecodeError):
            continue  # not a vars file (e.g. an inventory script); nothing vaulted to find
        for leaf in _leaves(data):
            if isinstance(leaf, _Vaulted):
                found.add(vault.decrypt(leaf.encode()).decode())
            elif encrypted_file:
                found.add(leaf)
    return found


class Redactor:
    """Replaces known secrets in strings and nested event data."""

    MASK = "********"

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET_LEN:
                continue
            variants.add(secret)
            variants.add(json.dumps(secret)[1:-1])  # as it appears inside JSON or repr output
            variants.update(line for line in secret.splitlines() if len(line) >= MIN_SECRET_LEN)
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(variants, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, self.MASK)
        return value

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value
