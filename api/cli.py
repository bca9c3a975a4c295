"""The `emsops` command line: lab, verify, serve, token, run, drill, inspect."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


class CliError(Exception):
    """A usage or input problem reported on stderr with exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    from api import drill, launch, verify
    from lab import cli as lab_cli

    parser = argparse.ArgumentParser(
        prog="emsops", description="O&M automation for the Kangpai EMS: lab, verification, API.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    lab_cli.add_parser(sub)
    verify.add_parser(sub)
    launch.add_parser(sub)
    drill.add_parser(sub)
    _add_inspect_parser(sub)
    _add_service_parsers(sub)
    return parser


def _add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="inspect a site and print a summary table",
                       description="Run playbooks/inspect.yml (read-only), write the JSON + HTML "
                                   "report under <data dir>/reports/inspections/<site>/ and "
                                   "print every finding above ok. Exit status 1 when the "
                                   "overall status is fail.")
    p.add_argument("-i", "--inventory", required=True, type=Path)
    p.add_argument("--limit", help="only these hosts (an Ansible pattern)")
    p.add_argument("--mode", choices=["automated", "manual"], default="automated",
                   help="manual: the report waits for an engineer's sign-off")
    p.add_argument("-e", "--threshold", action="append", default=[], metavar="NAME=VALUE",
                   help="override a threshold of role inspection, e.g. "
                        "inspection_backup_warn_age_s=3600")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_inspect)


def _thresholds(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.startswith("inspection_"):
            raise CliError(f"-e {pair!r}: give inspection_NAME=VALUE")
        out[name] = yaml.safe_load(value)
    return out


def _inspect(args: argparse.Namespace) -> int:
    import json

    from api import launch
    from api.reports import inspection
    from api.settings import get_settings

    # A job like any other (host locks, records, redaction), through the one launcher.
    try:
        job = launch.run_job("inspect", args.inventory, limit=args.limit or "all",
                             parameters={"thresholds": _thresholds(args.threshold)})
    except launch.LaunchError as exc:
        raise CliError(str(exc)) from None
    stats = job["set_stats"] or {}
    if not stats.get("inspection"):
        raise CliError(f"the inspection ended without results: {launch.summary(job)}")
    reports_dir = get_settings().data_dir / "reports" / "inspections"
    site = args.inventory.resolve().parent.name
    report = inspection.build_report(
        stats, site=site, mode=args.mode, job_id=job["id"], started=job["started_at"],
        previous=inspection.previous_report(reports_dir, site, job["id"]))
    folder = inspection.write_report(reports_dir, report)
    if args.json:
        print(json.dumps({**report, "report_dir": str(folder)}, indent=2))
    else:
        print(f"inspection of {site}: {report['status'].upper()} ({report['counts']['ok']} ok, "
              f"{report['counts']['warn']} warn, {report['counts']['fail']} fail)")
        print(f"  {'host':<12} {'status':<6}")
        for host, host_status in report["hosts"].items():
            print(f"  {host:<12} {host_status:<6}")
        for host, severity, finding, evidence in inspection.summary_rows(report):
            print(f"  {host:<12} {severity:<6} {finding:<32} {evidence}")
        print(f"report: {folder / 'report.html'}")
    return 1 if report["status"] == inspection.FAIL or job["state"] != "succeeded" else 0


def _add_service_parsers(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API for the ticket system")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_serve)

    token = sub.add_parser("token", help="manage API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    create = tsub.add_parser("create", help="create a token and print it once")
    create.add_argument(
        "--role", required=True, choices=["ticket-system", "engineer", "sales", "admin"]
    )
    create.add_argument(
        "--expires-in", metavar="DURATION", help="e.g. 30d, 12h, 90m, 2w (default: never)"
    )
    create.set_defaults(func=_token_create)
    listing = tsub.add_parser("list", help="list tokens: id, role, created, expires, revoked")
    listing.set_defaults(func=_token_list)
    revoke = tsub.add_parser("revoke", help="revoke a token by its id (from `token list`)")
    revoke.add_argument("id")
    revoke.set_defaults(func=_token_revoke)


def _serve(args: argparse.Namespace) -> int:
    from api.server import serve

    serve(host=args.host, port=args.port)
    return 0


def _token_create(args: argparse.Namespace) -> int:
    from api.tokens import create_token, parse_duration

    try:
        expires_in = parse_duration(args.expires_in) if args.expires_in else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(create_token(args.role, expires_in))
    return 0


def _token_list(args: argparse.Namespace) -> int:
    from api.tokens import list_tokens

    columns = ("id", "role", "created_at", "expires_at", "revoked_at")
    print("\t".join(columns))
    for token in list_tokens():
        print("\t".join(token[c] or "-" for c in columns))
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    from api.tokens import revoke_token

    if not revoke_token(args.id):
        raise CliError(f"no unrevoked token with id {args.id}")
    print(f"revoked {args.id}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from api.verify import VerifyError
    from lab.errors import LabError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (LabError, CliError, VerifyError) as exc:
        print(f"emsops: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("emsops: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
