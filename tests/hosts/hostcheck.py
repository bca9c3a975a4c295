"""Shared by the host suites: the values a site is measured against, and a host-side HTTP GET."""

from __future__ import annotations

import json
from datetime import UTC, datetime

ROLE_DEFAULTS = {
    "ems_platform_port": 8080,
    "ems_platform_unit": "ems-platform.service",
    "ems_platform_aggregate_unit": "ems-aggregate",
    "ems_platform_license_file": "/etc/kangpai-ems/license.json",
    "ems_gateway_unit": "ems-collector.service",
    "ems_gateway_status_port": 8081,
    "ems_gateway_poll_interval_s": 900,
    "ems_gateway_forward_interval_s": 5,
    "ems_meter_sim_unit": "ems-meter-sim.service",
    "ems_meter_sim_port": 502,
    "ems_postgresql_port": 5432,
    "ems_postgresql_db_name": "ems",
    "ems_backup_server_user": "emsbackup",
    "ems_backup_server_repo_dir": "/srv/emsbackup/repo",
}


def setting(hostvars: dict, name: str):
    return hostvars.get(name, ROLE_DEFAULTS[name])


def age_s(iso: str | None) -> float:
    """Seconds since an ISO 8601 UTC timestamp (infinite when there is none)."""
    if not iso:
        return float("inf")
    ts = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (datetime.now(UTC) - ts).total_seconds()


def freshness_limit_s(hostvars: dict) -> float:
    """Readings are fresh when younger than three poll intervals (plus one forwarding pause)."""
    return (3 * float(setting(hostvars, "ems_gateway_poll_interval_s"))
            + float(setting(hostvars, "ems_gateway_forward_interval_s")))


def http_json(host, url: str, timeout: float = 5.0):
    """GET a JSON document from the host's own point of view (the host's Python, no curl)."""
    script = ("import json,sys,urllib.request,urllib.error\n"
              "try:\n r=urllib.request.urlopen(sys.argv[1],timeout=float(sys.argv[2]))\n"
              " print(json.dumps({'status':r.status,'body':json.load(r)}))\n"
              "except urllib.error.HTTPError as e:\n"
              " print(json.dumps({'status':e.code,'body':json.load(e)}))\n")
    out = host.check_output("python3 -c %s %s %s", script, url, str(timeout))
    return json.loads(out)
