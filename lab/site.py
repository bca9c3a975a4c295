"""The lab site seen from the controller: each host's layout as the roles see it, and SQL on the
site's EMS database (on its database host, as postgres)."""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from api.layout import site_vars
from lab import config
from lab.hosts import host as lab_host
from lab.hosts import ssh_base_args

DB_HOST = "ems-db"


def inventory() -> Path:
    return config.inventory_dir() / "hosts.yml"


def layout(host: str, inventory_path: Path | None = None) -> Mapping[str, Any]:
    """`host`'s variables (inventory over the roles' defaults): layout(h)['ems_layout_root']."""
    return site_vars(inventory_path or inventory(), host)


def ssh(host: str, command: str) -> str:
    return subprocess.run([*ssh_base_args(lab_host(host).spec), command], capture_output=True,
                          text=True, check=True).stdout


def psql_command(sql: str, inventory_path: Path | None = None) -> str:
    """The shell command that runs `sql` on the EMS database, tuples only, fields split by ' '."""
    db = layout(DB_HOST, inventory_path)
    return (f"cd / && runuser -u postgres -- psql -X -At -F ' ' -v ON_ERROR_STOP=1 "
            f"-p {db['ems_layout_db_port']} -d {shlex.quote(db['ems_layout_db_name'])} "
            f"-c {shlex.quote(sql)}")


def psql(sql: str, inventory_path: Path | None = None) -> str:
    return ssh(DB_HOST, psql_command(sql, inventory_path))
