"""The lab site every lab test stands on.

The session fixture brings the lab up from nothing (purging earlier disks unless
EMSOPS_LAB_REUSE=1), builds the releases and deploys playbooks/site.yml. Lab tests need root:
without it they fail and say so, rather than being skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from labkit import RELEASES, REPO, inventory_path, run_playbook

from lab import manager


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab_last(order=2): run after every other lab test, lower "
                                       "orders first (the moved-layout site, then `lab down`)")


def _last(item: pytest.Item) -> int:
    marker = item.get_closest_marker("lab_last")
    return 0 if marker is None else (marker.args[0] if marker.args else 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked lab_last run after every other lab test (sort is stable)."""
    items.sort(key=_last)


@pytest.fixture(scope="session")
def lab_site() -> Path:
    """A deployed lab site; returns its inventory."""
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (they boot containers on a bridge); run them as root")
    if not os.environ.get("EMSOPS_LAB_REUSE"):
        manager.down(purge=True, log=lambda _msg: None)
    manager.up(log=lambda _msg: None)
    if not (RELEASES / "SHA256SUMS").exists():
        subprocess.run([sys.executable, "lab/ems/build_releases.py", "--out", str(RELEASES)],
                       cwd=REPO, check=True, capture_output=True)
    run_playbook("site.yml")
    return inventory_path()
