"""Send the platform again every reading this gateway got confirmed since a moment.

For a platform whose database came back from a backup: what the gateway had confirmed after the
dump is missing there, and the gateway still holds it as history (`history_hours`). The running
collector sends the readings again; the platform ignores those it already has. Prints one JSON
line: how many readings wait again, and since when the history reaches back.

    python3 -m kangpai_ems.replay --config /etc/kangpai-ems/ems.conf --since 2026-11-29T02:00:00Z
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from . import config
from .spool import Spool
from .timeutil import iso, parse_iso


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="/etc/kangpai-ems/ems.conf",
                        help="INI configuration file (default: %(default)s)")
    parser.add_argument("--since", required=True, type=parse_iso,
                        help="ISO 8601 time with its offset, e.g. 2026-11-29T02:00:00Z")
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config).collector
    except config.ConfigError as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    if not settings.spool_path.exists():
        print(f"replay: no spool at {settings.spool_path}", file=sys.stderr)
        return 1
    try:
        spool = Spool(settings.spool_path, settings.history_hours * 3600)
        try:
            _kept, whole_since = spool.history()
            replayed = spool.replay(args.since.timestamp())
        finally:
            spool.close()
    except sqlite3.Error as exc:
        print(f"replay: spool {settings.spool_path}: {exc}", file=sys.stderr)
        return 1
    # A history that starts after `since` (forgotten, or a gateway redeployed since then)
    # cannot send what was confirmed before it: the caller is told, the readings are lost.
    print(json.dumps({
        "replayed": replayed,
        "since": iso(args.since),
        "history_whole_since": iso(datetime.fromtimestamp(whole_since, UTC)),
        "complete": whole_since <= args.since.timestamp(),
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
