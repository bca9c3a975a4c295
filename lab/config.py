"""Where the lab keeps its state and which hosts a lab site has."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    groups: tuple[str, ...]
    # How the host configures its address: systemd-networkd or Debian's ifupdown.
    net: str = "networkd"
    # Modbus unit ids of the meters host that this gateway polls (gateways only).
    meters: tuple[int, ...] = ()


BRIDGE = os.environ.get("EMSOPS_LAB_BRIDGE", "emslab0")
SUBNET_PREFIX = os.environ.get("EMSOPS_LAB_SUBNET", "10.231.0")
BRIDGE_ADDRESS = f"{SUBNET_PREFIX}.1"
# A second subnet on the same bridge, with a controller address in it, for network changes
# (a host moved to another LAN). By default the first one's third number + 100.
_a, _b, _c = SUBNET_PREFIX.split(".")
SUBNET2_PREFIX = os.environ.get("EMSOPS_LAB_SUBNET2", f"{_a}.{_b}.{int(_c) + 100}")
BRIDGE_ADDRESS2 = f"{SUBNET2_PREFIX}.1"
# nspawn names each host's veth "vb-<machine>": a second lab needs machine names of its own.
MACHINE_PREFIX = "" if BRIDGE == "emslab0" else BRIDGE.removeprefix("emslab") + "-"
PREFIX_LEN = 24
MIRROR_PORT = int(os.environ.get("EMSOPS_LAB_MIRROR_PORT", "3142"))
SUITE = "bookworm"
DEBIAN_URL = "http://deb.debian.org/debian"

NETS = ("networkd", "ifupdown")

# The base image every host boots from. Changing the recipe changes the cache key, so the
# image is rebuilt exactly when what it would contain changes.
BASE_PACKAGES = (
    "openssh-server", "python3", "python3-apt", "systemd", "systemd-sysv", "dbus",
    "iproute2", "sudo", "ca-certificates",
)
IMAGE_RECIPE_VERSION = 1
# What a variant adds on top of the base image (an overlay layer of its own, built through the
# site mirror): hosts given `--net ifupdown` boot from the base with this layer over it.
VARIANT_PACKAGES = {"ifupdown": ("ifupdown",)}
VARIANT_RECIPE_VERSION = 1

# The default roster: the hosts every lab has. `emsops lab add` / `remove` change the rest
# (lab.roster, kept in the state dir).
HOSTS: tuple[HostSpec, ...] = (
    HostSpec("ems-app", f"{SUBNET_PREFIX}.11", ("ems_app",)),
    HostSpec("ems-db", f"{SUBNET_PREFIX}.12", ("ems_db",)),
    HostSpec("ems-gw1", f"{SUBNET_PREFIX}.13", ("ems_gateways",), meters=tuple(range(1, 9))),
    HostSpec("meters", f"{SUBNET_PREFIX}.14", ("ems_meters",)),
    HostSpec("backup", f"{SUBNET_PREFIX}.15", ("backup_servers",)),
    HostSpec("standby", f"{SUBNET_PREFIX}.16", ("standby",)),
)

# Every inventory group of the design, also those the lab leaves empty.
GROUPS = ("ems_app", "ems_db", "ems_gateways", "ems_meters", "backup_servers", "standby",
          "network_devices")


def machine_name(spec: HostSpec) -> str:
    return MACHINE_PREFIX + spec.name


def host_spec(name: str) -> HostSpec:
    """A host of the lab's roster (the default hosts and those added), or a LabError."""
    from lab import roster

    return roster.spec(name)


def state_dir() -> Path:
    return Path(os.environ.get("EMSOPS_LAB_DIR", "/var/lib/emsops/lab"))


def image_key() -> str:
    recipe = f"{IMAGE_RECIPE_VERSION}|{SUITE}|{DEBIAN_URL}|{','.join(sorted(BASE_PACKAGES))}"
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def variant_key(variant: str) -> str:
    """Follows the base image's recipe and the variant's own."""
    recipe = (f"{image_key()}|{VARIANT_RECIPE_VERSION}|{variant}|"
              f"{','.join(sorted(VARIANT_PACKAGES[variant]))}")
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def inventory_dir() -> Path:
    return REPO_ROOT / "inventories" / "lab"
