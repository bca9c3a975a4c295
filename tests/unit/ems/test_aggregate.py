"""Interval aggregation: counter checks (pure), and the job against a real database."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kangpai_ems import energy

from .helpers import (
    Database,
    EmsProcess,
    PgServer,
    free_port,
    http,
    run_ems,
    wait_http,
    write_config,
    write_license,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(("previous", "current", "expected"), [
    (100.0, 110.0, (10.0, None)),
    (100.0, 100.0, (0.0, None)),
    (100.0, 95.0, (0.0, "dip")),       # 5 % drop
    (10.0, 9.05, (0.0, "dip")),        # 9.5 % drop
    (10.0, 9.0, (9.0, "reset")),       # 10 % drop: counter restarted, 9 kWh since
    (100.0, 2.0, (2.0, "reset")),
    (100.0, 300.0, (0.0, "spike")),    # 200 kWh in 5 min = 2400 kW > 1000 kW
    (100.0, 90.0, (0.0, "spike")),     # a reset to 90 kWh within 5 min is no reset either
])
def test_step_classification(previous: float, current: float,
                             expected: tuple[float, str | None]) -> None:
    assert energy.step(energy.Sample(at(0), previous), energy.Sample(at(5), current),
                       max_power_kw=1000) == pytest.approx(expected)


def test_interval_start_is_aligned() -> None:
    assert energy.interval_start(at(14.99), 15) == at(0)
    assert energy.interval_start(at(15), 15) == at(15)
    assert energy.interval_start(at(61), 30) == at(60)


# One meter, a reading every 5 minutes, with one of each counter problem.
SERIES = [
    (0, 1000.0), (5, 1010.0), (10, 1020.0),        # 00:00  20 kWh
    (15, 1030.0), (20, 1025.0), (25, 1040.0),      # 00:15  dip, then +10 from 1030
    (30, 5.0), (35, 15.0), (40, -3.0),             # 00:30  reset (+5), +10, negative
    (45, 25.0), (50, 100025.0), (55, 100035.0),    # 00:45  +10, spike (dropped), +10
]
EXPECTED = {  # interval start -> (energy kWh, samples, flags)
    at(0): (20.0, 3, []),
    at(15): (20.0, 3, ["dip"]),
    at(30): (15.0, 3, ["negative", "reset"]),
    at(45): (20.0, 3, ["spike"]),
}


def test_rollup_applies_counter_rules() -> None:
    samples = [energy.Sample(at(m), kwh) for m, kwh in SERIES]
    rollup = energy.rollup(None, samples, 15, max_power_kw=1000)
    assert {i.start: (i.energy_kwh, i.samples, sorted(i.flags)) for i in rollup} == \
        EXPECTED


def test_rollup_continues_from_baseline() -> None:
    rollup = energy.rollup(energy.Sample(at(-5), 990.0), [energy.Sample(at(0), 1000.0)], 15,
                           max_power_kw=1000)
    assert [(i.start, i.energy_kwh, i.samples) for i in rollup] == [(at(0), 10.0, 1)]


class App:
    def __init__(self, config: Path, root: Path, url: str) -> None:
        self.config, self.root, self.url = config, root, url

    def ingest(self, points: list[tuple[float, float]], meter: str = "m01") -> None:
        readings = [{"meter_id": meter, "ts": at(m).isoformat(), "kwh": kwh, "voltage": 230.0,
                     "current": 1.0, "power": 0.7} for m, kwh in points]
        status, body = http("POST", self.url + "/api/v1/ingest",
                            {"gateway_id": "gw", "readings": readings})
        assert status == 200 and body["committed"] == len(points)

    def aggregate(self) -> tuple[int, dict | None, str]:
        result = run_ems("aggregate", self.config, self.root)
        summary = json.loads(result.stdout) if result.stdout else None
        return result.returncode, summary, result.stderr

    def intervals(self, meter: str = "m01") -> dict[datetime, tuple[float, int, list[str]]]:
        status, rows = http("GET", self.url + f"/api/v1/aggregates?meter_id={meter}")
        assert status == 200
        assert all(row["interval_minutes"] == 15 for row in rows)
        return {datetime.fromisoformat(row["interval_start"]):
                (row["energy_kwh"], row["samples"], row["flags"]) for row in rows}

    def runs(self) -> list[dict]:
        status, runs = http("GET", self.url + "/api/v1/aggregate/runs?limit=10")
        assert status == 200
        return runs


@pytest.fixture
def app_for(tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
            release: Callable[[str], Path]) -> Callable[[str], App]:
    """A migrated database and a running platform of the given release."""

    def start(version: str) -> App:
        root, port = release(version), free_port()
        license_file = write_license(tmp_path / "l.json", version_line=version[:3],
                                     modules=["electricity", "water", "carbon"])
        config = write_config(tmp_path / "ems.conf", {
            "ems": {"state_dir": tmp_path, "license_file": license_file},
            "database": database.section(),
            "platform": {"listen": "127.0.0.1", "port": port},
            "aggregate": {"interval_minutes": 15},
        })
        assert run_ems("migrate", config, root).returncode == 0
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/health", ems("platform", config, root))
        return App(config, root, url)

    return start


@pytest.fixture
def app(app_for: Callable[[str], App]) -> App:
    return app_for("3.2.2")


def test_aggregate_rolls_up_with_reset_detection_and_records_run(app: App) -> None:
    app.ingest(SERIES)
    app.ingest([(0, 500.0), (5, 501.0)], meter="m02")
    rc, summary, _ = app.aggregate()
    assert rc == 0
    assert summary["status"] == "succeeded"
    assert summary["flags"] == {"dip": 1, "reset": 1, "negative": 1, "spike": 1}
    assert (summary["meters"], summary["readings"]) == (2, 14)
    assert app.intervals() == EXPECTED
    assert app.intervals("m02") == {at(0): (1.0, 2, [])}

    [run] = app.runs()
    assert run["id"] == summary["run_id"]
    assert run["status"] == "succeeded"
    assert run["finished_at"] >= run["started_at"]
    assert run["detail"]["flags"]["reset"] == 1


def test_aggregate_picks_up_late_readings(app: App) -> None:
    app.ingest(SERIES)
    assert app.aggregate()[0] == 0
    # Backlog arrives later: one reading inside an old interval, one in a new interval.
    app.ingest([(2.5, 1005.0), (60, 100045.0)])
    rc, summary, _ = app.aggregate()
    assert rc == 0
    intervals = app.intervals()
    assert intervals[at(0)] == (20.0, 4, [])
    assert intervals[at(60)] == (10.0, 1, [])
    assert intervals[at(45)] == EXPECTED[at(45)]
    assert [r["status"] for r in app.runs()] == ["succeeded", "succeeded"]


def test_failed_run_is_recorded_and_exits_nonzero(app: App, pg: PgServer,
                                                  database: Database) -> None:
    app.ingest(SERIES)
    pg.psql("ALTER TABLE aggregates RENAME TO aggregates_moved", database.name)
    rc, summary, stderr = app.aggregate()
    assert rc == 1
    assert summary["status"] == "failed"
    assert "aggregates" in summary["error"]
    [run] = app.runs()
    assert run["status"] == "failed" and run["finished_at"] is not None
    assert "aggregates" in run["detail"]["error"]
    assert "failed" in stderr


def test_unreachable_database_exits_nonzero(tmp_path: Path, release: Callable[[str], Path],
                                            database: Database) -> None:
    config = write_config(tmp_path / "ems.conf", {
        "database": {**database.section(), "port": free_port()}, "aggregate": {}})
    result = run_ems("aggregate", config, release("3.2.2"))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "could not run" in result.stderr


def test_carbon_module_only_in_3_3(app_for: Callable[[str], App]) -> None:
    app = app_for("3.3.0")
    assert http("GET", app.url + "/health")[0] == 200
    app.ingest(SERIES)
    assert app.aggregate()[0] == 0
    status, rows = http("GET", app.url + "/api/v1/carbon?meter_id=m01")
    assert status == 200
    assert rows == [{"meter_id": "m01", "energy_kwh": 75.0,
                     "kg_co2": pytest.approx(75.0 * 0.5703)}]


def test_a_module_the_license_lacks_stays_off(tmp_path: Path, database: Database,
                                              ems: Callable[..., EmsProcess],
                                              release: Callable[[str], Path]) -> None:
    root, port = release("3.3.0"), free_port()
    config = write_config(tmp_path / "ems.conf", {
        "ems": {"state_dir": tmp_path, "license_file": write_license(
            tmp_path / "l.json", version_line="3.3", modules=["electricity", "water"])},
        "database": database.section(),
        "platform": {"listen": "127.0.0.1", "port": port},
    })
    assert run_ems("migrate", config, root).returncode == 0
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", ems("platform", config, root))
    status, body = http("GET", url + "/health")
    assert status == 200 and body["modules"] == ["electricity", "water", "gas", "carbon", "pv"]
    assert body["enabled_modules"] == ["electricity", "water"]
    assert http("GET", url + "/api/v1/carbon")[0] == 404


def test_no_carbon_route_in_3_2(app: App) -> None:
    assert http("GET", app.url + "/api/v1/carbon")[0] == 404
