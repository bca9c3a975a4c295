"""Shared by the host suites: freshness limits and a host-side HTTP GET.

The values a host is measured against come from the `site_vars` fixture (conftest.py): the
inventory over the roles' defaults, as the roles see them, never from a copy here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime


def age_s(iso: str | None) -> float:
    """Seconds since an ISO 8601 UTC timestamp (infinite when there is none)."""
    if not iso:
        return float("inf")
    ts = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (datetime.now(UTC) - ts).total_seconds()


def freshness_limit_s(site_vars: Mapping) -> float:
    """Readings are fresh when younger than three poll intervals (plus one forwarding pause)."""
    return (3 * float(site_vars["ems_gateway_poll_interval_s"])
            + float(site_vars["ems_gateway_forward_interval_s"]))


def http_json(host, url: str, timeout: float = 5.0):
    """GET a JSON document from the host's own point of view (the host's Python, no curl)."""
    script = ("import json,sys,urllib.request,urllib.error\n"
              "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=float(sys.argv[2]))\n"
              " print(json.dumps({'status':r.status,'body':json.load(r)}))\n"
              "except urllib.error.HTTPError as e:\n"
              " print(json.dumps({'status':e.code,'body':json.load(e)}))\n")
    out = host.check_output("python3 -c %s %s %s", script, url, str(timeout))
    return json.loads(out)
