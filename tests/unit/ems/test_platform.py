"""Platform and migrations from the built release artifacts, against a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .helpers import (
    PYTHON,
    SRC,
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

RELEASE_32 = ["0001_readings.sql", "0002_aggregates.sql", "0003_readings_received_at.sql"]


def site_config(tmp_path: Path, database: Database, **license_fields: object) -> Path:
    """ems.conf for an app host, with a license for the 3.2 line unless overridden."""
    license_file = tmp_path / "license.json"
    if license_fields.get("missing"):
        license_file.unlink(missing_ok=True)
    else:
        write_license(license_file, **license_fields)
    return write_config(tmp_path / "ems.conf", {
        "ems": {"state_dir": tmp_path, "license_file": license_file, "log_level": "INFO"},
        "database": database.section(),
        "platform": {"listen": "127.0.0.1", "port": free_port()},
        "aggregate": {"interval_minutes": 15},
    })


def migrate(config: Path, root: Path) -> dict:
    result = run_ems("migrate", config, root)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def start_platform(ems: Callable[..., EmsProcess], config: Path, root: Path) -> str:
    port = int(config.read_text().split("[platform]")[1].split("port = ")[1].split()[0])
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", ems("platform", config, root))
    return url


def test_migrate_applies_once_and_is_idempotent(
        tmp_path: Path, database: Database, release: Callable[[str], Path]) -> None:
    config = site_config(tmp_path, database)
    assert migrate(config, release("3.2.2")) == {"applied": RELEASE_32, "schema_version": 3}
    assert migrate(config, release("3.2.2")) == {"applied": [], "schema_version": 3}


def test_migrate_upgrades_patch_and_minor(
        tmp_path: Path, database: Database, release: Callable[[str], Path]) -> None:
    config = site_config(tmp_path, database)
    assert migrate(config, release("3.2.0"))["schema_version"] == 2
    assert migrate(config, release("3.2.1")) == {"applied": ["0003_readings_received_at.sql"],
                                                 "schema_version": 3}
    assert migrate(config, release("3.3.0")) == {"applied": ["0004_carbon.sql"],
                                                 "schema_version": 4}


def test_concurrent_migrations_apply_each_file_once(
        tmp_path: Path, database: Database, pg: PgServer,
        release: Callable[[str], Path]) -> None:
    config = site_config(tmp_path, database)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate(config, release("3.3.0")), range(4)))
    applied = [name for result in results for name in result["applied"]]
    assert sorted(applied) == [*RELEASE_32, "0004_carbon.sql"]
    assert {result["schema_version"] for result in results} == {4}
    assert pg.psql("SELECT count(*) FROM schema_migrations", database.name).strip() == "4"


def test_failed_migration_leaves_no_trace(
        tmp_path: Path, database: Database, pg: PgServer,
        release: Callable[[str], Path]) -> None:
    config = site_config(tmp_path, database)
    migrate(config, release("3.2.2"))
    # Someone created the table 0004 wants: that migration must fail and roll back entirely.
    pg.psql("CREATE TABLE emission_factors (x int)", database.name)
    result = run_ems("migrate", config, release("3.3.0"))
    assert result.returncode == 1
    assert "emission_factors" in result.stderr
    assert pg.psql("SELECT max(version) FROM schema_migrations", database.name).strip() == "3"


def test_migrate_reports_unreachable_database(
        tmp_path: Path, database: Database, release: Callable[[str], Path]) -> None:
    wrong = Database(database.host, database.port, database.name, database.user, "Zx9-wrong")
    result = run_ems("migrate", site_config(tmp_path, wrong), release("3.2.2"))
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr
    assert "Zx9-wrong" not in result.stderr
    assert result.stdout == ""


def test_health_ok_reports_version_schema_license(
        tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
        release: Callable[[str], Path]) -> None:
    config = site_config(tmp_path, database, modules=["electricity", "water"])
    migrate(config, release("3.2.1"))
    url = start_platform(ems, config, release("3.2.1"))
    status, body = http("GET", url + "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["version"] == "3.2.1"
    assert body["schema_version"] == 3
    assert body["database"] == "ok"
    assert body["license"]["customer_id"] == "C-001"
    assert body["license"]["valid"] is True
    assert body["license"]["modules"] == ["electricity", "water"]


@pytest.mark.parametrize(("license_fields", "reason"), [
    ({"missing": True}, "not found"),
    ({"expires": "2020-01-01"}, "expired on 2020-01-01"),
    ({"version_line": "3.1"}, "version line 3.1"),
])
def test_health_503_for_bad_license(
        tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
        release: Callable[[str], Path], license_fields: dict, reason: str) -> None:
    config = site_config(tmp_path, database, **license_fields)
    migrate(config, release("3.2.2"))
    url = start_platform(ems, config, release("3.2.2"))
    status, body = http("GET", url + "/health")
    assert status == 503
    assert body["status"] == "error"
    assert body["license"]["valid"] is False
    assert reason in body["reason"]
    assert body["database"] == "ok"


def test_health_503_for_broken_release(
        tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
        release: Callable[[str], Path]) -> None:
    config = site_config(tmp_path, database)
    migrate(config, release("3.2.3"))
    url = start_platform(ems, config, release("3.2.3"))
    status, body = http("GET", url + "/health")
    assert status == 503
    assert body["status"] == "error"
    assert body["version"] == "3.2.3"
    assert body["license"]["valid"] is True and body["database"] == "ok"


def test_a_not_backward_compatible_migration_breaks_the_earlier_release(
        tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
        release: Callable[[str], Path]) -> None:
    """3.2.3's migration 0005 is what its manifest says: 3.2.2 on that schema stores nothing
    (which is why a rollback from 3.2.3 restores the database)."""
    config = site_config(tmp_path, database)
    assert migrate(config, release("3.2.3"))["applied"][-1] == "0005_readings_source.sql"
    url = start_platform(ems, config, release("3.2.2"))
    batch = {"gateway_id": "gw-test", "version": "3.2.2",
             "readings": [reading("m01", "2025-01-01T00:00:00Z", 100.0)]}
    status, body = http("POST", url + "/api/v1/ingest", batch)
    assert status >= 500 and "source" in json.dumps(body), (status, body)


def test_health_503_until_schema_is_migrated(
        tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
        release: Callable[[str], Path]) -> None:
    config = site_config(tmp_path, database, version_line="3.3")
    migrate(config, release("3.2.2"))
    url = start_platform(ems, config, release("3.3.0"))
    status, body = http("GET", url + "/health")
    assert status == 503
    assert "0004_carbon.sql" in body["database"]
    migrate(config, release("3.3.0"))
    assert http("GET", url + "/health")[0] == 200


def test_health_503_when_database_down(
        tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
        release: Callable[[str], Path]) -> None:
    dead = Database("127.0.0.1", free_port(), database.name, database.user, database.password)
    url = start_platform(ems, site_config(tmp_path, dead), release("3.2.2"))
    status, body = http("GET", url + "/health")
    assert status == 503
    assert body["database"].startswith("database unavailable")
    assert database.password not in json.dumps(body)


@pytest.fixture
def platform_url(tmp_path: Path, database: Database, ems: Callable[..., EmsProcess],
                 release: Callable[[str], Path]) -> str:
    config = site_config(tmp_path, database)
    migrate(config, release("3.2.2"))
    return start_platform(ems, config, release("3.2.2"))


def reading(meter_id: str, ts: str, kwh: float) -> dict:
    return {"meter_id": meter_id, "ts": ts, "kwh": kwh, "voltage": 230.0, "current": 10.0,
            "power": 6.9}


def test_ingest_is_idempotent_and_listed(platform_url: str) -> None:
    batch = {"gateway_id": "gw-test", "version": "3.2.2", "readings": [
        reading("m01", "2025-01-01T00:00:00Z", 100.0),
        reading("m01", "2025-01-01T00:15:00.250Z", 101.5),
        reading("m02", "2025-01-01T00:00:00+08:00", 7.0),
    ]}
    assert http("POST", platform_url + "/api/v1/ingest", batch) == (
        200, {"committed": 3, "inserted": 3})
    assert http("POST", platform_url + "/api/v1/ingest", batch) == (
        200, {"committed": 3, "inserted": 0})

    status, meters = http("GET", platform_url + "/api/v1/meters")
    assert status == 200
    assert [(m["meter_id"], m["readings"], m["last_ts"]) for m in meters] == [
        ("m01", 2, "2025-01-01T00:15:00.250Z"), ("m02", 1, "2024-12-31T16:00:00.000Z")]
    status, collectors = http("GET", platform_url + "/api/v1/collectors")
    assert [(c["gateway_id"], c["version"]) for c in collectors] == [("gw-test", "3.2.2")]
    assert collectors[0]["last_seen"].endswith("Z")

    status, rows = http("GET", platform_url + "/api/v1/readings?meter_id=m01"
                        "&since=2025-01-01T00:10:00Z&until=2025-01-02T00:00:00Z")
    assert status == 200
    assert [(r["ts"], r["kwh"]) for r in rows] == [("2025-01-01T00:15:00.250Z", 101.5)]
    status, rows = http("GET", platform_url + "/api/v1/readings?limit=1")
    assert len(rows) == 1 and rows[0]["meter_id"] == "m02"


@pytest.mark.parametrize(("body", "problem"), [
    ([], "JSON object"),
    ({"readings": []}, "gateway_id"),
    ({"gateway_id": "g", "readings": [{"meter_id": "m01", "ts": "2025-01-01T00:00:00",
                                       "kwh": 1, "voltage": 1, "current": 1, "power": 1}]},
     "UTC offset"),
    ({"gateway_id": "g", "readings": [reading("m01", "2025-01-01T00:00:00Z", float("nan"))]},
     "finite number"),
    ({"gateway_id": "g", "readings": [{"meter_id": "m01", "ts": "2025-01-01T00:00:00Z"}]},
     "kwh"),
])
def test_ingest_rejects_bad_batches_whole(platform_url: str, body: object, problem: str) -> None:
    if isinstance(body, dict) and body.get("readings"):
        body["readings"].insert(0, reading("m09", "2025-01-01T00:00:00Z", 1.0))
    status, answer = http("POST", platform_url + "/api/v1/ingest", body)
    assert status == 400
    assert problem in answer["error"]
    assert http("GET", platform_url + "/api/v1/meters") == (200, [])


def test_unknown_route_and_bad_limit(platform_url: str) -> None:
    assert http("GET", platform_url + "/api/v1/nothing")[0] == 404
    assert http("GET", platform_url + "/api/v1/ingest")[0] == 405
    assert http("GET", platform_url + "/api/v1/readings?limit=0")[0] == 400


def test_runs_entry_point_without_psycopg2_for_db_free_modules() -> None:
    # meter_sim, meter_ctl and modbus must import on a host without python3-psycopg2.
    code = ("import sys; sys.modules['psycopg2'] = None\n"
            "import kangpai_ems.meter_sim, kangpai_ems.meter_ctl, kangpai_ems.collector")
    result = subprocess.run([PYTHON, "-c", code], env={"PYTHONPATH": str(SRC)},
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
