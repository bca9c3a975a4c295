"""Apply the release's SQL migrations that the database lacks, each in its own transaction.

Prints one JSON line `{"applied": [...], "schema_version": N}`. Safe to run concurrently from
several hosts: a PostgreSQL advisory lock serialises the runs, the later ones apply nothing.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from . import db, service
from ._release import VERSION

log = logging.getLogger("kangpai_ems.migrate")

LOCK_KEY = 0x4B454D53  # "KEMS": one key for every kangpai-ems migration run

_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    release text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(Exception):
    """The database's migration history disagrees with this release."""


def migrate(conn: Any, migrations: list[db.Migration]) -> tuple[list[str], int]:
    """(names applied now, schema version after the run)."""
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            cur.execute(_SCHEMA_MIGRATIONS)
            applied = db.applied_migrations(cur)
            newly = []
            for migration in migrations:
                known = applied.get(migration.version)
                if known == migration.name:
                    continue
                if known is not None:
                    raise MigrationError(f"database has migration {migration.version} as "
                                         f"{known}, this release has {migration.name}")
                log.info("applying %s", migration.name)
                conn.autocommit = False
                with conn:  # one transaction: the schema change and its record, or neither
                    cur.execute(migration.path.read_text(encoding="utf-8"))
                    cur.execute("INSERT INTO schema_migrations (version, name, release)"
                                " VALUES (%s, %s, %s)",
                                (migration.version, migration.name, VERSION))
                conn.autocommit = True
                applied[migration.version] = migration.name
                newly.append(migration.name)
            ahead = sorted(set(applied) - {m.version for m in migrations})
            if ahead:
                log.warning("database has migrations newer than release %s: %s", VERSION,
                            ", ".join(applied[v] for v in ahead))
        finally:
            conn.autocommit = True
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return newly, max(applied, default=0)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = service.parse_config("Apply the release's database migrations.", ("database",), argv)
    try:
        migrations = db.release_migrations()
        conn = db.connect(cfg.database, "kangpai-ems-migrate")
    except (ValueError, *db.db_errors()) as exc:
        log.error("%s", exc)
        return 1
    try:
        applied, version = migrate(conn, migrations)
    except (MigrationError, *db.db_errors()) as exc:
        log.error("migration failed, nothing after the last applied one changed: %s", exc)
        return 1
    finally:
        conn.close()
    log.info("schema version %d (%d applied now)", version, len(applied))
    print(json.dumps({"applied": applied, "schema_version": version}))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
