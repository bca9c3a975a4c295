"""A throwaway PostgreSQL cluster for tests, from Debian's server binaries.

    with PgServer() as pg:
        pg.create_database("ems", owner="ems", password="secret")
        ... connect to 127.0.0.1:pg.port with that role ...

The cluster lives in a fresh temporary directory, listens on a free loopback port (TCP with
password authentication for test roles; a private Unix socket, trusted, for the superuser) and
is stopped and deleted on exit. As root the server runs as the `postgres` OS user, because
initdb refuses root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.net import free_port

SUPERUSER = "postgres"


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin holding initdb and pg_ctl."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
    return Path(candidates[-1]).parent


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _quote_ident(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class PgServer:
    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.host = "127.0.0.1"
        self.port = 0
        self.root: Path | None = None
        self._running = False
        self._os_user: str | None = SUPERUSER if os.geteuid() == 0 else None

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "run"

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    def _run(self, *args: str, input_text: str | None = None) -> str:
        kwargs: dict = {}
        if self._os_user is not None:
            kwargs = {"user": self._os_user, "group": self._os_user, "extra_groups": []}
        result = subprocess.run(
            args, input=input_text, capture_output=True, text=True, check=False,
            cwd=self.root, env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "TZ": "UTC"},
            **kwargs)
        if result.returncode != 0:
            log = self.log_text()
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}\n{log}")
        return result.stdout

    def log_text(self) -> str:
        if self.root is None:
            return ""
        try:
            return (self.root / "server.log").read_text()[-4000:]
        except OSError:
            return ""

    def start(self) -> PgServer:
        self.root = Path(tempfile.mkdtemp(prefix="pgserver-"))
        self.socket_dir.mkdir()
        if self._os_user is not None:
            entry = pwd.getpwnam(self._os_user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--no-sync")
        self.port = free_port()
        options = (f"-c listen_addresses={self.host} -p {self.port} "
                   f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
                   "-c full_page_writes=off -c synchronous_commit=off")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l",
                  str(self.root / "server.log"), "-o", options, "-w", "-t", "30", "start")
        self._running = True
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over the private socket; its tuples-only output."""
        return self._run(str(self.bindir / "psql"), "-X", "-q", "-A", "-t",
                         "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
                         "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                         input_text=sql)

    def create_database(self, name: str, owner: str, password: str) -> None:
        """A database owned by a login role that authenticates with `password` over TCP."""
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = {_quote_literal(owner)}")
        verb = "ALTER" if exists.strip() else "CREATE"
        self.psql(f"{verb} ROLE {_quote_ident(owner)} LOGIN PASSWORD {_quote_literal(password)}")
        self.psql(f"CREATE DATABASE {_quote_ident(name)} OWNER {_quote_ident(owner)}")

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def stop(self) -> None:
        if self.root is None:
            return
        try:
            if self._running:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m",
                          "immediate", "-w", "stop")
                self._running = False
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
