"""One aggregation run (started by ems-aggregate.timer): interval energy per meter into
`aggregates`, recorded in `job_runs`. Exit status 0 when the run succeeded, 1 when it failed.

Incremental: it recomputes the intervals touched by readings received since the last successful
run (minus a margin for ingest transactions still open then), so late backlog is included.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from . import config, db, energy, service
from .timeutil import iso

log = logging.getLogger("kangpai_ems.aggregate")

LOCK_KEY = 0x4B454D41  # "KEMA": one aggregation at a time per database
MARGIN = timedelta(minutes=5)


def aggregate(cur: Any, settings: config.AggregateSection) -> dict[str, object]:
    """Recompute the affected intervals inside the caller's transaction; a summary."""
    minutes = settings.interval_minutes
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
    cur.execute("SELECT max(started_at) FROM job_runs WHERE job = 'aggregate'"
                " AND status = 'succeeded' AND (detail->>'interval_minutes')::int = %s",
                (minutes,))
    last: datetime | None = cur.fetchone()[0]
    since = None if last is None else last - MARGIN
    cur.execute("SELECT meter_id, min(ts) FROM readings"
                " WHERE %(since)s::timestamptz IS NULL OR received_at >= %(since)s"
                " GROUP BY meter_id ORDER BY meter_id", {"since": since})
    flags = {"dip": 0, "reset": 0, "spike": 0, "negative": 0}
    intervals = readings = 0
    affected = cur.fetchall()
    for meter_id, first_ts in affected:
        start = energy.interval_start(first_ts, minutes)
        cur.execute("SELECT ts, kwh FROM readings WHERE meter_id = %s AND ts < %s"
                    " AND kwh >= 0 ORDER BY ts DESC LIMIT 1", (meter_id, start))
        row = cur.fetchone()
        baseline = energy.Sample(*row) if row else None
        cur.execute("SELECT ts, kwh FROM readings WHERE meter_id = %s AND ts >= %s"
                    " ORDER BY ts", (meter_id, start))
        samples = [energy.Sample(ts, kwh) for ts, kwh in cur.fetchall()]
        rollup = energy.rollup(baseline, samples, minutes, settings.max_power_kw)
        cur.executemany(
            "INSERT INTO aggregates (meter_id, interval_minutes, interval_start, energy_kwh,"
            " samples, flags) VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (meter_id, interval_minutes, interval_start) DO UPDATE SET"
            " energy_kwh = EXCLUDED.energy_kwh, samples = EXCLUDED.samples,"
            " flags = EXCLUDED.flags, computed_at = now()",
            [(meter_id, minutes, i.start, i.energy_kwh, i.samples, sorted(i.flags))
             for i in rollup])
        for interval in rollup:
            for flag in interval.flags:
                flags[flag] += 1
                level = logging.ERROR if flag == "negative" else logging.WARNING
                log.log(level, "meter %s interval %s: %s", meter_id, iso(interval.start), flag)
        intervals += len(rollup)
        readings += len(samples)
    return {"interval_minutes": minutes, "since": iso(since), "meters": len(affected),
            "intervals": intervals, "readings": readings, "flags": flags}


def run(cfg: config.Config) -> tuple[int, str, dict[str, object]]:
    """(run id, status, detail); raises only if the run cannot even be recorded."""
    settings = cfg.aggregate
    conn = db.connect(cfg.database, "kangpai-ems-aggregate")
    try:
        with conn, conn.cursor() as cur:  # recorded at once, so a crashed run stays visible
            cur.execute("INSERT INTO job_runs (job, status) VALUES ('aggregate', 'running')"
                        " RETURNING id")
            run_id = cur.fetchone()[0]
        try:
            with conn, conn.cursor() as cur:
                detail, status = aggregate(cur, settings), "succeeded"
        except db.db_errors() as exc:
            detail = {"interval_minutes": settings.interval_minutes,
                      "error": f"{type(exc).__name__}: {str(exc).strip()}"}
            status = "failed"
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE job_runs SET status = %s, detail = %s,"
                        " finished_at = clock_timestamp() WHERE id = %s",
                        (status, json.dumps(detail), run_id))
    finally:
        conn.close()
    return run_id, status, detail


def main(argv: Sequence[str] | None = None) -> int:
    cfg = service.parse_config("Run the interval aggregation once.",
                               ("database", "aggregate"), argv)
    try:
        run_id, status, detail = run(cfg)
    except db.db_errors() as exc:
        log.error("aggregation could not run: %s", str(exc).strip())
        return 1
    if status == "failed":
        log.error("run %d failed: %s", run_id, detail.get("error"))
    else:
        log.info("run %d: %d intervals of %d meters from %d readings", run_id,
                 detail["intervals"], detail["meters"], detail["readings"])
    print(json.dumps({"run_id": run_id, "status": status, **detail}, sort_keys=True))
    sys.stdout.flush()
    return 0 if status == "succeeded" else 1


if __name__ == "__main__":
    raise SystemExit(main())
