"""Lab operations behind `emsops lab ...`: bring a site of hosts up, down, wipe one, status."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lab import config, faults, image, mirror, network, roster
from lab.config import HostSpec
from lab.errors import LabError
from lab.hosts import (
    Host,
    all_hosts,
    ensure_client_key,
    forget_host_key,
    host,
    lab_cgroups,
    remove_cgroup,
    ssh_base_args,
)
from lab.inventory import write_inventory
from lab.system import require_root, require_tools


def _preflight() -> None:
    require_root()
    require_tools()


def up(log=print) -> Path:
    """Idempotent: whatever already runs is left alone, the rest is created and booted."""
    _preflight()
    if not network.bridge_exists():
        network.check_subnet_free()  # before the slow image build
    image.ensure_image(log)
    network.ensure_bridge()
    mirror.ensure_mirror()
    ensure_client_key()
    hosts = all_hosts()  # the roster: the default hosts and those added
    for h in hosts:
        if not h.running():
            h.mount(image.lowers(h.spec, log))
            h.boot()
    for h in hosts:
        h.wait_ready()
    inventory = write_inventory()
    log(f"lab is up: {len(hosts)} hosts; inventory {inventory}")
    return inventory


def down(purge: bool = False, log=print) -> None:
    """Stop every host, unmount, remove the bridge and stop the mirror.

    With purge, the hosts' disks go too, and the hosts added with `add` (the cached images
    stay)."""
    _preflight()
    faults.remove_conflicts()
    for h in all_hosts():
        h.stop()
        if purge:
            faults.forget(h.spec.name)
            h.discard_disk()
            shutil.rmtree(h.dir, ignore_errors=True)
    if purge and roster.added():
        for spec in roster.added():
            forget_host_key(spec)
        roster.reset()
        write_inventory()
    for cgroup in lab_cgroups():
        remove_cgroup(cgroup)
    network.remove_bridge()
    mirror.stop_mirror()
    log("lab is down" + (" and its disks are gone" if purge else ""))


def wipe(name: str, log=print) -> None:
    """Replace a host's disk with the bare base OS and boot it (the 'disk died' case)."""
    _preflight()
    h = host(name)
    lowers = image.lowers(h.spec, log)
    h.stop()
    h.discard_disk()
    faults.forget(name, disk_only=True)
    network.ensure_bridge()
    ensure_client_key()
    h.mount(lowers)
    h.boot()
    h.wait_ready()
    log(f"{name} wiped: it runs the bare base OS with new SSH host keys")


def add(name: str, group: str, net: str = "networkd", log=print) -> HostSpec:
    """Add a host to the roster; when the lab is up, create and boot it and rewrite the
    inventory (its host_vars too), else the next `up` does."""
    _preflight()
    spec = roster.add(name, group, net)
    if not network.bridge_exists():
        write_inventory()
        log(f"{name} added ({spec.address}, {group}, {net}); the lab is down: `emsops lab up` "
            "boots it")
        return spec
    try:
        ensure_client_key()
        h = Host(spec)
        h.mount(image.lowers(spec, log))
        h.boot()
        h.wait_ready()
    except (LabError, OSError):
        _destroy(Host(spec))
        roster.remove(name)
        raise
    write_inventory()
    log(f"{name} is up: {spec.address}, group {group}, network by {net}")
    return spec


def remove(name: str, log=print) -> None:
    """Stop an added host, delete its disk, forget it and rewrite the inventory."""
    spec = roster.spec(name)
    if spec in config.HOSTS:
        roster.remove(name)  # raises: a default host stays
    _preflight()
    h = Host(spec)
    if h.running() and faults.active(name):
        faults.clear(name)
    _destroy(h)
    roster.remove(name)
    write_inventory()
    log(f"{name} removed")


def _destroy(h: Host) -> None:
    h.stop()
    faults.forget(h.spec.name)
    h.discard_disk()
    shutil.rmtree(h.dir, ignore_errors=True)
    forget_host_key(h.spec)


def status() -> list[dict]:
    rows = []
    for h in all_hosts():
        state = "running" if h.running() else ("stopped" if h.exists() else "absent")
        rows.append({"host": h.spec.name, "state": state, "address": h.spec.address,
                     "groups": ",".join(h.spec.groups), "net": h.spec.net,
                     "ssh": "up" if state == "running" and h.ssh_reachable() else "down"})
    return rows


def ssh(name: str, command: list[str]) -> None:
    """Replace this process with an SSH session (or command) on the host."""
    h: Host = host(name)
    args = ssh_base_args(h.spec)
    if not command:
        args.insert(1, "-t")
    os.execvp("ssh", [*args, *command])  # noqa: S606 - an interactive session, argv only


def image_info() -> dict:
    return {"path": str(image.image_path()), "recipe": config.image_key()}
