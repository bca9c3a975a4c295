"""The EMS platform (application server): ingest from gateways, the read API, and /health, which
checks the license, the database and that the schema carries every migration of this release."""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from . import config, db, filters, httpjson, license, service
from ._release import DEFECT, MODULES, VERSION
from .httpjson import HttpError, Request, Response
from .timeutil import iso

log = logging.getLogger("kangpai_ems.platform")

_MEASURES = ("kwh", "voltage", "current", "power")


class Platform:
    def __init__(self, cfg: config.Config) -> None:
        self.database = cfg.database
        self.license_file = cfg.ems.license_file
        self.migrations = db.release_migrations()
        # Only the release's modules the license covers run (a module the release ships but the
        # customer did not buy stays off); decided at start, like the routes.
        licensed = license.check(self.license_file, VERSION).modules
        self.enabled_modules = [m for m in MODULES if m in licensed]

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for one request; HTTP 503 when the database is unreachable."""
        try:
            conn = db.connect(self.database, "kangpai-ems-platform")
        except db.db_errors() as exc:
            raise HttpError(503, f"database unavailable: {str(exc).strip()}") from None
        try:
            with conn:  # one transaction, committed when the block succeeds
                yield conn
        finally:
            conn.close()

    def routes(self) -> httpjson.Routes:
        routes: httpjson.Routes = {
            ("GET", "/health"): self.health,
            ("POST", "/api/v1/ingest"): self.ingest,
            ("GET", "/api/v1/meters"): self.meters,
            ("GET", "/api/v1/collectors"): self.collectors,
            ("GET", "/api/v1/readings"): self.readings,
            ("GET", "/api/v1/aggregates"): self.aggregates,
            ("GET", "/api/v1/aggregate/runs"): self.aggregate_runs,
        }
        for module in self.enabled_modules:
            try:
                feature = importlib.import_module(f"{__package__}.modules.{module}")
            except ModuleNotFoundError:
                continue  # a module without platform code of its own
            routes.update(feature.routes(self))
        return routes

    def check_database(self) -> tuple[str, int | None]:
        """("ok" or the problem, schema version or None)."""
        try:
            with self.connection() as conn, conn.cursor() as cur:
                applied = db.applied_migrations(cur)
        except HttpError as exc:
            return exc.message, None
        except db.db_errors() as exc:
            return f"schema check failed: {str(exc).strip()}", None
        version = max(applied, default=0)
        missing = [m.name for m in self.migrations if applied.get(m.version) != m.name]
        if missing:
            return (f"schema version {version} lacks this release's migrations "
                    f"{', '.join(missing)}: run kangpai_ems.migrate"), version
        return "ok", version

    def health(self, _request: Request) -> Response:
        lic = license.check(self.license_file, VERSION)
        database, schema_version = self.check_database()
        problems = []
        if not lic.valid:
            problems.append(f"license: {lic.reason}")
        if database != "ok":
            problems.append(f"database: {database}")
        if DEFECT:
            problems.append(f"self-test: {DEFECT}")
        body = {"status": "error" if problems else "ok", "version": VERSION,
                "schema_version": schema_version, "database": database,
                "license": lic.as_dict(), "modules": list(MODULES),
                "enabled_modules": self.enabled_modules}
        if problems:
            body["reason"] = "; ".join(problems)
        return Response(503 if problems else 200, body)

    def ingest(self, request: Request) -> Response:
        gateway_id, version, rows = _parse_ingest(request.json())
        columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(6)]
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO gateways (gateway_id, version, address, last_seen)"
                " VALUES (%s, %s, %s, now()) ON CONFLICT (gateway_id) DO UPDATE SET"
                " version = EXCLUDED.version, address = EXCLUDED.address,"
                " last_seen = EXCLUDED.last_seen",
                (gateway_id, version, request.client))
            cur.execute(
                "INSERT INTO readings (meter_id, ts, kwh, voltage, current, power, gateway_id)"
                " SELECT m, t, k, v, c, p, %s FROM unnest(%s::text[], %s::timestamptz[],"
                " %s::float8[], %s::float8[], %s::float8[], %s::float8[]) AS u(m, t, k, v, c, p)"
                " ON CONFLICT (meter_id, ts) DO NOTHING",
                (gateway_id, *[list(column) for column in columns]))
            inserted = cur.rowcount
        # Leaving the block committed the transaction: only now may the gateway forget them.
        return Response(200, {"committed": len(rows), "inserted": inserted})

    def meters(self, _request: Request) -> Response:
        rows = self.fetch(
            "SELECT meter_id, count(*), max(ts), max(received_at) FROM readings"
            " GROUP BY meter_id ORDER BY meter_id")
        return Response(200, [{"meter_id": m, "readings": n, "last_ts": iso(ts),
                               "last_received_at": iso(received)}
                              for m, n, ts, received in rows])

    def collectors(self, _request: Request) -> Response:
        rows = self.fetch("SELECT gateway_id, last_seen, version, address FROM gateways"
                           " ORDER BY gateway_id")
        return Response(200, [{"gateway_id": g, "last_seen": iso(seen), "version": v,
                               "address": a} for g, seen, v, a in rows])

    def readings(self, request: Request) -> Response:
        where, params = filters.where(request, "ts")
        limit = request.int_arg("limit", 1000, 100_000)
        rows = self.fetch(
            "SELECT meter_id, ts, kwh, voltage, current, power, gateway_id, received_at"
            f" FROM readings {where} ORDER BY ts, meter_id LIMIT %s", (*params, limit))
        return Response(200, [
            {"meter_id": m, "ts": iso(ts), "kwh": k, "voltage": v, "current": c, "power": p,
             "gateway_id": g, "received_at": iso(r)} for m, ts, k, v, c, p, g, r in rows])

    def aggregates(self, request: Request) -> Response:
        where, params = filters.where(request, "interval_start")
        limit = request.int_arg("limit", 1000, 100_000)
        rows = self.fetch(
            "SELECT meter_id, interval_start, interval_minutes, energy_kwh, samples, flags"
            f" FROM aggregates {where} ORDER BY interval_start, meter_id LIMIT %s",
            (*params, limit))
        return Response(200, [
            {"meter_id": m, "interval_start": iso(start), "interval_minutes": minutes,
             "energy_kwh": energy, "samples": samples, "flags": flags}
            for m, start, minutes, energy, samples, flags in rows])

    def aggregate_runs(self, request: Request) -> Response:
        limit = request.int_arg("limit", 20, 1000)
        rows = self.fetch("SELECT id, job, started_at, finished_at, status, detail"
                           " FROM job_runs WHERE job = 'aggregate' ORDER BY id DESC LIMIT %s",
                           (limit,))
        return Response(200, [
            {"id": i, "job": job, "started_at": iso(s), "finished_at": iso(f), "status": st,
             "detail": detail} for i, job, s, f, st, detail in rows])

    def fetch(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        with self.connection() as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


def _parse_ingest(data: object) -> tuple[str, str | None, list[tuple]]:
    if not isinstance(data, dict):
        raise HttpError(400, "body must be a JSON object")
    gateway_id, version, readings = data.get("gateway_id"), data.get("version"), \
        data.get("readings")
    if not isinstance(gateway_id, str) or not gateway_id:
        raise HttpError(400, "gateway_id must be a non-empty string")
    if version is not None and not isinstance(version, str):
        raise HttpError(400, "version must be a string")
    if not isinstance(readings, list):
        raise HttpError(400, "readings must be a list")
    rows = []
    for index, reading in enumerate(readings):
        where = f"readings[{index}]"
        if not isinstance(reading, dict):
            raise HttpError(400, f"{where} must be an object")
        meter_id = reading.get("meter_id")
        if not isinstance(meter_id, str) or not meter_id:
            raise HttpError(400, f"{where}.meter_id must be a non-empty string")
        values = []
        for name in _MEASURES:
            value = reading.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not math.isfinite(value):
                raise HttpError(400, f"{where}.{name} must be a finite number")
            values.append(float(value))
        rows.append((meter_id, filters.timestamp(reading.get("ts"), f"{where}.ts"), *values))
    return gateway_id, version, rows


def main(argv: Sequence[str] | None = None) -> int:
    cfg = service.parse_config("Kangpai EMS platform (application server).",
                               ("database", "platform"), argv)
    settings = cfg.platform
    try:
        platform = Platform(cfg)
    except ValueError as exc:  # a misnamed migration file in the release
        log.error("%s", exc)
        return 1
    lic = license.check(platform.license_file, VERSION)
    if not lic.valid:
        log.error("license problem, /health reports error until fixed: %s", lic.reason)
    database, schema_version = platform.check_database()
    if database != "ok":
        log.error("database problem, /health reports error until fixed: %s", database)
    if DEFECT:
        log.error("self-test failed: %s", DEFECT)
    stop = service.stop_event()
    try:
        server = httpjson.start(settings.listen, settings.port, platform.routes())
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.listen, settings.port, exc)
        return 1
    log.info("platform %s (schema %s, modules %s, enabled %s) listening on %s:%d", VERSION,
             schema_version, ",".join(MODULES), ",".join(platform.enabled_modules),
             settings.listen, settings.port)
    stop.wait()
    server.shutdown()
    server.server_close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
