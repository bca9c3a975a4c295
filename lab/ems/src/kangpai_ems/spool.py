"""The gateway's store-and-forward spool: a durable SQLite queue of readings, oldest first."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: the forwarding order
    meter_id TEXT NOT NULL,
    ts TEXT NOT NULL,                      -- ISO 8601 UTC, as sent to the platform
    read_at REAL NOT NULL,                 -- epoch seconds, for the backlog age
    kwh REAL NOT NULL,
    voltage REAL NOT NULL,
    current REAL NOT NULL,
    power REAL NOT NULL
)
"""


@dataclass(frozen=True)
class SpooledReading:
    id: int
    meter_id: str
    ts: str
    kwh: float
    voltage: float
    current: float
    power: float

    def as_payload(self) -> dict[str, object]:
        return {"meter_id": self.meter_id, "ts": self.ts, "kwh": self.kwh,
                "voltage": self.voltage, "current": self.current, "power": self.power}


class Spool:
    """Every `add` is committed (and fsynced) before it returns. Safe across threads."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: every statement outside an explicit BEGIN commits at once.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)

    def add(self, meter_id: str, ts: str, read_at: float, kwh: float, voltage: float,
            current: float, power: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO readings (meter_id, ts, read_at, kwh, voltage, current, power)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (meter_id, ts, read_at, kwh, voltage, current, power))

    def oldest(self, limit: int) -> list[SpooledReading]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, meter_id, ts, kwh, voltage, current, power FROM readings"
                " ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [SpooledReading(*row) for row in rows]

    def remove(self, readings: list[SpooledReading]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM readings WHERE id = ?",
                                     [(r.id,) for r in readings])
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def backlog(self) -> tuple[int, float | None]:
        """(number of readings waiting, age in seconds of the oldest, or None when empty)."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT count(*), min(read_at) FROM readings").fetchone()
        return count, (None if oldest is None else max(0.0, time.time() - oldest))

    def close(self) -> None:
        with self._lock:
            self._db.close()
