"""ems-backup-sqlite: the consistent copy restic backs up instead of a live SQLite database.

Runs the installed script with Debian's python3, as the hosts do, against real SQLite files.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles/ems_backup/files/ems-backup-sqlite"


def copy_of(db: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/bin/python3", str(SCRIPT), str(db)], capture_output=True,
                          check=False)


def rows(data: bytes, tmp_path: Path) -> list[int]:
    path = tmp_path / "copy.db"
    path.write_bytes(data)
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT n FROM readings ORDER BY n")]


@pytest.fixture
def spool(tmp_path: Path):
    """A live spool as the collector keeps it: WAL mode, open, rows not yet checkpointed."""
    path = tmp_path / "live" / "spool.db"
    path.parent.mkdir()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE readings (n INTEGER)")
    db.executemany("INSERT INTO readings VALUES (?)", [(n,) for n in range(100)])
    yield path, db
    db.close()


def test_copy_holds_the_rows_still_in_the_write_ahead_log(spool, tmp_path):
    path, _db = spool
    # What copying the database file alone gives: the rows live only in the -wal file.
    alone = tmp_path / "alone.db"
    shutil.copy(path, alone)
    with sqlite3.connect(alone) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

    proc = copy_of(path)
    assert proc.returncode == 0, proc.stderr
    assert rows(proc.stdout, tmp_path) == list(range(100))


def test_copy_leaves_out_a_transaction_still_open(spool, tmp_path):
    path, db = spool
    db.execute("BEGIN")
    db.execute("INSERT INTO readings VALUES (100)")
    proc = copy_of(path)
    db.execute("COMMIT")
    assert proc.returncode == 0, proc.stderr
    assert rows(proc.stdout, tmp_path) == list(range(100))


def test_a_damaged_database_fails_and_writes_nothing(tmp_path):
    path = tmp_path / "spool.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE readings (n INTEGER)")
        db.executemany("INSERT INTO readings VALUES (?)", [(n,) for n in range(5000)])
    data = bytearray(path.read_bytes())
    data[4096 * 2:4096 * 2 + 64] = b"\xff" * 64  # scribble over a table page
    path.write_bytes(bytes(data))

    proc = copy_of(path)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert str(path).encode() in proc.stderr


def test_a_missing_database_fails_and_is_not_created(tmp_path):
    path = tmp_path / "spool.db"
    proc = copy_of(path)
    assert proc.returncode == 1 and proc.stdout == b""
    assert not path.exists()
