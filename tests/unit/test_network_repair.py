"""Role network_repair refuses network devices on its own (the API refuses them too): a run with
a host of group network_devices fails before any connection, saying why."""

import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_a_run_with_a_network_device_is_refused_by_the_role(tmp_path):
    inventory = tmp_path / "hosts.yml"
    # An address nothing answers on: the refusal must come before any connection.
    inventory.write_text(yaml.safe_dump({"all": {"children": {
        "network_devices": {"hosts": {"sw1": {"ansible_host": "192.0.2.1"}}}}}}))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         "playbooks/repair_network.yml", "-e", "network_repair_issue=lan_change"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert "sw1 in group network_devices: switch and router debugging is outside" in proc.stdout
    assert "unreachable=0" in proc.stdout
