"""Fingerprints of lab hosts: the file walk, the unit parser and the readable diff."""

from __future__ import annotations

import hashlib
import os

from lab.fingerprint import EXCLUDED, diff, files, parse_units


def test_files_records_type_mode_owner_checksum_and_link_target(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "a.conf").write_text("x = 1\n")
    os.chmod(tmp_path / "etc" / "a.conf", 0o640)
    os.symlink("/nowhere", tmp_path / "current")
    entries = files(tmp_path)
    assert entries["/etc/a.conf"]["mode"] == "0640"
    assert entries["/etc/a.conf"]["sha256"] == hashlib.sha256(b"x = 1\n").hexdigest()
    assert entries["/etc/a.conf"]["owner"] == f"{os.getuid()}:{os.getgid()}"
    assert entries["/current"] == {"type": "link", "target": "/nowhere",
                                   "mode": entries["/current"]["mode"],
                                   "owner": entries["/current"]["owner"]}
    assert entries["/etc"]["type"] == "dir"


def test_excluded_paths_and_volatile_content_are_left_out(tmp_path):
    journal = tmp_path / "var" / "log" / "journal" / "abc"
    journal.mkdir(parents=True)
    (journal / "system.journal").write_text("j")
    (tmp_path / "spool.db").write_text("readings")
    entries = files(tmp_path, volatile={"/spool.db"})
    assert not [p for p in entries if p.startswith("/var/log/journal/")]
    assert "/var/log/journal" in entries  # the folder itself is state
    assert entries["/spool.db"]["type"] == "file" and "sha256" not in entries["/spool.db"]


def test_every_exclusion_says_why():
    assert all(rule.why and rule.pattern.startswith("/") for rule in EXCLUDED)


UNITS = """\
ems-platform.service loaded active running Kangpai EMS platform
ems-aggregate.service loaded activating start Kangpai EMS aggregation
ems-aggregate.timer loaded active waiting Run the aggregation
session-4.scope loaded active running Session 4 of User root
--
ems-platform.service enabled enabled
ems-aggregate.timer enabled enabled
ems-collector.service masked enabled
--
Wed 2026-12-02 14:20:00 UTC 20s Wed 2026-12-02 14:19:00 UTC 39s ago ems-aggregate.timer \
ems-aggregate.service
"""


def test_units_merge_loaded_state_and_unit_file_state():
    units = parse_units(UNITS)
    assert units["ems-platform.service"] == {"load": "loaded", "active": "active",
                                             "sub": "running", "file": "enabled"}
    assert units["ems-collector.service"] == {"load": "not-loaded", "active": "inactive",
                                              "sub": "dead", "file": "masked"}
    assert not [u for u in units if u.endswith(".scope")]


def test_a_timer_run_unit_is_busy_or_idle_by_the_clock_but_failed_is_kept():
    busy = parse_units(UNITS)["ems-aggregate.service"]
    idle = parse_units(UNITS.replace("activating start", "inactive dead"))["ems-aggregate.service"]
    assert busy == idle
    failed = parse_units(UNITS.replace("activating start", "failed failed"))
    assert failed["ems-aggregate.service"]["active"] == "failed"


def fp(**files_):
    return {"files": files_, "units": {"ems-platform.service": {"active": "active"}}}


def test_diff_of_equal_fingerprints_is_empty():
    a = fp(**{"/etc/a": {"type": "file", "sha256": "1"}})
    assert diff(a, a) == []


def test_diff_names_every_change_readably():
    before = fp(**{"/etc/a": {"type": "file", "sha256": "1", "mode": "0644"},
                   "/etc/gone": {"type": "file", "sha256": "2"}})
    after = fp(**{"/etc/a": {"type": "file", "sha256": "9", "mode": "0600"},
                  "/etc/new": {"type": "link", "target": "/x"}})
    after["units"]["ems-platform.service"] = {"active": "failed"}
    assert diff(before, after) == [
        "files: /etc/a changed: mode 0644 -> 0600, sha256 1 -> 9",
        "files: /etc/gone gone (was sha256=2 type=file)",
        "files: /etc/new new (target=/x type=link)",
        "units: ems-platform.service changed: active active -> failed",
    ]
