"""Memory and boot time of a fleet of light lab hosts at once / one such host booted alone.

    .venv/bin/python bench/lab_fleet.py [--hosts 24]

Root, with the lab up (the same EMSOPS_LAB_* variables as its `emsops lab up`). A light host is
the bare base OS (systemd, sshd, networkd; nothing deployed), added to the lab's roster like any
other (`lab.roster`, group standby) and removed again at the end, whatever happens.
1. baseline: one light host booted alone: time from the start of systemd-nspawn until SSH
   answers a command, and its memory once booted (`is-system-running` says running);
2. the fleet: N light hosts started at once: time until each answers over SSH (the last one is
   the fleet's boot time), then each host's memory once all are booted.
Memory is the PSS of every process of the host (its cgroup, nspawn included), and the drop of the
machine's MemAvailable over the whole fleet. Prints both runs and the ratios fleet / alone.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lab import config, image, manager, network, roster
from lab.errors import LabError
from lab.hosts import Host, ensure_client_key, ssh_base_args

PREFIX = "fleet"
GROUP = "standby"
BOOT_TIMEOUT_S = 300


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def host_pss_kib(h: Host) -> int:
    """PSS of every process in the host's cgroup (the name=systemd or unified hierarchy)."""
    pids: set[int] = set()
    for cgroup in h.cgroups[:1]:
        for procs in cgroup.rglob("cgroup.procs"):
            pids |= {int(p) for p in procs.read_text().split()}
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # gone meanwhile
        total += next(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("Pss:"))
    return total


def ssh_ok(h: Host, command: str = "true") -> bool:
    return subprocess.run([*ssh_base_args(h.spec), command], capture_output=True,
                          check=False).returncode == 0


def booted(h: Host) -> bool:
    proc = subprocess.run([*ssh_base_args(h.spec), "systemctl is-system-running"],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() in ("running", "degraded")


def boot_all(hosts: list[Host]) -> dict[str, float]:
    """Start every host at once; seconds from the start until each answers over SSH."""
    for h in hosts:
        h.mount(image.lowers(h.spec, log=lambda _m: None))
    start = time.monotonic()
    for h in hosts:
        h.boot()
    ready: dict[str, float] = {}
    while len(ready) < len(hosts):
        if time.monotonic() - start > BOOT_TIMEOUT_S:
            raise LabError(f"not up within {BOOT_TIMEOUT_S}s: "
                           f"{sorted(h.spec.name for h in hosts if h.spec.name not in ready)}")
        for h in hosts:
            if h.spec.name not in ready and h.ssh_reachable() and ssh_ok(h):
                ready[h.spec.name] = time.monotonic() - start
        time.sleep(0.1)
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while not all(booted(h) for h in hosts):
        if time.monotonic() > deadline:
            raise LabError("the hosts answer over SSH but systemd never finished booting")
        time.sleep(1)
    return ready


def run(n: int) -> dict:
    if not network.bridge_exists():
        raise LabError("the lab is down: run `emsops lab up` first")
    ensure_client_key()
    names = [f"{PREFIX}{i:02d}" for i in range(n + 1)]
    added: list[str] = []
    try:
        for name in names:
            roster.add(name, GROUP)
            added.append(name)
        alone_host, *fleet = [Host(roster.spec(name)) for name in names]
        alone = boot_all([alone_host])[alone_host.spec.name]
        alone_pss = host_pss_kib(alone_host)
        alone_host.stop()
        before = mem_available_kib()
        ready = boot_all(fleet)
        time.sleep(5)  # let the fleet settle before the memory is read, as an idle site would
        pss = [host_pss_kib(h) for h in fleet]
        drop = before - mem_available_kib()
    finally:
        for name in reversed(added):
            manager.remove(name, log=lambda _m: None)
    return {"hosts": n, "alone_boot_s": alone, "alone_pss_mib": alone_pss / 1024,
            "fleet_boot_s": max(ready.values()), "fleet_boot_median_s":
            statistics.median(ready.values()), "fleet_pss_median_mib":
            statistics.median(pss) / 1024, "fleet_pss_total_mib": sum(pss) / 1024,
            "mem_available_drop_mib": drop / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=24, help="light hosts at once (24)")
    args = parser.parse_args()
    r = run(args.hosts)
    print(f"lab {config.BRIDGE}: one light host alone: SSH after {r['alone_boot_s']:.2f} s, "
          f"PSS {r['alone_pss_mib']:.1f} MiB")
    print(f"{r['hosts']} light hosts at once: all answer SSH after {r['fleet_boot_s']:.2f} s "
          f"(median {r['fleet_boot_median_s']:.2f} s); PSS per host median "
          f"{r['fleet_pss_median_mib']:.1f} MiB, all {r['fleet_pss_total_mib']:.0f} MiB; "
          f"MemAvailable dropped by {r['mem_available_drop_mib']:.0f} MiB")
    print(f"ratios fleet / alone: boot (last host) {r['fleet_boot_s'] / r['alone_boot_s']:.2f}, "
          f"PSS per host {r['fleet_pss_median_mib'] / r['alone_pss_mib']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
