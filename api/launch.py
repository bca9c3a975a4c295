"""The one launcher of catalog playbooks outside the HTTP API: `emsops run`, `emsops drill`, the
demo and the benches create an internal job in the API's store and run it here, synchronously,
through the same JobRunner (host locks, allow-listed environment, redaction, events, verdict).

An engineer's hand run of `ansible-playbook` stays a legitimate path (the run lock on the hosts
guards it); `hand_run_command` is the one place that command line is built.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from api import store as st
from api.errors import ApiError
from api.inventory import resolve_limit
from api.metrics import Metrics
from api.models import JobRequest
from api.runner import JobRunner, Verifier, default_verifier
from api.settings import Settings, get_settings
from api.store import Store

# Jobs started from the command line belong to this customer of the store (created on first use);
# their tickets are `cli-<random>` so they never meet a ticket system's ids.
CLI_CUSTOMER = "emsops-cli"
CLI_CALLER = "cli"
_REQUEST = TypeAdapter(JobRequest)


class LaunchError(Exception):
    """The run cannot start: bad parameters, unknown hosts, hosts held by another job."""


class _NoWebhooks:
    """Command-line jobs go to no ticket system: nothing to wake."""

    def notify(self, job_id: str) -> None:
        pass


def hand_run_command(inventory: Path, playbook: str | Path, *args: str) -> list[str]:
    """The `ansible-playbook` command line of an engineer's hand run (tests, the bench baseline):
    a catalog playbook by its file name (`site.yml`), or the engineer's own playbook by path."""
    book = str(playbook) if isinstance(playbook, Path) else f"playbooks/{playbook}"
    return [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), book,
            *args]


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`key=value` pairs; a value holding a comma is a list (e.g. meters=m01,m02)."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LaunchError(f"parameter {pair!r} is not key=value")
        params[key] = value.split(",") if "," in value else value
    return params


def run_job(
    service: str,
    inventory: Path,
    *,
    limit: str = "all",
    parameters: dict[str, Any] | None = None,
    note: str | None = None,
    settings: Settings | None = None,
    verifier: Verifier | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> dict:
    """Create the job in the store and run it to its end in this thread; returns its row."""
    settings = settings or get_settings()
    ticket_id = f"cli-{secrets.token_hex(8)}"
    try:
        body = _REQUEST.validate_python({
            "service": service, "ticket_id": ticket_id, "customer_id": CLI_CUSTOMER,
            "limit": limit, "parameters": parameters or {}, "note": note,
        })
    except ValidationError as exc:
        raise LaunchError(_validation_message(exc)) from None
    inventory = inventory.resolve()  # the real path keys the host locks, as the API's
    if not inventory.is_file():
        raise LaunchError(f"inventory {inventory} does not exist")
    if not (settings.project_dir / "playbooks" / f"{service}.yml").is_file():
        raise LaunchError(f"no catalog playbook for {service}")
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store.from_settings(settings)
    try:
        try:
            targets = resolve_limit(inventory, body.limit)
        except ApiError as exc:
            raise LaunchError(exc.message) from None
        if store.get_customer(CLI_CUSTOMER) is None:
            store.put_customer(customer_id=CLI_CUSTOMER, name="emsops command line",
                               webhook_url=None)
        request_doc = body.model_dump(mode="json")
        decision = {
            "outcome": "covered", "rule": "cli.engineer", "settled": True, "runnable": True,
            "reason": "run by an engineer from the emsops command line", "quote": None,
            "details": {},
        }
        decision_id = store.add_decision(
            ticket_id=ticket_id, customer_id=CLI_CUSTOMER, service=service,
            request=request_doc, decision=decision, caller=CLI_CALLER)
        try:
            job, _ = store.create_job(
                ticket_id=ticket_id, customer_id=CLI_CUSTOMER, service=service,
                limit_pattern=body.limit, inventory=str(inventory), hosts=sorted(targets),
                parameters=request_doc["parameters"], note=note, fingerprint=ticket_id,
                decision_id=decision_id, decision=decision, created_by=CLI_CALLER)
        except ApiError as exc:
            raise LaunchError(f"{exc.message}: {exc.detail}") from None
        runner = JobRunner(settings=settings, store=store, verifier=verifier or default_verifier,
                           notifier=_NoWebhooks(), metrics=Metrics(), on_event=on_event,
                           webhooks=False)
        try:
            runner.run_now(job["id"])
        except KeyboardInterrupt:
            # The runner's own cleanup ran (its playbook killed, its folder cleaned): free the
            # hosts too, or they stay held by a job nobody runs.
            store.finish_job(job["id"], state=st.INTERRUPTED, webhook=False,
                             error="interrupted at the command line")
            raise
        return store.get_job(job["id"])
    finally:
        store.close()


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
        for e in exc.errors()
    )


def stdout_of(job: dict, settings: Settings | None = None) -> str:
    """The run's redacted ansible-playbook output, as the runner kept it."""
    settings = settings or get_settings()
    path = settings.runs_dir / job["id"] / "artifacts" / job["id"] / "stdout"
    return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""


def print_progress(event: dict) -> None:
    if event.get("stdout"):
        print(event["stdout"], flush=True)


def summary(job: dict) -> str:
    lines = [f"job {job['id']} ({job['service']}): {job['state']}"
             + (f": {job['error']}" if job["error"] else "")]
    for host, stats in sorted((job["host_stats"] or {}).items()):
        lines.append(f"  {host}: ok={stats['ok']} changed={stats['changed']} "
                     f"failed={stats['failures']} unreachable={stats['dark']}")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run a catalog service as a job (locks, redaction, records, verification)",
        description="Create a job in the API's store (EMSOPS_DATA_DIR) and run it here through "
                    "the API's job runner. Parameters are those of the service's API model. "
                    "Exit status 1 when the job does not succeed.")
    p.add_argument("service")
    p.add_argument("-i", "--inventory", required=True, type=Path)
    p.add_argument("-l", "--limit", default="all")
    p.add_argument("-e", "--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a service parameter (repeatable); a list value: a,b,c")
    p.add_argument("--note")
    p.add_argument("--quiet", action="store_true", help="no playbook output, only the result")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from api.cli import CliError

    try:
        job = run_job(args.service, args.inventory, limit=args.limit,
                      parameters=parse_params(args.param), note=args.note,
                      on_event=None if args.quiet else print_progress)
    except LaunchError as exc:
        raise CliError(str(exc)) from None
    print(summary(job))
    return 0 if job["state"] == st.SUCCEEDED else 1
