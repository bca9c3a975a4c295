"""The API's state: SQLite by default, PostgreSQL through `EMSOPS_DATABASE_URL`, same SQL on both.

One connection per store, used under a lock (each call is one short transaction); timestamps are
ISO-8601 UTC text and JSON is text, so both engines hold exactly the same values.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from api.errors import HostsHeld, SettlementConflict, TicketServiceTaken

# Job states. Terminal ones never change again.
QUEUED, RUNNING = "queued", "running"
SUCCEEDED, FAILED, CANCELED, INTERRUPTED = "succeeded", "failed", "canceled", "interrupted"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELED, INTERRUPTED})
# Webhook delivery states (webhook_outbox.state); delivered and failed never change again.
PENDING, DELIVERED = "pending", "delivered"
# Webhook kinds: every ended job's completion; a manual inspection report's signature.
COMPLETION, SIGNOFF = "completion", "signoff"

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE customers (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, webhook_url TEXT, created_at TEXT NOT NULL)""",
        """CREATE TABLE contracts (
            customer_id TEXT PRIMARY KEY REFERENCES customers(id), tier TEXT NOT NULL,
            state TEXT NOT NULL, licensed_modules TEXT NOT NULL, version_line TEXT NOT NULL,
            ends_on TEXT, updated_at TEXT NOT NULL)""",
        """CREATE TABLE sites (
            customer_id TEXT PRIMARY KEY REFERENCES customers(id), inventory TEXT NOT NULL,
            installed_version TEXT, updated_at TEXT NOT NULL)""",
        """CREATE TABLE settlements (
            id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL, service TEXT NOT NULL,
            kind TEXT NOT NULL, amount TEXT, reference TEXT NOT NULL, recorded_by TEXT NOT NULL,
            recorded_at TEXT NOT NULL)""",
        "CREATE INDEX settlements_ticket ON settlements (ticket_id, service)",
        """CREATE TABLE decisions (
            id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL, customer_id TEXT NOT NULL,
            service TEXT NOT NULL, request TEXT NOT NULL, decision TEXT NOT NULL,
            caller TEXT NOT NULL, created_at TEXT NOT NULL)""",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL, customer_id TEXT NOT NULL,
            service TEXT NOT NULL, limit_pattern TEXT NOT NULL, inventory TEXT NOT NULL,
            hosts TEXT NOT NULL, parameters TEXT NOT NULL, note TEXT, fingerprint TEXT NOT NULL,
            decision_id TEXT NOT NULL REFERENCES decisions(id), decision TEXT NOT NULL,
            state TEXT NOT NULL, cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_by TEXT NOT NULL, created_at TEXT NOT NULL, started_at TEXT,
            finished_at TEXT, playbook_status TEXT, rc INTEGER, host_stats TEXT,
            set_stats TEXT, verification TEXT, verdict INTEGER, error TEXT,
            UNIQUE (ticket_id, service))""",
        "CREATE INDEX jobs_state ON jobs (state)",
        """CREATE TABLE job_events (
            job_id TEXT NOT NULL REFERENCES jobs(id), counter INTEGER NOT NULL,
            event TEXT NOT NULL, host TEXT, task TEXT, created TEXT, stdout TEXT,
            data TEXT NOT NULL, PRIMARY KEY (job_id, counter))""",
        """CREATE TABLE host_locks (
            inventory TEXT NOT NULL, host TEXT NOT NULL, job_id TEXT NOT NULL REFERENCES jobs(id),
            acquired_at TEXT NOT NULL, PRIMARY KEY (inventory, host))""",
        """CREATE TABLE webhook_deliveries (
            job_id TEXT NOT NULL REFERENCES jobs(id), attempt INTEGER NOT NULL, url TEXT NOT NULL,
            status_code INTEGER, error TEXT, attempted_at TEXT NOT NULL,
            PRIMARY KEY (job_id, attempt))""",
        """CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY, role TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL, revoked_at TEXT)""",
    ],
    # The webhook outbox: one completion delivery per ended job, written in the transaction that
    # ends the job, so a crash between the two can lose neither. webhook_deliveries stays the
    # attempt log; next_attempt_at there says when the attempt after it was due.
    [
        """CREATE TABLE webhook_outbox (
            id TEXT PRIMARY KEY, job_id TEXT NOT NULL UNIQUE REFERENCES jobs(id),
            state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT,
            created_at TEXT NOT NULL, finished_at TEXT)""",
        "CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at)",
        "ALTER TABLE webhook_deliveries ADD COLUMN next_attempt_at TEXT",
    ],
    [
        # A settlement belongs to the ticket's customer (rows from before: the customer of the
        # ticket's first decision, else none, and then they settle nothing); a token may expire.
        "ALTER TABLE settlements ADD COLUMN customer_id TEXT",
        """UPDATE settlements SET customer_id = (
            SELECT d.customer_id FROM decisions d WHERE d.ticket_id = settlements.ticket_id
            ORDER BY d.created_at LIMIT 1)""",
        "CREATE INDEX settlements_reference ON settlements (ticket_id, service, reference)",
        "ALTER TABLE api_tokens ADD COLUMN expires_at TEXT",
    ],
    [
        # An engineer's signature on a manual inspection's report (at most one per job), and a
        # second kind of webhook per job that says so: the outbox and its attempt log gain a
        # `kind` (tables rebuilt: neither engine can change a unique key in place).
        """CREATE TABLE report_signoffs (
            job_id TEXT PRIMARY KEY REFERENCES jobs(id), signed_by TEXT NOT NULL,
            role TEXT NOT NULL, remarks TEXT NOT NULL, signed_at TEXT NOT NULL)""",
        """CREATE TABLE webhook_outbox_new (
            id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES jobs(id),
            kind TEXT NOT NULL DEFAULT 'completion', state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT, created_at TEXT NOT NULL,
            finished_at TEXT, UNIQUE (job_id, kind))""",
        """INSERT INTO webhook_outbox_new
            (id, job_id, kind, state, attempts, next_attempt_at, created_at, finished_at)
            SELECT id, job_id, 'completion', state, attempts, next_attempt_at, created_at,
                   finished_at FROM webhook_outbox""",
        "DROP TABLE webhook_outbox",
        "ALTER TABLE webhook_outbox_new RENAME TO webhook_outbox",
        "CREATE INDEX webhook_outbox_due ON webhook_outbox (state, next_attempt_at)",
        """CREATE TABLE webhook_deliveries_new (
            job_id TEXT NOT NULL REFERENCES jobs(id), kind TEXT NOT NULL DEFAULT 'completion',
            attempt INTEGER NOT NULL, url TEXT NOT NULL, status_code INTEGER, error TEXT,
            attempted_at TEXT NOT NULL, next_attempt_at TEXT,
            PRIMARY KEY (job_id, kind, attempt))""",
        """INSERT INTO webhook_deliveries_new
            (job_id, kind, attempt, url, status_code, error, attempted_at, next_attempt_at)
            SELECT job_id, 'completion', attempt, url, status_code, error, attempted_at,
                   next_attempt_at FROM webhook_deliveries""",
        "DROP TABLE webhook_deliveries",
        "ALTER TABLE webhook_deliveries_new RENAME TO webhook_deliveries",
    ],
    [
        # The process running a job (`<host>:<pid>:<start time>`, api.runner.RUNNER_ID): a
        # restart interrupts only the jobs whose process has gone, not another one's, e.g. an
        # `emsops run` working on the same data dir while the API starts.
        "ALTER TABLE jobs ADD COLUMN runner TEXT",
    ],
]

JSON_COLUMNS = frozenset(
    {
        "licensed_modules",
        "request",
        "decision",
        "hosts",
        "parameters",
        "host_stats",
        "set_stats",
        "verification",
        "data",
    }
)
JOB_UPDATABLE = frozenset(
    {
        "state",
        "runner",
        "started_at",
        "finished_at",
        "playbook_status",
        "rc",
        "host_stats",
        "set_stats",
        "verification",
        "verdict",
        "error",
        "cancel_requested",
    }
)


def now(after_s: float = 0) -> str:
    """The time (plus `after_s` seconds) as stored: fixed-width UTC text, so it sorts as time."""
    return (datetime.now(UTC) + timedelta(seconds=after_s)).isoformat(timespec="microseconds")


def new_id() -> str:
    return uuid.uuid4().hex


class DuplicateKey(Exception):
    """A unique constraint refused a row (raised by both engines)."""


class _Tx:
    """The cursor of one transaction; SQL uses `?` placeholders on both engines."""

    def __init__(self, conn: Any, pg: bool) -> None:
        self._conn, self._pg = conn, pg

    def run(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self._pg:
            sql = sql.replace("?", "%s")
        try:
            return self._conn.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            raise DuplicateKey(str(exc)) from exc
        except Exception as exc:
            if self._pg and type(exc).__name__ == "UniqueViolation":
                raise DuplicateKey(str(exc)) from exc
            raise

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [_decode(dict(row)) for row in self.run(sql, params).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self.run(sql, params).fetchone()
        return _decode(dict(row)) if row is not None else None


def _enqueue_webhook(tx: _Tx, job_id: str, kind: str = COMPLETION) -> None:
    """Queue a job's webhook of `kind`, due at once (at most one of each kind per job)."""
    stamp = now()
    tx.run(
        "INSERT INTO webhook_outbox "
        "(id, job_id, kind, state, attempts, next_attempt_at, created_at) "
        "VALUES (?, ?, ?, ?, 0, ?, ?) ON CONFLICT (job_id, kind) DO NOTHING",
        (new_id(), job_id, kind, PENDING, stamp, stamp),
    )


