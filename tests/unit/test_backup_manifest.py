"""ems-backup-manifest: a dump and its manifest from one snapshot, and the restore's proof.

Runs the installed script with Debian's python3 against a real PostgreSQL cluster, as root (the
script runs PostgreSQL's tools as `postgres`, as on the hosts).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest

from tests.support.pgserver import PgServer

SCRIPT = Path(__file__).resolve().parents[2] / "roles/ems_backup/files/ems-backup-manifest"
SCHEMA = """
CREATE TABLE readings (meter_id text, ts timestamptz, kwh double precision,
                       PRIMARY KEY (meter_id, ts));
CREATE TABLE schema_migrations (version text PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('0001'), ('0002');
INSERT INTO readings SELECT 'm0' || (i % 3), '2026-01-01'::timestamptz + i * interval '15 min',
                            i * 0.1 FROM generate_series(1, 300) i;
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs PostgreSQL's tools as postgres")


@pytest.fixture(scope="module")
def pg():
    with PgServer() as server:
        server.psql("CREATE DATABASE ems")
        server.psql(SCHEMA, database="ems")
        yield server


def manifest_tool(pg: PgServer, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGHOST=str(pg.socket_dir))
    return subprocess.run(["/usr/bin/python3", str(SCRIPT), *args], capture_output=True,
                          text=True, check=False, env=env)


def restore_copy(pg: PgServer, dump: Path, name: str) -> None:
    pg.drop_database(name)
    pg.psql(f"CREATE DATABASE {name}")
    with dump.open("rb") as stdin:  # on stdin, as the roles do: postgres cannot read root's folder
        subprocess.run(["runuser", "-u", "postgres", "--", "pg_restore", "--exit-on-error",
                        "--single-transaction", "-h", str(pg.socket_dir), "-p", str(pg.port),
                        "-d", name], stdin=stdin, check=True, capture_output=True)


@pytest.fixture
def dumped(pg, tmp_path):
    dump = tmp_path / "ems.dump"
    proc = manifest_tool(pg, "dump", "ems", "--port", str(pg.port), "--out", str(dump))
    assert proc.returncode == 0, proc.stderr
    manifest = tmp_path / "manifest.json"
    manifest.write_text(proc.stdout)
    return dump, manifest, json.loads(proc.stdout)


def test_the_manifest_counts_tables_and_meters_and_carries_its_version(dumped):
    _, _, manifest = dumped
    assert manifest["version"] == 2
    assert manifest["tables"] == {"readings": 300, "schema_migrations": 2}
    assert {m: v["rows"] for m, v in manifest["meters"].items()} == {
        "m00": 100, "m01": 100, "m02": 100}
    assert len({v["sum"] for v in manifest["meters"].values()}) == 3


def test_a_faithful_restore_compares_equal(pg, dumped):
    dump, manifest, _ = dumped
    restore_copy(pg, dump, "restored")
    proc = manifest_tool(pg, "db", "restored", "--port", str(pg.port), "--compare", str(manifest))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["equal"] is True
    assert json.loads(proc.stdout)["rows"] == 300


@pytest.mark.parametrize("change,named", [
    ("UPDATE readings SET kwh = kwh + 0.001 WHERE meter_id = 'm01' AND ts = (SELECT min(ts) "
     "FROM readings WHERE meter_id = 'm01')",
     "meter m01: checksum differs"),
    ("DELETE FROM readings WHERE meter_id = 'm02' AND kwh < 1", "meter m02: rows differ"),
    ("DELETE FROM schema_migrations WHERE version = '0002'", "table schema_migrations"),
])
def test_a_restore_that_lost_or_changed_data_is_named(pg, dumped, change, named):
    dump, manifest, _ = dumped
    restore_copy(pg, dump, "damaged")
    pg.psql(change, database="damaged")
    proc = manifest_tool(pg, "db", "damaged", "--port", str(pg.port), "--compare", str(manifest))
    assert proc.returncode == 1
    assert named in proc.stderr


def test_a_version_1_manifest_of_an_older_snapshot_still_compares(pg, dumped, tmp_path):
    """Snapshots made before version 2 carry the COPY-text digest of the dump."""
    dump, _, _ = dumped
    loader = SourceFileLoader("ems_backup_manifest", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    tool = importlib.util.module_from_spec(spec)
    loader.exec_module(tool)
    text = subprocess.run(["pg_restore", "--data-only", "-f", "-", str(dump)], check=True,
                          capture_output=True, text=True, env=tool.pg_env()).stdout
    old = tmp_path / "manifest-v1.json"
    old.write_text(json.dumps(tool.digest(text.splitlines())))
    assert "version" not in json.loads(old.read_text())
    restore_copy(pg, dump, "restored_v1")
    proc = manifest_tool(pg, "db", "restored_v1", "--port", str(pg.port), "--compare", str(old))
    assert proc.returncode == 0, proc.stderr
    pg.psql("DELETE FROM readings WHERE meter_id = 'm00' AND kwh < 1", database="restored_v1")
    proc = manifest_tool(pg, "db", "restored_v1", "--port", str(pg.port), "--compare", str(old))
    assert proc.returncode == 1 and "meter m00: rows differ" in proc.stderr


def test_a_dump_that_fails_gives_no_manifest(pg, tmp_path):
    proc = manifest_tool(pg, "dump", "no_such_db", "--port", str(pg.port),
                         "--out", str(tmp_path / "x.dump"))
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert "no_such_db" in proc.stderr
