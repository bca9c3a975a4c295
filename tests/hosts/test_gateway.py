"""A healthy gateway: collector up, every meter read recently, the spool forwarded."""

import pytest
from hostcheck import age_s, freshness_limit_s, http_json

pytestmark = pytest.mark.groups("ems_gateways")


def _health(host, site_vars) -> dict:
    port = site_vars["ems_layout_gateway_status_port"]
    return http_json(host, f"http://127.0.0.1:{port}/health")["body"]


def test_collector_is_active_and_enabled(host, site_vars):
    unit = host.service(site_vars["ems_layout_gateway_unit"])
    assert unit.is_running, f"{unit.name} is not running"
    assert unit.is_enabled, f"{unit.name} is not enabled"


def test_status_port_listens(host, site_vars):
    port = site_vars["ems_layout_gateway_status_port"]
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_collector_runs_the_expected_version(host, site_vars, record_property):
    version = _health(host, site_vars)["version"]
    record_property("version", version)
    assert version == site_vars["ems_release_version"]


def test_every_meter_was_read_recently(host, site_vars):
    meters = _health(host, site_vars)["meters"]
    limit = freshness_limit_s(site_vars)
    stale = {m["id"]: meters.get(m["id"], {}).get("last_good_read")
             for m in site_vars["ems_gateway_meters"]
             if age_s(meters.get(m["id"], {}).get("last_good_read")) > limit}
    assert not stale, f"meters not read in the last {limit:.0f}s: {stale}"


def test_backlog_is_drained(host, site_vars):
    backlog = _health(host, site_vars)["backlog"]
    # A reading taken since the last forwarding pause may wait for the next one; nothing older.
    limit = float(site_vars["ems_gateway_forward_interval_s"]) + 5
    oldest = backlog["oldest_age_s"]
    assert oldest is None or oldest <= limit, f"backlog not forwarded: {backlog}"
