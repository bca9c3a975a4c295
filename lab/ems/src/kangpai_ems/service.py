"""What every entry point shares: the --config argument, logging to stderr, SIGTERM handling."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from . import config
from ._release import VERSION


def parse_config(description: str, sections: Sequence[str],
                 argv: Sequence[str] | None = None) -> config.Config:
    """Parse `--config PATH`, load it, check the `sections` the program reads and set up
    logging; exit 2 with one line on stderr if the file or one of those sections is bad."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="/etc/kangpai-ems/ems.conf",
                        help="INI configuration file (default: %(default)s)")
    parser.add_argument("--version", action="version", version=VERSION)
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config)
        level = cfg.ems.log_level
        for section in sections:
            getattr(cfg, section)
    except config.ConfigError as exc:
        setup_logging("INFO")
        logging.getLogger("kangpai_ems").error("%s", exc)
        sys.exit(2)
    setup_logging(level)
    return cfg


def setup_logging(level: str) -> None:
    # journald timestamps every line, so the format carries none.
    logging.basicConfig(stream=sys.stderr, level=level,
                        format="%(levelname)s %(name)s: %(message)s", force=True)


def stop_event() -> threading.Event:
    """An event set by SIGTERM or SIGINT, for daemons that shut down cleanly."""
    event = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("kangpai_ems").info("received %s, shutting down",
                                              signal.Signals(signum).name)
        event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return event
