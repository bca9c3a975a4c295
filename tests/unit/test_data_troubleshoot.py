"""Role data_troubleshoot's analysis against a real PostgreSQL (files/analyse.sql run by psql as
the role runs it, switched to the database owner) and its findings (filter_plugins), and the
data report built from them (api/reports/data.py)."""

from __future__ import annotations

import importlib.util
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from api.reports import data as data_report
from tests.support.pgserver import PgServer
from tests.support.report_html import ReportPage

ROLE = Path(__file__).resolve().parents[2] / "roles" / "data_troubleshoot"
MIGRATION = Path(__file__).resolve().parents[2] / "lab/ems/src/migrations/0001_readings.sql"
T0 = datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
STEP = 60  # seconds between readings: the meters' interval here


def _plugin():
    spec = importlib.util.spec_from_file_location(
        "dt_filters", ROLE / "filter_plugins" / "data_troubleshoot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


F = _plugin()


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _series() -> list[tuple[str, datetime, float, float]]:
    """Two hours of readings at 60 s: `ok` clean, `gap` misses 10 minutes, `reset` drops to 0,
    `spike` jumps 5000 kWh once, `stuck` freezes for 5 readings under load, `dip` drops 1 %."""
    rows = []
    for meter in ("ok", "gap", "reset", "spike", "stuck", "dip"):
        kwh = 1000.0
        for i in range(120):
            kwh += 1.0  # 60 kW
            value = kwh
            if meter == "gap" and 30 <= i < 40:
                continue
            if meter == "reset" and i >= 60:
                value = kwh - 1060.0
            if meter == "spike" and i >= 50:
                value = kwh + 5000.0
            if meter == "stuck" and 70 <= i < 75:
                value = 1000.0 + 70
            if meter == "dip" and i == 90:
                value = kwh * 0.99 - 1.0
            rows.append((meter, T0 + timedelta(seconds=STEP * i), value, 60000.0))
    return rows


@pytest.fixture(scope="module")
def analyse():
    with PgServer() as pg:
        pg.create_database("ems", owner="ems", password="unused-by-the-socket")  # noqa: S106
        pg.psql(f"SET ROLE ems; {MIGRATION.read_text()}", database="ems")
        values = ",".join(f"('{m}', '{iso(t)}', {k}, 230, 10, {p}, 'gw1')"
                          for m, t, k, p in _series())
        pg.psql("INSERT INTO readings (meter_id, ts, kwh, voltage, current, power, gateway_id)"
                f" VALUES {values}", database="ems")

        def run(since: str = "", until: str = "", ranges: list | None = None) -> dict:
            meters = F.meters_spec([{"gateway_id": "gw1", "poll_interval_s": STEP,
                                     "meters": ["ok", "gap", "reset", "spike", "stuck", "dip"]}],
                                   [], 900, 1000, {"ok": 50000})
            out = pg._run(str(pg.bindir / "psql"), "-X", "-A", "-t", "-q", "-h",
                          str(pg.socket_dir), "-p", str(pg.port), "-U", "postgres", "-d", "ems",
                          "-f", "-", "-v", "owner=ems", "-v", f"meters={json.dumps(meters)}",
                          "-v", "gap_factor=1.5", "-v", "dip_reset_pct=10", "-v", "max_days=31",
                          "-v", "stuck_min_readings=3", "-v", f"since={since}",
                          "-v", f"until={until}", "-v", f"ranges={json.dumps(ranges or [])}",
                          input_text=(ROLE / "files/analyse.sql").read_text())
            return json.loads(out.strip().splitlines()[-1])

        yield run


def test_window_defaults_to_since_the_first_reading_when_shorter_than_24_hours(analyse):
    result = analyse(until=iso(T0 + timedelta(hours=2)))
    assert result["window"] == {"since": iso(T0), "until": iso(T0 + timedelta(hours=2))}


def test_a_clean_meter_has_nothing(analyse):
    ok = analyse(until=iso(T0 + timedelta(seconds=STEP * 120)))["meters"]["ok"]
    assert ok["readings"] == 120
    assert (ok["gaps"], ok["drops"], ok["spikes"], ok["stuck"], ok["negatives"]) == (
        [], [], [], [], [])
    assert ok["days"] == [{"day": "2026-12-01", "expected": 120, "samples": 120, "pct": 100.0}]


def test_a_gap_is_named_with_its_range_and_counts_against_completeness(analyse):
    gap = analyse(until=iso(T0 + timedelta(seconds=STEP * 120)))["meters"]["gap"]
    assert gap["gaps"] == [{"from": iso(T0 + timedelta(seconds=STEP * 29)),
                            "to": iso(T0 + timedelta(seconds=STEP * 40)),
                            "seconds": 660.0, "missing": 10}]
    assert gap["days"][0]["samples"] == 110 and gap["days"][0]["pct"] == 91.7


def test_ranges_are_counted_for_the_proof_of_a_fix(analyse):
    until = iso(T0 + timedelta(seconds=STEP * 120))
    gap = analyse(until=until)["meters"]["gap"]["gaps"][0]
    ranges = [{"meter_id": m, "from": gap["from"], "to": gap["to"]} for m in ("gap", "ok")]
    counted = analyse(until=until, ranges=ranges)["ranges"]
    assert [(r["meter_id"], r["readings"]) for r in counted] == [("gap", 0), ("ok", 10)]


def test_reset_dip_spike_and_stuck_on_their_meters(analyse):
    meters = analyse(until=iso(T0 + timedelta(seconds=STEP * 120)))["meters"]
    assert [(d["kind"], d["ts"]) for d in meters["reset"]["drops"]] == [
        ("reset", iso(T0 + timedelta(seconds=STEP * 60)))]
    assert [(d["kind"], d["ts"]) for d in meters["dip"]["drops"]] == [
        ("dip", iso(T0 + timedelta(seconds=STEP * 90)))]
    assert [s["ts"] for s in meters["spike"]["spikes"]] == [iso(T0 + timedelta(seconds=STEP * 50))]
    assert meters["spike"]["spikes"][0]["power_kw"] > 1000
    assert [(s["from"], s["to"], s["readings"]) for s in meters["stuck"]["stuck"]] == [
        (iso(T0 + timedelta(seconds=STEP * 69)), iso(T0 + timedelta(seconds=STEP * 74)), 6)]
    # The catch-up after the freeze (6 kWh in a minute) is not above 1000 kW: no spike.
    assert meters["stuck"]["spikes"] == []


def test_report_says_where_a_gap_is_and_what_was_fixed(analyse):
    until = iso(T0 + timedelta(seconds=STEP * 120))
    analysis = analyse(until=until)
    gap = analysis["meters"]["gap"]["gaps"][0]
    gateways = {"gw-host": {"gateway_id": "gw1", "poll_interval_s": STEP, "meters": [],
                            "probed_at": until, "health": {"meters": {}, "backlog": {}}}}
    located = {"gw-host": {"gaps": [{"meter_id": "gap", "from": gap["from"], "to": gap["to"],
                                     "history": 10, "waiting": 0,
                                     "first_confirmed": gap["from"]}]}}
    thresholds = {"completeness_min_pct": 95.0, "dip_reset_pct": 10.0, "meter_stale_factor": 3,
                  "meter_stale_min_s": 180, "read_error_warn_pct": 5, "read_error_fail_pct": 20,
                  "backlog_warn_age_s": 900}
    fixes = [{"gateway": "gw-host", "action": "replay", "replayed": 10, "since": gap["from"],
              "complete": True}]
    # As if the replay filled it: the verification has no gap any more.
    verified = json.loads(json.dumps(analysis))
    verified["meters"]["gap"]["gaps"] = []
    verified["meters"]["gap"]["days"][0]["pct"] = 100.0
    verified["ranges"] = [{"meter_id": "gap", "from": gap["from"], "to": gap["to"],
                           "readings": 10}]
    result = F.report("missing", analysis, verified, gateways, located, fixes, thresholds)
    found = {(f["id"], f["meter"]): f for f in result["findings"]}
    assert found[("data.gap", "gap")]["location"] == "gateway history"
    assert found[("data.gap", "gap")]["fixed"] is True
    assert found[("data.gap", "gap")]["severity"] == "ok"
    assert found[("data.completeness", "gap")]["fixed"] is True
    reset = found[("data.reset", "reset")]
    assert reset["onsite"] and reset["severity"] == "fail"
    assert found[("data.stuck", "stuck")]["from"] == iso(T0 + timedelta(seconds=STEP * 69))
    assert ("data.spike", "spike") in found and ("data.dip", "dip") in found
    assert not [f for f in result["findings"] if f["meter"] == "ok"]
    # Without a replay, the same gap is reported where its readings are, not fixed.
    unfixed = F.report("missing", analysis, None, gateways, located, [], thresholds)
    gap_f = next(f for f in unfixed["findings"] if f["id"] == "data.gap")
    assert gap_f["severity"] == "warn" and not gap_f.get("fixed")

    report = data_report.build_report({"data_troubleshoot": result}, site="s1", job_id="j1")
    assert report["fixed"] == 2 and report["status"] == "fail"
    timeline = next(t for t in report["timelines"] if t["meter"] == "gap")
    mark = timeline["marks"][0]
    assert mark["kind"] == "gap" and mark["fixed"] and 24 < mark["left_pct"] < 25


def test_data_report_html_draws_each_meters_timeline(tmp_path, analyse):
    analysis = analyse(until=iso(T0 + timedelta(seconds=STEP * 120)))
    thresholds = {"completeness_min_pct": 90.0, "dip_reset_pct": 10.0, "meter_stale_factor": 3,
                  "meter_stale_min_s": 180, "read_error_warn_pct": 5, "read_error_fail_pct": 20,
                  "backlog_warn_age_s": 900}
    result = F.report("inaccurate", analysis, None, {}, {}, [], thresholds)
    report = data_report.build_report({"data_troubleshoot": result}, site="s1", job_id="j1")
    folder = data_report.write_report(tmp_path, report)
    page = ReportPage((folder / "report.html").read_text())
    assert {g["data-meter"] for g in page.elements("g", "data-meter")} == {
        "ok", "gap", "reset", "spike", "stuck", "dip"}
    assert {r["data-mark"] for r in page.elements("rect", "data-mark")} == {
        "gap", "reset", "spike", "stuck", "dip"}
    assert json.loads((folder / "report.json").read_text())["symptom"] == "inaccurate"
    assert "j1" in (tmp_path / "s1" / "index.html").read_text()


def test_a_window_longer_than_the_maximum_is_moved_up(analyse):
    until = T0 + timedelta(hours=2)
    result = analyse(since="2018-01-01T00:00:00Z", until=iso(until))
    assert result["window"]["since"] == iso(until - timedelta(days=31))
    assert len(result["meters"]["ok"]["days"]) == 32
