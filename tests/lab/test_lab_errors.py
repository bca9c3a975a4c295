"""The lab refuses clearly, and changes nothing, when its subnet is already in use."""

import os
import subprocess

import pytest
from labkit import emsops

pytestmark = pytest.mark.lab


def test_lab_up_refuses_a_subnet_taken_by_another_interface(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (they create interfaces); run them as root")
    subprocess.run(["ip", "link", "add", "emstaken0", "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "10.239.77.5/24", "dev", "emstaken0"], check=True)
        env = {"EMSOPS_LAB_SUBNET": "10.239.77", "EMSOPS_LAB_BRIDGE": "emstest0",
               "EMSOPS_LAB_DIR": str(tmp_path / "lab"), "EMSOPS_LAB_MIRROR_PORT": "3199"}
        proc = emsops("lab", "up", env=env)
        assert proc.returncode == 2
        assert "10.239.77.0/24 is taken by emstaken0" in proc.stderr
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert "emstest0" not in links, "a bridge was created anyway"
        assert not (tmp_path / "lab" / "images").exists(), "the image build started anyway"
    finally:
        subprocess.run(["ip", "link", "del", "emstaken0"], check=False)
