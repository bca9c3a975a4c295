"""PostgreSQL access (psycopg2, imported only here and only when a program connects) and the
release's migrations folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DatabaseSection

# A release is laid out as <root>/kangpai_ems/ and <root>/migrations/.
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def connect(cfg: DatabaseSection, application: str) -> Any:
    import psycopg2  # Debian's python3-psycopg2; lazily, so DB-free modules run without it

    return psycopg2.connect(host=cfg.host, port=cfg.port, dbname=cfg.name, user=cfg.user,
                            password=cfg.password, connect_timeout=cfg.connect_timeout_s,
                            application_name=application)


def db_errors() -> tuple[type[Exception], ...]:
    import psycopg2

    return (psycopg2.Error,)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def release_migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The release's migrations in order; a file not named NNNN_name.sql is an error."""
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {folder}")
    return migrations


def applied_migrations(cursor: Any) -> dict[int, str]:
    """{version: name} recorded in schema_migrations; empty if the table does not exist."""
    cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return {}
    cursor.execute("SELECT version, name FROM schema_migrations ORDER BY version")
    return dict(cursor.fetchall())
