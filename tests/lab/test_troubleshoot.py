"""Issue 14 on real hosts: real data problems are injected on the lab site (meters switched
stuck, reset, spike and offline through meter_ctl, the collector stopped for a while, readings
deleted on the platform while the gateway's history still holds them); troubleshoot_data.yml,
run as a job through the one launcher, names each on its meter with its time range, says where
a gap's readings are, fills the one the gateway still holds (counted in the database), and a
second run finds nothing left to fix. Meter modes and the collector are put back as found."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta

import pytest
from labkit import inventory_path, lab_ssh, layout, psql_command, wait_until

from api.launch import run_job
from api.reports import data as data_report
from api.settings import Settings
from tests.support.report_html import ReportPage

pytestmark = pytest.mark.lab
GW = "ems-gw1"
STUCK, RESET, SPIKE, OFFLINE, LOST = "m02", "m03", "m04", "m05", "m06"
UNITS = {f"m0{u}": u for u in range(1, 9)}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def meter_ctl(meter: str, mode: str) -> None:
    lay = layout("meters")
    lab_ssh("meters", f"PYTHONPATH={lay['ems_layout_root']}/current {lay['ems_layout_python']} "
                      f"-m kangpai_ems.meter_ctl --host 127.0.0.1 --port "
                      f"{lay['ems_layout_modbus_port']} --unit {UNITS[meter]} --mode {mode}")


def sql(query: str) -> list[list[str]]:
    out = lab_ssh("ems-db", psql_command(query)).stdout
    return [line.split(" ") for line in out.splitlines() if line.strip()]


def count(meter: str, after: str, before: str) -> int:
    return int(sql(f"SELECT count(*) FROM readings WHERE meter_id = '{meter}' "
                   f"AND ts > '{after}' AND ts < '{before}'")[0][0])


def newest(meter: str) -> datetime | None:
    rows = sql(f"SELECT max(ts) AT TIME ZONE 'UTC' FROM readings WHERE meter_id = '{meter}'")
    return parse(rows[0][0] + "T" + rows[0][1] + "+00:00") if rows and len(rows[0]) == 2 else None


def collector(action: str) -> None:
    lab_ssh(GW, f"systemctl {action} {shlex.quote(layout(GW)['ems_layout_gateway_unit'])}")


def troubleshoot(data_dir, since: str) -> dict:
    job = run_job("troubleshoot_data", inventory_path(),
                  parameters={"symptom": "missing", "since": since},
                  settings=Settings(data_dir=data_dir))
    assert job["state"] == "succeeded", job["error"]
    return job


def by(findings: list[dict], fid: str, meter: str) -> list[dict]:
    return [f for f in findings if f["id"] == fid and f["meter"] == meter]


def within(finding: dict, start: datetime, end: datetime) -> bool:
    """The finding's range lies within [start, end]."""
    return start <= parse(finding["from"]) and parse(finding["to"]) <= end


@pytest.fixture
def broken_data(lab_site):
    """Inject the data problems, each seen in the database before the next step; yield their
    moments; put meters and collector back however the test ends."""
    poll = float(layout(GW)["ems_gateway_poll_interval_s"])
    moments: dict[str, object] = {"since": iso(datetime.now(UTC) - timedelta(seconds=1))}
    try:
        # One reading of each meter in the window first: a step needs one before it.
        wait_until(lambda: newest("m08") > parse(moments["since"]), 60, "a first reading")
        # A stuck meter for a few polls, a reset, a spike, a meter that stops answering.
        moments["stuck_on"] = moments["offline_on"] = datetime.now(UTC)
        for meter, mode in ((STUCK, "stuck"), (RESET, "reset"), (SPIKE, "spike"),
                            (OFFLINE, "offline")):
            meter_ctl(meter, mode)
        wait_until(lambda: newest(STUCK) > moments["stuck_on"] + timedelta(seconds=3 * poll), 60,
                   "three stuck readings")
        meter_ctl(STUCK, "normal")
        meter_ctl(OFFLINE, "normal")
        moments["stuck_off"] = moments["offline_off"] = datetime.now(UTC)
        # Readings lost on the platform since the window began (the gateway keeps them as
        # history): deleted behind the platform's back, as a faulty cleanup job would.
        lost_from, lost_to = parse(moments["since"]), newest(LOST) - timedelta(seconds=poll / 2)
        moments["lost"] = (iso(lost_from), iso(lost_to))
        moments["lost_n"] = count(LOST, *moments["lost"])
        sql(f"DELETE FROM readings WHERE meter_id = '{LOST}' AND ts > '{iso(lost_from)}' "
            f"AND ts < '{iso(lost_to)}'")
        wait_until(lambda: newest(OFFLINE) > moments["offline_off"], 60,
                   "the offline meter to answer again")
        # The collector down for two polls: a gap on every meter of the gateway, read nowhere.
        collector("stop")
        moments["stopped"] = datetime.now(UTC)
        wait_until(lambda: datetime.now(UTC) > moments["stopped"] + timedelta(seconds=2 * poll),
                   30, "the collector's gap to span two polls")
        collector("start")
        moments["started"] = datetime.now(UTC)
        wait_until(lambda: newest("m08") > moments["started"], 60,
                   "readings after the collector's restart")
        yield moments
    finally:
        for meter in (STUCK, OFFLINE):
            meter_ctl(meter, "normal")
        collector("start")


