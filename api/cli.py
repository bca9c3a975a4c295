"""The `emsops` command line: lab, verify, serve, token, run, drill."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


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
    _add_service_parsers(sub)
    return parser


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
