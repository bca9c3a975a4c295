"""The lab's private bridge: hosts talk to each other and to the controller, nothing else."""

from __future__ import annotations

import ipaddress
import json

from lab import config
from lab.errors import LabError
from lab.system import run


def _links() -> list[dict]:
    return json.loads(run(["ip", "-j", "addr", "show"]).stdout or "[]")


def bridge_exists() -> bool:
    return any(link["ifname"] == config.BRIDGE for link in _links())


def check_subnet_free() -> None:
    """Refuse to start when another interface already uses the lab's subnet."""
    lab_nets = [ipaddress.ip_network(f"{a}/{config.PREFIX_LEN}", strict=False)
                for a in (config.BRIDGE_ADDRESS, config.BRIDGE_ADDRESS2)]
    for link in _links():
        if link["ifname"] == config.BRIDGE:
            continue
        for addr in link.get("addr_info", []):
            if addr.get("family") != "inet":
                continue
            net = ipaddress.ip_network(f"{addr['local']}/{addr['prefixlen']}", strict=False)
            for lab_net in (n for n in lab_nets if net.overlaps(n)):
                raise LabError(
                    f"the lab subnet {lab_net} is taken by {link['ifname']} ({addr['local']}/"
                    f"{addr['prefixlen']}); choose another with EMSOPS_LAB_SUBNET=10.x.y "
                    "(and EMSOPS_LAB_SUBNET2)")


def ensure_bridge() -> None:
    if not bridge_exists():
        check_subnet_free()
        run(["ip", "link", "add", config.BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-j", "addr", "show", "dev", config.BRIDGE]).stdout
    for address in (config.BRIDGE_ADDRESS, config.BRIDGE_ADDRESS2):
        if f'"{address}"' not in addrs:
            run(["ip", "addr", "add", f"{address}/{config.PREFIX_LEN}", "dev", config.BRIDGE])
    run(["ip", "link", "set", config.BRIDGE, "up"])


def remove_bridge() -> None:
    if bridge_exists():
        run(["ip", "link", "del", config.BRIDGE])


def lab_links() -> list[str]:
    """Interfaces this lab created: its bridge and its hosts' veth ends (vb-<machine>)."""
    from lab import roster

    veths = {"vb-" + config.machine_name(spec) for spec in roster.hosts()}
    return [link["ifname"] for link in _links()
            if link["ifname"] == config.BRIDGE or link.get("master") == config.BRIDGE
            or link["ifname"] in veths]
