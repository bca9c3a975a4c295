"""The emsops command line: help everywhere, clear errors on stderr with a non-zero status."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EMSOPS = [sys.executable, "-m", "api.cli"]
REPO = Path(__file__).resolve().parents[2]


def emsops(*args: str, env: dict | None = None, user: str | None = None):
    cmd = [*EMSOPS, *args]
    if user:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          env=env or dict(os.environ))


@pytest.mark.parametrize("args", [[], ["lab"], ["lab", "up"], ["lab", "down"], ["lab", "status"],
                                  ["lab", "wipe"], ["lab", "ssh"], ["verify"], ["serve"],
                                  ["token"], ["token", "create"], ["token", "list"],
                                  ["token", "revoke"], ["lab", "fingerprint"], ["lab", "fault"]])
def test_every_subcommand_has_help(args):
    proc = emsops(*args, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: emsops" in proc.stdout


def test_verify_with_a_missing_inventory_fails_clearly(tmp_path):
    proc = emsops("verify", "-i", str(tmp_path / "nope.yml"))
    assert proc.returncode == 2
    assert "nope.yml does not exist" in proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("pair", ["ems_release_version", "=3.2.2", "ems release=1", "x="])
def test_verify_refuses_an_expectation_that_is_not_name_value(tmp_path, pair):
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all: {}\n")
    proc = emsops("verify", "-i", str(inventory), "--expect", pair)
    assert proc.returncode == 2
    assert f"expected NAME=VALUE, got {pair!r}" in proc.stderr
    assert proc.stdout == ""


def test_lab_refuses_to_run_without_root(tmp_path, monkeypatch, capsys):
    # The venv's interpreter lives under /root, so no unprivileged user can start it here;
    # the uid is the one thing substituted, the command runs for real.
    from api.cli import main

    monkeypatch.setenv("EMSOPS_LAB_DIR", str(tmp_path / "lab"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["lab", "up"]) == 2
    assert "the lab needs root" in capsys.readouterr().err
    assert not (tmp_path / "lab").exists()


def test_lab_names_the_missing_tools_and_their_packages(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty), EMSOPS_LAB_DIR=str(tmp_path / "lab"))
    proc = emsops("lab", "up", env=env)
    assert proc.returncode == 2
    if os.geteuid() != 0:
        assert "the lab needs root" in proc.stderr
    else:
        assert "systemd-nspawn" in proc.stderr
        assert "apt-get install" in proc.stderr and "systemd-container" in proc.stderr
    assert not (tmp_path / "lab").exists()


def test_lab_wipe_of_an_unknown_host_names_the_real_ones(tmp_path):
    env = dict(os.environ, EMSOPS_LAB_DIR=str(tmp_path / "lab"))
    proc = emsops("lab", "wipe", "ems-nope", env=env)
    assert proc.returncode == 2
    if os.geteuid() == 0:
        assert "unknown lab host 'ems-nope'" in proc.stderr and "ems-gw1" in proc.stderr
    assert not (tmp_path / "lab").exists()


def test_lab_fault_list_names_every_kind_without_touching_the_lab(tmp_path):
    from lab.faults import KINDS

    env = dict(os.environ, EMSOPS_LAB_DIR=str(tmp_path / "lab"))
    proc = emsops("lab", "fault", "--list", env=env)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == list(KINDS)
    assert not (tmp_path / "lab").exists()


@pytest.mark.parametrize("args,message", [
    (["ems-app", "no-such-kind"], "unknown fault kind 'no-such-kind'"),
    (["ems-nope", "unit-stopped"], "unknown lab host 'ems-nope'"),
    (["ems-app"], "usage: emsops lab fault HOST KIND"),
    (["--clear"], "usage: emsops lab fault --clear HOST"),
    (["--list", "ems-app"], "--list takes no host or kind"),
])
def test_lab_fault_refuses_bad_input_and_changes_nothing(tmp_path, args, message):
    env = dict(os.environ, EMSOPS_LAB_DIR=str(tmp_path / "lab"))
    proc = emsops("lab", "fault", *args, env=env)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "lab").exists()


def test_lab_fingerprint_of_an_unknown_host_fails_clearly(tmp_path):
    env = dict(os.environ, EMSOPS_LAB_DIR=str(tmp_path / "lab"))
    proc = emsops("lab", "fingerprint", "ems-nope", env=env)
    assert proc.returncode == 2
    assert "unknown lab host 'ems-nope'" in proc.stderr
