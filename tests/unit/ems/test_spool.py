"""The gateway's spool: waiting readings, confirmed history, replay after a database restore."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from kangpai_ems.spool import Spool


def add(spool: Spool, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        spool.add(f"m{i % 2}", f"2026-01-01T00:00:{i:02d}.000Z", time.time(), i, 230, 1, 0.2)


def test_confirmed_readings_stop_waiting_but_stay_as_history(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", history_s=3600)
    add(spool, 5)
    spool.confirm(spool.oldest(3))
    assert [r.kwh for r in spool.oldest(10)] == [3, 4]
    assert spool.backlog()[0] == 2
    assert spool.history()[0] == 3


def test_without_history_a_confirmed_reading_is_forgotten(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", history_s=0)
    add(spool, 3)
    spool.confirm(spool.oldest(3))
    with sqlite3.connect(tmp_path / "spool.db") as db:
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] == 0


def test_replay_sends_again_what_was_confirmed_since_in_reading_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", history_s=3600)
    add(spool, 2)
    spool.confirm(spool.oldest(2))
    since = time.time()
    add(spool, 3, start=2)
    spool.confirm(spool.oldest(3))
    add(spool, 1, start=5)  # still waiting: stays waiting, once

    assert spool.replay(since) == 3
    assert [r.kwh for r in spool.oldest(10)] == [2, 3, 4, 5]
    _kept, whole_since = spool.history()
    assert whole_since <= since


def test_forgetting_old_history_moves_its_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", history_s=0.2)
    add(spool, 2)
    spool.confirm(spool.oldest(2))
    time.sleep(0.3)
    add(spool, 1, start=2)
    spool.confirm(spool.oldest(1))  # forgets the first two
    kept, whole_since = spool.history()
    assert kept == 1
    assert whole_since > time.time() - 0.3


def test_a_spool_from_before_history_keeps_its_waiting_readings(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, meter_id TEXT"
                   " NOT NULL, ts TEXT NOT NULL, read_at REAL NOT NULL, kwh REAL NOT NULL,"
                   " voltage REAL NOT NULL, current REAL NOT NULL, power REAL NOT NULL)")
        db.execute("INSERT INTO readings (meter_id, ts, read_at, kwh, voltage, current, power)"
                   " VALUES ('m1', '2026-01-01T00:00:00.000Z', 1, 7, 230, 1, 0.2)")
    spool = Spool(path, history_s=3600)
    assert [r.kwh for r in spool.oldest(10)] == [7]
    assert spool.backlog()[0] == 1
