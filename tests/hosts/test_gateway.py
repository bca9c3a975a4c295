"""A healthy gateway: collector up, every meter read recently, the spool forwarded."""

import pytest
from hostcheck import age_s, freshness_limit_s, http_json, setting

pytestmark = pytest.mark.groups("ems_gateways")


def _health(host, hostvars) -> dict:
    port = setting(hostvars, "ems_gateway_status_port")
    return http_json(host, f"http://127.0.0.1:{port}/health")["body"]


def test_collector_is_active_and_enabled(host, hostvars):
    unit = host.service(setting(hostvars, "ems_gateway_unit"))
    assert unit.is_running, f"{unit.name} is not running"
    assert unit.is_enabled, f"{unit.name} is not enabled"


def test_status_port_listens(host, hostvars):
    port = setting(hostvars, "ems_gateway_status_port")
    assert host.socket(f"tcp://0.0.0.0:{port}").is_listening


def test_collector_runs_the_expected_version(host, hostvars):
    assert _health(host, hostvars)["version"] == hostvars["ems_release_version"]


def test_every_meter_was_read_recently(host, hostvars):
    meters = _health(host, hostvars)["meters"]
    limit = freshness_limit_s(hostvars)
    stale = {m["id"]: meters.get(m["id"], {}).get("last_good_read")
             for m in hostvars["ems_gateway_meters"]
             if age_s(meters.get(m["id"], {}).get("last_good_read")) > limit}
    assert not stale, f"meters not read in the last {limit:.0f}s: {stale}"


def test_backlog_is_drained(host, hostvars):
    backlog = _health(host, hostvars)["backlog"]
    # A reading taken since the last forwarding pause may wait for the next one; nothing older.
    limit = float(setting(hostvars, "ems_gateway_forward_interval_s")) + 5
    oldest = backlog["oldest_age_s"]
    assert oldest is None or oldest <= limit, f"backlog not forwarded: {backlog}"
