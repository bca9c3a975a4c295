"""Issue 3 on real hosts: reinstall.yml refuses what it must not touch.

That a wiped database host and application host come back from their backups is proven by
test_moved_layout.py, in a layout that moves every path (one reinstall of both proves both)."""

from __future__ import annotations

import pytest
from labkit import (
    run_playbook,
)

pytestmark = pytest.mark.lab

def test_reinstall_refuses_a_host_that_is_not_bare(lab_site):
    proc = run_playbook("reinstall.yml", "-l", "ems-gw1", check=False)
    assert proc.returncode != 0
    assert "is not bare" in proc.stdout


