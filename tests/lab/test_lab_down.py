"""`emsops lab down` leaves no process, mount, link, bridge or cgroup behind."""

import os

import pytest
from labkit import emsops

from lab import config, network
from lab.hosts import all_hosts, lab_cgroups

pytestmark = [pytest.mark.lab, pytest.mark.lab_last]


def test_lab_down_leaves_nothing_behind(lab_site):
    proc = emsops("lab", "down")
    assert proc.returncode == 0, proc.stderr

    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # Only this lab's: nspawn runs its disks, the mirror keeps its pid file here.
        ours = str(config.state_dir()) + "/" in cmd
        if ours and ("systemd-nspawn" in cmd or "apt-cacher" in cmd):
            procs.append(cmd)
    assert not procs, f"processes left behind: {procs}"

    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    # A sibling lab's folder (e.g. /var/lib/emsops/lab-ci) shares the prefix: match whole paths.
    state = str(config.state_dir())
    lab_mounts = [m for m in mounts if m == state or m.startswith(state + "/")]
    assert not lab_mounts, f"mounts left behind: {lab_mounts}"

    assert not network.lab_links(), f"links left behind: {network.lab_links()}"
    assert not any(h.running() for h in all_hosts())
    assert not [c for c in lab_cgroups() if c.exists()], "cgroups left behind"