def test_troubleshoot_finds_the_problems_and_fills_what_the_gateway_holds(broken_data,
                                                                         tmp_path):
    m = broken_data
    poll = float(layout(GW)["ems_gateway_poll_interval_s"])
    slack = timedelta(seconds=3 * poll)
    job = troubleshoot(tmp_path, m["since"])
    result = job["set_stats"]["data_troubleshoot"]
    findings = result["findings"]

    # The deleted range: found as a gap held in the gateway's history, replayed, filled
    # (counted in the database). A stall inside it (the offline meter's retries held up the
    # poll round) is left over, read nowhere.
    lost = [f for f in by(findings, "data.gap", LOST) if f["location"] == "gateway history"]
    assert len(lost) == 1 and lost[0]["fixed"], by(findings, "data.gap", LOST)
    assert parse(lost[0]["from"]) <= parse(m["lost"][0]) + slack
    assert parse(lost[0]["to"]) >= parse(m["lost"][1])
    assert lost[0]["readings_after"] >= lost[0]["history"] >= m["lost_n"] > 0
    assert count(LOST, *m["lost"]) == m["lost_n"]
    replays = [x for x in result["fixes"] if x["action"] == "replay"]
    assert [x["gateway"] for x in replays] == [GW] and replays[0]["replayed"] >= m["lost_n"]
    assert any(x["action"] == "aggregate" for x in result["fixes"])

    # The collector's downtime: a gap on every meter, its readings nowhere, nothing claimed.
    for meter in UNITS:
        gaps = [f for f in by(findings, "data.gap", meter)
                if within(f, m["stopped"] - slack, m["started"] + slack)]
        assert gaps and all(g["location"] == "nowhere" and not g.get("fixed")
                            for g in gaps), (meter, by(findings, "data.gap", meter))
    # The meter that did not answer: a gap over that time, its readings nowhere.
    offline = [f for f in by(findings, "data.gap", OFFLINE)
               if within(f, m["offline_on"] - slack, m["offline_off"] + slack)
               and f["location"] == "nowhere"]
    assert offline, by(findings, "data.gap", OFFLINE)
    # Stuck, reset and spike on their meters, with their ranges; the reset needs the site.
    stuck = by(findings, "data.stuck", STUCK)
    assert len(stuck) == 1 and within(stuck[0], m["stuck_on"] - slack, m["stuck_off"] + slack)
    assert stuck[0]["readings"] >= 3 and stuck[0]["onsite"]
    reset = by(findings, "data.reset", RESET)
    assert len(reset) == 1 and reset[0]["onsite"]
    assert within(reset[0], m["stuck_on"] - slack, m["stuck_off"] + slack)
    spike = by(findings, "data.spike", SPIKE)
    assert len(spike) == 1 and spike[0]["power_kw"] > 1000
    assert within(spike[0], m["stuck_on"] - slack, m["stuck_off"] + slack)
    # Meters with nothing injected carry no counter findings.
    assert not [f for f in findings if f["id"] in ("data.stuck", "data.reset", "data.spike",
                                                   "data.dip", "data.negative")
                and f["meter"] not in (STUCK, RESET, SPIKE)]

    # The report (JSON + HTML) draws each meter's timeline with its gaps and flagged points.
    report = data_report.build_report(job["set_stats"], site="lab", job_id=job["id"])
    folder = data_report.write_report(tmp_path / "reports" / "data", report)
    page = ReportPage((folder / "report.html").read_text())
    marks = page.elements("rect", "data-mark")
    assert {(r["data-mark"]) for r in marks} >= {"gap", "stuck", "reset", "spike"}
    assert any(r["data-mark"] == "gap" and r["data-fixed"] == "true" for r in marks)
    assert {g["data-meter"] for g in page.elements("g", "data-meter")} == set(UNITS)
    assert job["id"] in (folder.parent / "index.html").read_text()

    # A second run over the same window: nothing left that a gateway holds, nothing to fix.
    again = troubleshoot(tmp_path, m["since"])["set_stats"]["data_troubleshoot"]
    assert again["fixes"] == []
    assert not [f for f in again["findings"]
                if f["id"] == "data.gap" and f["location"] != "nowhere"]
    assert count(LOST, *m["lost"]) == m["lost_n"]
