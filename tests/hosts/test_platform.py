"""A healthy application host: platform up with the expected release, fresh data, aggregation ok."""

import json

import pytest
from hostcheck import age_s, freshness_limit_s, http_json

pytestmark = pytest.mark.groups("ems_app")


def _url(site_vars: dict, path: str) -> str:
    return f"http://127.0.0.1:{site_vars['ems_layout_platform_port']}{path}"


@pytest.mark.parametrize("unit_var,suffix", [("ems_layout_platform_unit", ""),
                                             ("ems_layout_aggregate_unit", ".timer")])
def test_unit_is_active_and_enabled(host, site_vars, unit_var, suffix):
    unit = host.service(site_vars[unit_var] + suffix)
    assert unit.is_running, f"{unit.name} is not running"
    assert unit.is_enabled, f"{unit.name} is not enabled"


def test_http_port_listens(host, site_vars):
    assert host.socket(f"tcp://0.0.0.0:{site_vars['ems_layout_platform_port']}").is_listening


def test_health_is_ok_with_the_expected_version(host, site_vars, record_property):
    health = http_json(host, _url(site_vars, "/health"))
    if isinstance(health["body"], dict) and "version" in health["body"]:
        record_property("version", health["body"]["version"])
    assert health["status"] == 200, f"/health answered {health['status']}: {health['body']}"
    assert health["body"]["version"] == site_vars["ems_release_version"]
    assert health["body"]["database"] == "ok"


def test_license_is_installed_and_valid(host, site_vars):
    license_file = host.file(site_vars["ems_layout_license_file"])
    assert license_file.exists, "license.json is missing"
    installed = json.loads(license_file.content_string)
    assert installed["customer_id"] == site_vars["ems_platform_license"]["customer_id"]
    assert http_json(host, _url(site_vars, "/health"))["body"]["license"]["valid"] is True


def test_every_meter_has_fresh_readings(host, site_vars, site_meters):
    meters = {m["meter_id"]: m for m in http_json(host, _url(site_vars, "/api/v1/meters"))["body"]}
    limit = freshness_limit_s(site_vars)
    stale = {}
    for meter in site_meters:
        last = meters.get(meter["id"], {}).get("last_ts")
        if age_s(last) > limit:
            stale[meter["id"]] = last
    assert not stale, f"meters without a reading in the last {limit:.0f}s: {stale}"


def test_last_aggregation_run_succeeded(host, site_vars):
    runs = http_json(host, _url(site_vars, "/api/v1/aggregate/runs?limit=5"))["body"]
    finished = [r for r in runs if r["status"] != "running"]
    assert finished, "the aggregation has never run"
    assert finished[0]["status"] == "succeeded", f"last aggregation run: {finished[0]}"
