"""Issue 9's fingerprints on the deployed site: check mode leaves a host's fingerprint as it
was, and a real change shows in the diff."""

from __future__ import annotations

import os

import pytest
from labkit import emsops, layout, run_playbook

from lab.fingerprint import diff, fingerprint
from lab.hosts import host as lab_host

pytestmark = pytest.mark.lab


def test_check_mode_leaves_the_fingerprint_of_a_host_unchanged(lab_site):
    before = fingerprint("ems-app")
    assert before["files"] and before["units"]
    run_playbook("site.yml", "--check", "--limit", "ems-app")
    changes = diff(before, fingerprint("ems-app"))
    assert not changes, "site.yml --check changed ems-app:\n" + "\n".join(changes)


def test_a_real_change_shows_in_the_fingerprint(lab_site, tmp_path):
    conf = layout("ems-gw1")["ems_layout_config_file"]
    on_disk = lab_host("ems-gw1").root / conf.lstrip("/")
    saved = tmp_path / "fingerprint.json"
    proc = emsops("lab", "fingerprint", "ems-gw1")
    assert proc.returncode == 0, proc.stderr
    saved.write_text(proc.stdout)
    mode = on_disk.stat().st_mode & 0o7777
    os.chmod(on_disk, 0o644)
    try:
        proc = emsops("lab", "fingerprint", "ems-gw1", "--diff", str(saved))
    finally:
        os.chmod(on_disk, mode)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"files: {conf} changed: mode {mode:04o} -> 0644"
    proc = emsops("lab", "fingerprint", "ems-gw1", "--diff", str(saved))
    assert (proc.returncode, proc.stdout.strip()) == (0, "ems-gw1: no change"), proc.stdout