UNANSWERED = "no answer recorded: the API stopped during this attempt"


def _close_unanswered(tx: _Tx, job_id: str, kind: str) -> None:
    tx.run(
        "UPDATE webhook_deliveries SET error = ? "
        "WHERE job_id = ? AND kind = ? AND status_code IS NULL AND error IS NULL",
        (UNANSWERED, job_id, kind),
    )


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in JSON_COLUMNS & row.keys():
        if row[key] is not None:
            row[key] = json.loads(row[key])
    return row


def _encode(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, bool):
        return int(value)
    return value


class Store:
    def __init__(self, *, sqlite_path: Path | None = None, database_url: str | None = None):
        self._lock = threading.RLock()
        self.pg = database_url is not None
        if database_url is not None:
            self._url = database_url
            self._conn = self._connect_pg()
        else:
            assert sqlite_path is not None
            sqlite_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._conn = sqlite3.connect(sqlite_path, check_same_thread=False, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            self._conn.execute("PRAGMA busy_timeout = 10000")
            self._conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a power cut may lose the last commits, never corrupt the file; one
            # fsync per stored event would otherwise slow every run.
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        self.migrate()

    @classmethod
    def from_settings(cls, settings: Any) -> Store:
        if settings.database_url:
            return cls(database_url=settings.database_url)
        return cls(sqlite_path=settings.sqlite_path)

    def _connect_pg(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(self._url, autocommit=True, row_factory=dict_row)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def tx(self) -> Iterator[_Tx]:
        with self._lock:
            if self.pg:
                if self._conn.closed or self._conn.broken:
                    self._conn = self._connect_pg()
                with self._conn.transaction():
                    yield _Tx(self._conn, pg=True)
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(self._conn, pg=False)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # --- schema -------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the migrations not yet applied; returns the schema version."""
        with self.tx() as tx:
            if self.pg:
                tx.run("SELECT pg_advisory_xact_lock(71004)")  # one migrator at a time
            tx.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            row = tx.one("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
            current = int(row["v"]) if row else 0
            for version, statements in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for statement in statements:
                    tx.run(statement)
                tx.run("INSERT INTO schema_migrations VALUES (?, ?)", (version, now()))
            return len(MIGRATIONS)

    def schema_version(self) -> int:
        with self.tx() as tx:
            row = tx.one("SELECT MAX(version) AS v FROM schema_migrations")
        return int(row["v"])

    # --- customers, contracts, sites ----------------------------------------------------------

    def put_customer(self, *, customer_id: str, name: str, webhook_url: str | None) -> dict:
        with self.tx() as tx:
            tx.run(
                "INSERT INTO customers (id, name, webhook_url, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "webhook_url = excluded.webhook_url",
                (customer_id, name, webhook_url, now()),
            )
            return tx.one("SELECT * FROM customers WHERE id = ?", (customer_id,))

    def get_customer(self, customer_id: str) -> dict | None:
        with self.tx() as tx:
            return tx.one("SELECT * FROM customers WHERE id = ?", (customer_id,))

    def put_contract(
        self,
        *,
        customer_id: str,
        tier: str,
        state: str,
        licensed_modules: list[str],
        version_line: str,
        ends_on: str | None,
    ) -> dict:
        with self.tx() as tx:
            tx.run(
                "INSERT INTO contracts VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (customer_id) DO "
                "UPDATE SET tier = excluded.tier, state = excluded.state, "
                "licensed_modules = excluded.licensed_modules, "
                "version_line = excluded.version_line, ends_on = excluded.ends_on, "
                "updated_at = excluded.updated_at",
                (
                    customer_id,
                    tier,
                    state,
                    _encode(sorted(licensed_modules)),
                    version_line,
                    ends_on,
                    now(),
                ),
            )
            return tx.one("SELECT * FROM contracts WHERE customer_id = ?", (customer_id,))

    def get_contract(self, customer_id: str) -> dict | None:
        with self.tx() as tx:
            return tx.one("SELECT * FROM contracts WHERE customer_id = ?", (customer_id,))

    def put_site(self, *, customer_id: str, inventory: str, installed_version: str | None) -> dict:
        with self.tx() as tx:
            tx.run(
                "INSERT INTO sites VALUES (?, ?, ?, ?) ON CONFLICT (customer_id) DO UPDATE SET "
                "inventory = excluded.inventory, installed_version = excluded.installed_version, "
                "updated_at = excluded.updated_at",
                (customer_id, inventory, installed_version, now()),
            )
            return tx.one("SELECT * FROM sites WHERE customer_id = ?", (customer_id,))

    def record_installed_version(self, *, customer_id: str, inventory: str, version: str) -> bool:
        """The version a site's hosts reported, when the site is still on record with the
        inventory they were verified from; True when the record changed."""
        with self.tx() as tx:
            return tx.run(
                "UPDATE sites SET installed_version = ?, updated_at = ? WHERE customer_id = ? "
                "AND inventory = ? AND (installed_version IS NULL OR installed_version <> ?)",
                (version, now(), customer_id, inventory, version),
            ).rowcount > 0

    def get_site(self, customer_id: str) -> dict | None:
        with self.tx() as tx:
            return tx.one("SELECT * FROM sites WHERE customer_id = ?", (customer_id,))

    # --- payments and guarantees --------------------------------------------------------------

    def add_settlement(
        self,
        *,
        ticket_id: str,
        customer_id: str,
        service: str,
        kind: str,
        amount: Decimal | None,
        reference: str,
        recorded_by: str,
    ) -> tuple[dict, bool]:
        """Record a payment or guarantee; returns (record, created).

        The same (ticket, service, reference) again is the first record when it says the same
        (a retried request); saying something else raises SettlementConflict, as does a ticket
        that another customer's requests already use.
        """
        with self.tx() as tx:
            if self.pg:
                tx.run("SELECT pg_advisory_xact_lock(71005)")  # check-then-insert, one at a time
            existing = tx.one(
                "SELECT * FROM settlements WHERE ticket_id = ? AND service = ? AND reference = ?",
                (ticket_id, service, reference),
            )
            if existing is not None:
                stored = existing["amount"]
                said = (existing["kind"], existing["customer_id"], stored and Decimal(stored))
                if said == (kind, customer_id, amount):  # Decimal: 100.5 is 100.50
                    return existing, False
                raise SettlementConflict(
                    f"reference {reference} is already recorded for this ticket and service "
                    "with another kind, amount or customer",
                    detail={"settlement_id": existing["id"]},
                )
            other = tx.one(
                "SELECT customer_id FROM decisions WHERE ticket_id = ? AND customer_id <> ? UNION "
                "SELECT customer_id FROM settlements WHERE ticket_id = ? AND customer_id <> ?",
                (ticket_id, customer_id, ticket_id, customer_id),
            )
            if other is not None:
                raise SettlementConflict(
                    f"ticket {ticket_id} belongs to another customer",
                    detail={"customer_id": other["customer_id"]},
                )
            settlement_id = new_id()
            tx.run(
                "INSERT INTO settlements (id, ticket_id, customer_id, service, kind, amount, "
                "reference, recorded_by, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    settlement_id,
                    ticket_id,
                    customer_id,
                    service,
                    kind,
                    None if amount is None else str(amount),
                    reference,
                    recorded_by,
                    now(),
                ),
            )
            return tx.one("SELECT * FROM settlements WHERE id = ?", (settlement_id,)), True

    def settlements(
        self, *, ticket_id: str, service: str, customer_id: str | None = None
    ) -> list[dict]:
        """The ticket's settlements for the service; with `customer_id`, only that customer's."""
        sql = "SELECT * FROM settlements WHERE ticket_id = ? AND service = ?"
        params = [ticket_id, service]
        if customer_id is not None:
            sql += " AND customer_id = ?"
            params.append(customer_id)
        with self.tx() as tx:
            return tx.all(sql + " ORDER BY recorded_at", params)

    # --- decisions and jobs -------------------------------------------------------------------

    def add_decision(
        self,
        *,
        ticket_id: str,
        customer_id: str,
        service: str,
        request: dict,
        decision: dict,
        caller: str,
    ) -> str:
        decision_id = new_id()
        with self.tx() as tx:
            tx.run(
                "INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    decision_id,
                    ticket_id,
                    customer_id,
                    service,
                    _encode(request),
                    _encode(decision),
                    caller,
                    now(),
                ),
            )
        return decision_id

    def get_decision(self, decision_id: str) -> dict | None:
        with self.tx() as tx:
            return tx.one("SELECT * FROM decisions WHERE id = ?", (decision_id,))

    def job_for_ticket(self, *, ticket_id: str, service: str) -> dict | None:
        with self.tx() as tx:
            return tx.one(
                "SELECT * FROM jobs WHERE ticket_id = ? AND service = ?", (ticket_id, service)
            )

    def create_job(
        self,
        *,
        ticket_id: str,
        customer_id: str,
        service: str,
        limit_pattern: str,
        inventory: str,
        hosts: list[str],
        parameters: dict,
        note: str | None = None,
        fingerprint: str,
        decision_id: str,
        decision: dict,
        created_by: str,
    ) -> tuple[dict, bool]:
        """Queue a job and take its host locks in one transaction.

        Returns (job, True) when created, (existing job, False) when the same ticket asked for the
        same service with the same request before. Raises TicketServiceTaken when that ticket's
        service was asked for with a different request, HostsHeld when another job holds a host.
        """
        job_id = new_id()
        try:
            with self.tx() as tx:
                existing = tx.one(
                    "SELECT * FROM jobs WHERE ticket_id = ? AND service = ?", (ticket_id, service)
                )
                if existing is not None:
                    if existing["fingerprint"] == fingerprint:
                        return existing, False
                    raise TicketServiceTaken(
                        f"ticket {ticket_id} already has a {service} job with other parameters",
                        detail={"job_id": existing["id"]},
                    )
                held = self._held(tx, inventory, hosts)
                if held:
                    raise HostsHeld("target hosts are held by another job", detail={"held": held})
                stamp = now()
                tx.run(
                    "INSERT INTO jobs (id, ticket_id, customer_id, service, limit_pattern, "
                    "inventory, hosts, parameters, note, fingerprint, decision_id, decision, "
                    "state, created_by, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        ticket_id,
                        customer_id,
                        service,
                        limit_pattern,
                        inventory,
                        _encode(hosts),
                        _encode(parameters),
                        note,
                        fingerprint,
                        decision_id,
                        _encode(decision),
                        QUEUED,
                        created_by,
                        stamp,
                    ),
                )
                for host in hosts:
                    tx.run(
                        "INSERT INTO host_locks VALUES (?, ?, ?, ?)",
                        (inventory, host, job_id, stamp),
                    )
                return tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,)), True
        except DuplicateKey:
            # Lost a race with a concurrent request: report what is there now.
            with self.tx() as tx:
                existing = tx.one(
                    "SELECT * FROM jobs WHERE ticket_id = ? AND service = ?", (ticket_id, service)
                )
                held = self._held(tx, inventory, hosts)
            if existing is not None:
                if existing["fingerprint"] == fingerprint:
                    return existing, False
                raise TicketServiceTaken(
                    f"ticket {ticket_id} already has a {service} job",
                    detail={"job_id": existing["id"]},
                ) from None
            raise HostsHeld("target hosts are held by another job", detail={"held": held}) from None

    @staticmethod
    def _held(tx: _Tx, inventory: str, hosts: list[str]) -> dict[str, str]:
        if not hosts:
            return {}
        marks = ", ".join("?" for _ in hosts)
        rows = tx.all(
            f"SELECT host, job_id FROM host_locks WHERE inventory = ? AND host IN ({marks})",
            (inventory, *hosts),
        )
        return {row["host"]: row["job_id"] for row in rows}

    def get_job(self, job_id: str) -> dict | None:
        with self.tx() as tx:
            return tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def jobs_in_state(self, state: str) -> list[dict]:
        with self.tx() as tx:
            return tx.all("SELECT * FROM jobs WHERE state = ? ORDER BY created_at", (state,))

    def update_job(self, job_id: str, *, only_if_state: str | None = None, **fields: Any) -> bool:
        """Set job columns; with `only_if_state`, only when the job is still in that state."""
        unknown = set(fields) - JOB_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        params: list[Any] = [_encode(value) for value in fields.values()]
        sql = f"UPDATE jobs SET {assignments} WHERE id = ?"
        params.append(job_id)
        if only_if_state is not None:
            sql += " AND state = ?"
            params.append(only_if_state)
        with self.tx() as tx:
            return tx.run(sql, params).rowcount == 1

    def finish_job(
        self,
        job_id: str,
        *,
        state: str,
        only_if_state: str | None = None,
        webhook: bool = True,
        **fields: Any,
    ) -> bool:
        """Record a terminal state and release the job's host locks in one transaction.

        With `only_if_state`, nothing happens unless the job is still in that state. Without
        `webhook` no completion webhook is queued (command-line jobs tell no ticket system).
        """
        assert state in TERMINAL
        fields = {"state": state, "finished_at": now(), **fields}
        assignments = ", ".join(f"{name} = ?" for name in fields)
        params = [*(_encode(v) for v in fields.values()), job_id]
        guard = ""
        if only_if_state is not None:
            guard = " AND state = ?"
            params.append(only_if_state)
        with self.tx() as tx:
            if tx.run(f"UPDATE jobs SET {assignments} WHERE id = ?{guard}", params).rowcount != 1:
                return False
            tx.run("DELETE FROM host_locks WHERE job_id = ?", (job_id,))
            if webhook:
                _enqueue_webhook(tx, job_id)
            return True

    def held_hosts(self) -> list[dict]:
        with self.tx() as tx:
            return tx.all("SELECT * FROM host_locks ORDER BY inventory, host")

    def recover(self, runner_alive: Callable[[str | None], bool]) -> tuple[list[str], list[str]]:
        """After a restart: running jobs whose process has gone become interrupted; only queued
        jobs and those still running elsewhere keep their host locks.

        Returns (interrupted job ids, queued job ids to run again).
        """
        with self.tx() as tx:
            rows = tx.all("SELECT id, runner FROM jobs WHERE state = ?", (RUNNING,))
            running = [r["id"] for r in rows if not runner_alive(r["runner"])]
            for job_id in running:
                tx.run(
                    "UPDATE jobs SET state = ?, finished_at = ?, "
                    "error = 'the API stopped while the job ran' WHERE id = ? AND state = ?",
                    (INTERRUPTED, now(), job_id, RUNNING),
                )
                _enqueue_webhook(tx, job_id)
            tx.run(
                "DELETE FROM host_locks WHERE job_id NOT IN "
                "(SELECT id FROM jobs WHERE state IN (?, ?))",
                (QUEUED, RUNNING),
            )
            queued = tx.all("SELECT id FROM jobs WHERE state = ? ORDER BY created_at", (QUEUED,))
        return running, [r["id"] for r in queued]

    # --- events -------------------------------------------------------------------------------

    def add_events(self, job_id: str, events: Sequence[dict[str, Any]]) -> None:
        """Store a batch of a job's events in one transaction (a counter already stored is kept).

        Each event has the keys counter, event, host, task, created, stdout and data. One commit
        per batch instead of per event: on PostgreSQL every commit waits for a WAL flush.
        """
        if not events:
            return
        with self.tx() as tx:
            for e in events:
                tx.run(
                    "INSERT INTO job_events VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (job_id, counter) DO NOTHING",
                    (
                        job_id,
                        e["counter"],
                        e["event"],
                        e["host"],
                        e["task"],
                        e["created"],
                        e["stdout"],
                        _encode(e["data"]),
                    ),
                )

    def events(self, job_id: str, *, after: int = 0, limit: int = 100) -> list[dict]:
        with self.tx() as tx:
            return tx.all(
                "SELECT * FROM job_events WHERE job_id = ? AND counter > ? "
                "ORDER BY counter LIMIT ?",
                (job_id, after, limit),
            )

    # --- webhooks -----------------------------------------------------------------------------

    def deliveries(self, job_id: str, kind: str = COMPLETION) -> list[dict]:
        """The attempt log of a job's webhook of `kind`."""
        with self.tx() as tx:
            return tx.all(
                "SELECT * FROM webhook_deliveries WHERE job_id = ? AND kind = ? ORDER BY attempt",
                (job_id, kind),
            )

    def webhook(self, job_id: str, kind: str = COMPLETION) -> dict | None:
        """The outbox row of a job's webhook of `kind` (none until the job ends / is signed)."""
        with self.tx() as tx:
            return tx.one(
                "SELECT * FROM webhook_outbox WHERE job_id = ? AND kind = ?", (job_id, kind)
            )

    def next_webhook_due(self) -> str | None:
        with self.tx() as tx:
            row = tx.one(
                "SELECT MIN(next_attempt_at) AS due FROM webhook_outbox WHERE state = ?",
                (PENDING,),
            )
        return row["due"] if row else None

    def claim_webhook(self, *, due_by: str, lease_until: str) -> dict | None:
        """Take the pending delivery due longest ago, if any is due by `due_by`.

        Claiming moves its due time to `lease_until` (compare-and-set, so two workers never take
        the same one): a worker that dies mid-attempt leaves it due again once the lease ends.
        """
        with self.tx() as tx:
            row = tx.one(
                "SELECT * FROM webhook_outbox WHERE state = ? AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at LIMIT 1",
                (PENDING, due_by),
            )
            if row is None:
                return None
            taken = tx.run(
                "UPDATE webhook_outbox SET next_attempt_at = ? "
                "WHERE id = ? AND state = ? AND next_attempt_at = ?",
                (lease_until, row["id"], PENDING, row["next_attempt_at"]),
            )
            return {**row, "next_attempt_at": lease_until} if taken.rowcount == 1 else None

    def start_webhook_attempt(
        self, *, job_id: str, attempt: int, url: str, kind: str = COMPLETION
    ) -> None:
        """Log an attempt before it is sent, so one cut short by a crash still shows."""
        with self.tx() as tx:
            _close_unanswered(tx, job_id, kind)
            tx.run(
                "UPDATE webhook_outbox SET attempts = ? WHERE job_id = ? AND kind = ?",
                (attempt, job_id, kind),
            )
            tx.run(
                "INSERT INTO webhook_deliveries "
                "(job_id, kind, attempt, url, status_code, error, attempted_at) "
                "VALUES (?, ?, ?, ?, NULL, NULL, ?)",
                (job_id, kind, attempt, url, now()),
            )

    def end_webhook_attempt(
        self,
        *,
        job_id: str,
        attempt: int,
        status_code: int | None,
        error: str | None,
        state: str,
        next_attempt_at: str | None,
        kind: str = COMPLETION,
    ) -> None:
        """Record an attempt's answer and what follows: another attempt, or the final state."""
        with self.tx() as tx:
            tx.run(
                "UPDATE webhook_deliveries SET status_code = ?, error = ?, next_attempt_at = ? "
                "WHERE job_id = ? AND kind = ? AND attempt = ?",
                (status_code, error, next_attempt_at, job_id, kind, attempt),
            )
            # Only while no later attempt started (one whose lease ran out meanwhile decides).
            tx.run(
                "UPDATE webhook_outbox SET state = ?, next_attempt_at = ?, finished_at = ? "
                "WHERE job_id = ? AND kind = ? AND attempts = ?",
                (state, next_attempt_at, None if state == PENDING else now(), job_id, kind,
                 attempt),
            )

    # --- report sign-offs ---------------------------------------------------------------------

    def add_signoff(self, *, job_id: str, signed_by: str, role: str, remarks: str) -> bool:
        """Record the signature of a job's report and queue its webhook in one transaction;
        False when it was signed before."""
        with self.tx() as tx:
            if tx.run(
                "INSERT INTO report_signoffs (job_id, signed_by, role, remarks, signed_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id) DO NOTHING",
                (job_id, signed_by, role, remarks, now()),
            ).rowcount != 1:
                return False
            _enqueue_webhook(tx, job_id, SIGNOFF)
            return True

    def signoff(self, job_id: str) -> dict | None:
        with self.tx() as tx:
            return tx.one("SELECT * FROM report_signoffs WHERE job_id = ?", (job_id,))

    # --- tokens -------------------------------------------------------------------------------

    def add_token(self, *, role: str, token_hash: str, expires_at: str | None = None) -> str:
        token_id = new_id()
        with self.tx() as tx:
            tx.run(
                "INSERT INTO api_tokens (id, role, token_hash, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_id, role, token_hash, now(), expires_at),
            )
        return token_id

    def token_by_hash(self, token_hash: str) -> dict | None:
        """The token's row while it is valid: neither revoked nor expired."""
        with self.tx() as tx:
            return tx.one(
                "SELECT * FROM api_tokens WHERE token_hash = ? AND revoked_at IS NULL "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (token_hash, now()),
            )

    def tokens(self) -> list[dict]:
        """Every token without its hash, oldest first."""
        with self.tx() as tx:
            return tx.all(
                "SELECT id, role, created_at, expires_at, revoked_at FROM api_tokens "
                "ORDER BY created_at"
            )

    def revoke_token(self, token_id: str) -> bool:
        """Revoke a token; False when there is no such token or it was revoked before."""
        with self.tx() as tx:
            return (
                tx.run(
                    "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (now(), token_id),
                ).rowcount
                == 1
            )
