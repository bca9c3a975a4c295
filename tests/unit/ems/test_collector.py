"""Meter simulator -> collector -> platform -> PostgreSQL, all real processes from the release.

Store and forward: while the platform is down readings spool on the gateway; afterwards every
reading arrives exactly once, in order."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kangpai_ems.timeutil import iso

from .helpers import (
    PYTHON,
    Database,
    EmsProcess,
    PgServer,
    free_port,
    http,
    run_ems,
    wait_http,
    wait_until,
    write_config,
    write_license,
)

METERS = ("m01", "m02", "m03")
VERSION = "3.2.2"


@dataclass
class Site:
    root: Path
    config: Path
    platform_url: str
    status_url: str
    sim_port: int
    spool: Path
    ems: Callable[..., EmsProcess]
    platform: EmsProcess | None = None
    collector: EmsProcess | None = None
    sim: EmsProcess | None = None

    def start_platform(self) -> None:
        self.platform = self.ems("platform", self.config, self.root)
        wait_http(self.platform_url + "/health", self.platform)

    def start_collector(self) -> None:
        self.collector = self.ems("collector", self.config, self.root)
        wait_http(self.status_url + "/health", self.collector)

    def health(self) -> dict:
        status, body = http("GET", self.status_url + "/health")
        assert status == 200
        return body

    def platform_counts(self) -> dict[str, int]:
        status, meters = http("GET", self.platform_url + "/api/v1/meters")
        assert status == 200
        return {m["meter_id"]: m["readings"] for m in meters}

    def meter_ctl(self, unit: int, mode: str) -> None:
        subprocess.run([PYTHON, "-m", "kangpai_ems.meter_ctl", "--host", "127.0.0.1",
                        "--port", str(self.sim_port), "--unit", str(unit), "--mode", mode],
                       check=True, capture_output=True, env={"PYTHONPATH": str(self.root)})


@pytest.fixture
def site(tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
         release: Callable[[str], Path]) -> Site:
    root = release(VERSION)
    platform_port, status_port, sim_port = free_port(), free_port(), free_port()
    spool = tmp_path / "state" / "spool.db"
    config = write_config(tmp_path / "ems.conf", {
        "ems": {"state_dir": tmp_path / "state",
                "license_file": write_license(tmp_path / "license.json"),
                "log_level": "INFO"},
        "database": database.section(),
        "platform": {"listen": "127.0.0.1", "port": platform_port},
        "collector": {"gateway_id": "gw-test", "platform_url": f"http://127.0.0.1:{platform_port}",
                      "poll_interval_s": 0.4, "timeout_s": 0.3, "retries": 1,
                      "forward_interval_s": 0.2, "forward_batch": 4,
                      "status_listen": "127.0.0.1", "status_port": status_port,
                      "spool_path": spool},
        "meters": {meter: f"127.0.0.1:{sim_port}:{unit}"
                   for unit, meter in enumerate(METERS, start=1)},
        "meter_sim": {"listen": "127.0.0.1", "port": sim_port, "meters": len(METERS),
                      "state_path": tmp_path / "state" / "meter-sim.json"},
    })
    assert run_ems("migrate", config, root).returncode == 0
    result = Site(root, config, f"http://127.0.0.1:{platform_port}",
                  f"http://127.0.0.1:{status_port}", sim_port, spool, ems)
    result.sim = ems("meter_sim", config, root)
    return result


def spooled(spool: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(spool) as db:
        return db.execute("SELECT meter_id, ts FROM readings WHERE confirmed_at IS NULL"
                          " ORDER BY id").fetchall()


def test_readings_flow_to_the_platform(site: Site) -> None:
    site.start_platform()
    site.start_collector()
    counts = wait_until(lambda: all(site.platform_counts().get(m, 0) >= 2 for m in METERS)
                        and site.platform_counts(), 20, "readings of every meter")
    assert set(counts) == set(METERS)
    status, rows = http("GET", site.platform_url + "/api/v1/readings?meter_id=m02")
    assert status == 200
    assert all(r["gateway_id"] == "gw-test" and r["kwh"] > 0 and r["ts"].endswith("Z")
               for r in rows)
    health = site.health()
    assert health["status"] == "ok" and health["version"] == VERSION
    assert health["gateway_id"] == "gw-test"
    assert health["last_forward_ok"] is not None
    assert all(health["meters"][m]["last_good_read"] for m in METERS)
    status, collectors = http("GET", site.platform_url + "/api/v1/collectors")
    assert [(c["gateway_id"], c["version"]) for c in collectors] == [("gw-test", VERSION)]


def test_platform_outage_spools_then_every_reading_arrives_once(site: Site) -> None:
    site.start_platform()
    site.start_collector()
    wait_until(lambda: site.platform_counts().get("m03", 0) >= 1, 20, "first readings")

    assert site.platform.stop() == 0
    backlog = wait_until(lambda: site.health()["backlog"]["size"] >= 3 * len(METERS)
                         and site.health()["backlog"], 20, "readings to pile up in the spool")
    assert backlog["oldest_age_s"] > 0
    assert site.health()["last_forward_error"]

    site.start_platform()
    wait_until(lambda: site.health()["backlog"]["size"] == 0, 30, "the backlog to drain")

    # Freeze the meters' side: with the simulator gone no new reading can appear.
    assert site.sim.stop() == 0
    wait_until(lambda: site.health()["backlog"]["size"] == 0
               and all(m["errors"] > 0 for m in site.health()["meters"].values()),
               20, "the last reads to be forwarded and reads to fail")
    reads = {meter: stats["reads"] for meter, stats in site.health()["meters"].items()}
    assert site.platform_counts() == reads

    # In order: per meter, readings were received in the order they were taken.
    for meter in METERS:
        status, rows = http("GET", site.platform_url + f"/api/v1/readings?meter_id={meter}")
        received = [r["received_at"] for r in rows]
        assert received == sorted(received)
    assert site.collector.stop() == 0


def test_spool_survives_collector_restart(site: Site) -> None:
    site.start_collector()  # platform not running yet
    wait_until(lambda: site.health()["backlog"]["size"] >= 2 * len(METERS), 20,
               "readings to spool")
    assert site.collector.stop() == 0
    waiting = spooled(site.spool)
    assert len(waiting) >= 2 * len(METERS)

    site.start_platform()
    site.start_collector()
    wait_until(lambda: spooled(site.spool) == [], 30, "the old spool to drain")
    status, rows = http("GET", site.platform_url + "/api/v1/readings?limit=100000")
    arrived = {(r["meter_id"], r["ts"]) for r in rows}
    assert set(waiting) <= arrived


def test_offline_meter_counts_errors_and_recovers(site: Site) -> None:
    site.start_platform()
    site.start_collector()
    wait_until(lambda: site.health()["meters"]["m02"]["reads"] >= 1, 20, "a first read")
    site.meter_ctl(2, "offline")
    wait_until(lambda: site.health()["meters"]["m02"]["errors"] >= 2, 20, "read errors")
    before = site.health()["meters"]
    wait_until(lambda: site.health()["meters"]["m01"]["reads"] > before["m01"]["reads"] + 1,
               20, "other meters to keep reading")
    assert site.health()["meters"]["m02"]["reads"] == before["m02"]["reads"]

    status, metrics = http("GET", site.status_url + "/metrics")
    assert status == 200
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines()
                   if line and not line.startswith("#"))
    errors = float(samples['kangpai_collector_read_errors_total{gateway="gw-test",meter="m02"}'])
    assert errors >= 2
    assert 'kangpai_collector_backlog_size{gateway="gw-test"}' in samples
    assert 'kangpai_collector_backlog_oldest_age_seconds{gateway="gw-test"}' in samples

    site.meter_ctl(2, "normal")
    wait_until(lambda: site.health()["meters"]["m02"]["reads"] > before["m02"]["reads"], 20,
               "reads to resume")


def test_replay_sends_again_what_a_restored_database_lost(site: Site, pg: PgServer,
                                                          database: Database) -> None:
    site.start_platform()
    site.start_collector()
    wait_until(lambda: all(site.platform_counts().get(m, 0) >= 2 for m in METERS), 20,
               "readings of every meter")
    since = datetime.now(UTC)
    wait_until(lambda: all(site.platform_counts().get(m, 0) >= 5 for m in METERS), 20,
               "more readings after the backup moment")
    assert site.sim.stop() == 0  # no new readings: what the platform should have is fixed
    wait_until(lambda: site.health()["backlog"]["size"] == 0, 20, "the last reads to arrive")
    had = site.platform_counts()

    # The database comes back from a backup taken at `since`: what came later is gone.
    lost = pg.psql(f"WITH gone AS (DELETE FROM readings WHERE received_at >= '{iso(since)}'"
                   " RETURNING 1) SELECT count(*) FROM gone", database.name)
    assert int(lost) >= 3 * len(METERS)
    assert site.platform_counts() != had

    proc = run_ems("replay", site.config, site.root, "--since", iso(since))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["complete"] is True and result["replayed"] >= 3 * len(METERS)
    wait_until(lambda: site.platform_counts() == had, 30, "the replayed readings to arrive")
    assert site.health()["history"]["size"] >= sum(had.values())


def test_replay_says_when_the_history_does_not_reach_back(site: Site) -> None:
    site.start_platform()
    site.start_collector()
    wait_until(lambda: site.platform_counts().get("m01", 0) >= 1, 20, "first readings")
    proc = run_ems("replay", site.config, site.root, "--since", "2020-01-01T00:00:00Z")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["complete"] is False
    assert result["history_whole_since"] > "2020-01-01"


def test_replay_refuses_a_time_without_offset(site: Site) -> None:
    proc = run_ems("replay", site.config, site.root, "--since", "2026-01-01T00:00:00")
    assert proc.returncode == 2
    assert "--since" in proc.stderr
