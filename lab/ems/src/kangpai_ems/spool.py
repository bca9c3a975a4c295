"""The gateway's store-and-forward spool: a durable SQLite queue of readings, oldest first.

A reading waits until the platform confirms its database commit. After that it stays for
`history_s` as history, so that a platform whose database came back from an older backup can
be sent everything it confirmed since (`replay`): the platform ignores readings it already has.
"""

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
    power REAL NOT NULL,
    confirmed_at REAL                      -- epoch seconds of the platform's confirmation;
                                           -- NULL while the reading waits to be sent
)
"""
# Spools written before history was kept have no confirmed_at: every row of theirs is waiting.
_ADD_CONFIRMED_AT = "ALTER TABLE readings ADD COLUMN confirmed_at REAL"
# How far back the history is whole: the spool's creation, then the horizon of each forgetting.
_META = "CREATE TABLE IF NOT EXISTS spool_meta (key TEXT PRIMARY KEY, value REAL NOT NULL)"
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS readings_waiting ON readings (id) WHERE confirmed_at IS NULL",
    "CREATE INDEX IF NOT EXISTS readings_confirmed ON readings (confirmed_at)"
    " WHERE confirmed_at IS NOT NULL",
)


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
    """Every change is committed (and fsynced) before it returns. Safe across threads, and
    across processes (the collector, and `kangpai_ems.replay` run by an engineer)."""

    def __init__(self, path: Path, history_s: float = 0.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.history_s = history_s
        # isolation_level=None: every statement outside an explicit BEGIN commits at once.
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None,
                                   timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(readings)")}
            if "confirmed_at" not in columns:
                self._db.execute(_ADD_CONFIRMED_AT)
            for index in _INDEXES:
                self._db.execute(index)
            self._db.execute(_META)
            self._db.execute("INSERT OR IGNORE INTO spool_meta VALUES ('history_whole_since', ?)",
                             (time.time(),))

    def add(self, meter_id: str, ts: str, read_at: float, kwh: float, voltage: float,
            current: float, power: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO readings (meter_id, ts, read_at, kwh, voltage, current, power)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (meter_id, ts, read_at, kwh, voltage, current, power))

    def oldest(self, limit: int) -> list[SpooledReading]:
        """The readings waiting longest, in the order they were read."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, meter_id, ts, kwh, voltage, current, power FROM readings"
                " WHERE confirmed_at IS NULL ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [SpooledReading(*row) for row in rows]

    def confirm(self, readings: list[SpooledReading]) -> None:
        """The platform committed these: keep them as history (or forget them when none is
        kept), and forget the history older than `history_s`."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self.history_s > 0:
                    self._db.executemany("UPDATE readings SET confirmed_at = ? WHERE id = ?",
                                         [(now, r.id) for r in readings])
                else:
                    self._db.executemany("DELETE FROM readings WHERE id = ?",
                                         [(r.id,) for r in readings])
                horizon = now - self.history_s
                self._db.execute("DELETE FROM readings WHERE confirmed_at < ?", (horizon,))
                self._db.execute("UPDATE spool_meta SET value = max(value, ?)"
                                 " WHERE key = 'history_whole_since'", (horizon,))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def replay(self, since: float) -> int:
        """Send again every reading the platform confirmed at or after `since` (epoch seconds).
        Returns how many readings wait again."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE readings SET confirmed_at = NULL WHERE confirmed_at >= ?", (since,))
            return cursor.rowcount

    def backlog(self) -> tuple[int, float | None]:
        """(number of readings waiting, age in seconds of the oldest, or None when empty)."""
        with self._lock:
            count, oldest = self._db.execute(
                "SELECT count(*), min(read_at) FROM readings WHERE confirmed_at IS NULL"
            ).fetchone()
        return count, (None if oldest is None else max(0.0, time.time() - oldest))

    def history(self) -> tuple[int, float]:
        """(confirmed readings kept, epoch seconds since which every confirmed reading is
        kept): `replay(since)` sends everything only when that moment is not after `since`."""
        with self._lock:
            kept = self._db.execute(
                "SELECT count(*) FROM readings WHERE confirmed_at IS NOT NULL").fetchone()[0]
            whole_since = self._db.execute(
                "SELECT value FROM spool_meta WHERE key = 'history_whole_since'").fetchone()[0]
        return kept, whole_since

    def close(self) -> None:
        with self._lock:
            self._db.close()
