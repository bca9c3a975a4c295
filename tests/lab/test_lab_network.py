"""Issue 9's second subnet: the bridge carries it with a controller address, and a host given an
address in it answers ARP and SSH there (then gives it back: the host's disk never changes)."""

from __future__ import annotations

import subprocess

import pytest
from labkit import lab_ssh

from lab import config
from lab.faults import arp_macs
from lab.fingerprint import diff, fingerprint
from lab.hosts import client_key, known_hosts

pytestmark = pytest.mark.lab


def test_a_host_given_an_address_in_the_second_subnet_answers_there(lab_site):
    bridge = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", config.BRIDGE],
                            capture_output=True, text=True, check=True).stdout
    assert f"{config.BRIDGE_ADDRESS2}/{config.PREFIX_LEN}" in bridge
    address = f"{config.SUBNET2_PREFIX}.{config.host_spec('standby').address.rsplit('.', 1)[1]}"
    before = fingerprint("standby")
    lab_ssh("standby", f"ip addr add {address}/{config.PREFIX_LEN} dev host0")
    try:
        # The controller has no ping: the host's own ARP answer and an SSH login prove it.
        assert len(arp_macs(address)) == 1
        proc = subprocess.run(
            ["ssh", "-i", str(client_key()), "-o", f"UserKnownHostsFile={known_hosts()}",
             "-o", f"HostKeyAlias={config.host_spec('standby').address}",
             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
             f"root@{address}", "hostname"], capture_output=True, text=True, check=False)
        assert (proc.returncode, proc.stdout.strip()) == (0, "standby"), proc.stderr
    finally:
        lab_ssh("standby", f"ip addr del {address}/{config.PREFIX_LEN} dev host0")
    assert not diff(before, fingerprint("standby"))
