"""The lab's roster: which hosts the lab has, as data.

`config.HOSTS` is the default roster, every lab has those hosts. `emsops lab add` records further
hosts (name, group, address, how it configures its network, a gateway's own meters) in the lab's
state dir, where `lab up` and the inventory writer find them again; `emsops lab remove` forgets
them. Addresses and meter unit ids are allocated here, never twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from lab import config
from lab.config import HostSpec
from lab.errors import LabError

# Added hosts get addresses from here up (below: the bridge, the default hosts, room for more).
FIRST_ADDED = 20
LAST_ADDED = 254
# Meters a gateway added with `lab add` polls, on the lab's meters host (unit ids after the
# highest one in use).
METERS_PER_ADDED_GATEWAY = 4
# A host name as a hostname label. nspawn names the host's veth "vb-<machine name>" and a link
# name has at most 15 characters, so the machine name (lab prefix + host name) has at most 12.
NAME_RE = re.compile(r"^[a-z]([a-z0-9-]*[a-z0-9])?$")
MAX_MACHINE_NAME = 12


def roster_file() -> Path:
    return config.state_dir() / "roster.json"


def _load_added() -> list[HostSpec]:
    path = roster_file()
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text())["added"]
        return [HostSpec(r["name"], r["address"], tuple(r["groups"]), r["net"],
                         tuple(r["meters"])) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise LabError(f"the lab's roster {path} is unreadable ({exc}); fix or delete it "
                       "(deleting it forgets the hosts added with `emsops lab add`)") from None


def _save_added(added: list[HostSpec]) -> None:
    path = roster_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    rows = [{**asdict(s), "groups": list(s.groups), "meters": list(s.meters)} for s in added]
    tmp.write_text(json.dumps({"added": rows}, indent=1) + "\n")
    os.replace(tmp, path)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One roster change at a time (two `lab add` at once must not take one address)."""
    config.state_dir().mkdir(parents=True, exist_ok=True)
    with open(config.state_dir() / "roster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def hosts() -> tuple[HostSpec, ...]:
    """The default hosts, then those added, in the order they were added."""
    return (*config.HOSTS, *_load_added())


def added() -> tuple[HostSpec, ...]:
    return tuple(_load_added())


def spec(name: str) -> HostSpec:
    roster = hosts()
    for s in roster:
        if s.name == name:
            return s
    known = ", ".join(s.name for s in roster)
    raise LabError(f"unknown lab host {name!r}; the lab has: {known}")


def check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise LabError(f"bad host name {name!r}: use lower-case letters, digits and '-', "
                       "starting with a letter and not ending with '-'")
    limit = MAX_MACHINE_NAME - len(config.MACHINE_PREFIX)
    if len(name) > limit:
        raise LabError(f"host name {name!r} is too long: at most {limit} characters in this lab "
                       f"(its veth is named vb-{config.MACHINE_PREFIX}<name>, 15 at most)")


def _free_address(roster: tuple[HostSpec, ...]) -> str:
    used = {s.address for s in roster} | {config.BRIDGE_ADDRESS}
    for last in range(FIRST_ADDED, LAST_ADDED + 1):
        candidate = f"{config.SUBNET_PREFIX}.{last}"
        if candidate not in used:
            return candidate
    net = ipaddress.ip_network(f"{config.BRIDGE_ADDRESS}/{config.PREFIX_LEN}", strict=False)
    raise LabError(f"the lab subnet {net} is full: every address from .{FIRST_ADDED} to "
                   f".{LAST_ADDED} (those for added hosts) is taken; remove a host first "
                   "(`emsops lab remove NAME`)")


def _free_meters(roster: tuple[HostSpec, ...]) -> tuple[int, ...]:
    first = max((u for s in roster for u in s.meters), default=0) + 1
    return tuple(range(first, first + METERS_PER_ADDED_GATEWAY))


def add(name: str, group: str, net: str = "networkd") -> HostSpec:
    """Record a new host; it gets the lowest free address and, for a gateway, meters of its own."""
    check_name(name)
    if group not in config.GROUPS:
        raise LabError(f"unknown group {group!r}; the groups are: {', '.join(config.GROUPS)}")
    if net not in config.NETS:
        raise LabError(f"unknown network setup {net!r}; choose one of: {', '.join(config.NETS)}")
    with _locked():
        roster = hosts()
        if any(s.name == name for s in roster):
            raise LabError(f"the lab already has a host named {name!r}")
        meters = _free_meters(roster) if group == "ems_gateways" else ()
        new = HostSpec(name, _free_address(roster), (group,), net, meters)
        _save_added([*_load_added(), new])
    return new


def remove(name: str) -> HostSpec:
    """Forget an added host (the default hosts are the site every test stands on: they stay)."""
    with _locked():
        if any(s.name == name for s in config.HOSTS):
            raise LabError(f"{name} is one of the lab's default hosts and cannot be removed; "
                           "only hosts added with `emsops lab add` can")
        rest = _load_added()
        gone = [s for s in rest if s.name == name]
        if not gone:
            spec(name)  # raises: unknown host
        _save_added([s for s in rest if s.name != name])
    return gone[0]


def reset() -> None:
    """Back to the default roster (`lab down --purge`: the added hosts' disks are gone too)."""
    with _locked():
        roster_file().unlink(missing_ok=True)
