"""The drill report: RTO/RPO arithmetic, verdicts, and the HTML page and index."""

from __future__ import annotations

import json

import pytest

from api.drill import build_report, render_report_html, write_report

SNAP_APP = {"id": "a" * 64, "short_id": "aaaaaaaa", "hostname": "ems-app",
            "time": "2026-01-01T09:00:00.123456789Z", "tags": ["kind=files", "version=3.2.1"]}
SNAP_DB = {"id": "b" * 64, "short_id": "bbbbbbbb", "hostname": "ems-db",
           "time": "2026-01-01T09:30:00Z", "tags": ["kind=db", "version=3.2.1"]}
DATA = {"equal": True, "rows": 3, "tables": {"readings": 3},
        "meters": {"m01": {"rows": 3, "sha256": "f" * 64}}}


def _result(**over) -> dict:
    result = {"started": "2026-01-01T10:00:00+00:00", "finished": "2026-01-01T10:02:00+00:00",
              "ok": True, "failure": None, "standby": "standby", "version": "3.2.1",
              "app_snapshot": SNAP_APP, "db_snapshot": SNAP_DB, "data": DATA,
              "phases": [{"name": "prepare", "ended": "2026-01-01T10:00:30+00:00"},
                         {"name": "repository", "ended": "2026-01-01T10:00:40+00:00"},
                         {"name": "restore", "ended": "2026-01-01T10:01:00+00:00"},
                         {"name": "data", "ended": "2026-01-01T10:01:10+00:00"},
                         {"name": "services", "ended": "2026-01-01T10:01:50+00:00"},
                         {"name": "application", "ended": "2026-01-01T10:01:55+00:00"}]}
    result.update(over)
    return result


def test_rto_runs_from_start_to_the_last_verified_phase():
    assert build_report(_result(), rc=0, rpo_warn_s=86400)["rto_s"] == 115.0


def test_rpo_is_start_minus_the_oldest_restored_snapshot():
    assert build_report(_result(), rc=0, rpo_warn_s=86400)["rpo_s"] == pytest.approx(3599.9, 0.1)


def test_phase_seconds_are_differences_between_phase_ends():
    phases = build_report(_result(), rc=0, rpo_warn_s=86400)["phases"]
    assert [p["seconds"] for p in phases] == [30.0, 10.0, 20.0, 10.0, 40.0, 5.0]


def test_a_verified_drill_passes():
    assert build_report(_result(), rc=0, rpo_warn_s=86400)["verdict"] == "pass"


def test_an_old_backup_makes_a_warning_with_the_reason():
    report = build_report(_result(), rc=0, rpo_warn_s=600)
    assert report["verdict"] == "warn"
    assert "RPO" in report["reasons"][0]


def test_a_failed_phase_fails_the_drill_and_says_where():
    failure = {"phase": "data", "task": "compare", "message": "meter m01: checksum differs"}
    report = build_report(_result(ok=False, failure=failure, phases=_result()["phases"][:3]),
                          rc=2, rpo_warn_s=86400)
    assert report["verdict"] == "fail"
    assert report["rto_s"] is None
    assert report["phases"][-1] == {"name": "data", "ok": False, "seconds": 60.0,
                                    "detail": "compare: meter m01: checksum differs"}
    assert "phase data" in report["reasons"][0]


def test_no_result_at_all_is_a_failure():
    report = build_report(None, rc=4, rpo_warn_s=86400, log_tail="UNREACHABLE")
    assert report["verdict"] == "fail"
    assert "UNREACHABLE" in report["failure"]["message"]


def test_html_escapes_messages_and_shows_rto_rpo_and_data():
    failure = {"phase": "restore", "task": "t", "message": "<script>x</script>"}
    html = render_report_html({**build_report(_result(failure=failure), rc=2, rpo_warn_s=1),
                               "id": "x", "inventory": "inv"})
    assert "<script>x</script>" not in html and "&lt;script&gt;" in html
    html = render_report_html({**build_report(_result(), rc=0, rpo_warn_s=86400), "id": "x",
                               "inventory": "inv"})
    assert "115.0" in html and "m01" in html and "PASS" in html


def test_reports_are_kept_with_an_index_of_past_drills(tmp_path):
    write_report(tmp_path, build_report(_result(), rc=0, rpo_warn_s=86400), "inv")
    later = _result(started="2026-01-02T10:00:00+00:00")
    write_report(tmp_path, build_report(later, rc=0, rpo_warn_s=86400), "inv")
    assert json.loads((tmp_path / "20260101T100000Z" / "report.json").read_text())["rto_s"]
    index = (tmp_path / "index.html").read_text()
    assert index.index("20260102T100000Z") < index.index("20260101T100000Z")
