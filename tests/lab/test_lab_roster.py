"""Issue 9's roster: a gateway added at run time with ifupdown boots, keeps its place and its own
meters across `lab up`, is deployed by site.yml, sends its own meters' readings (and only those)
to the platform, passes `emsops verify`, and leaves the site as it was once removed.

The tests run in file order on one added host; the last one removes it (the fixture's teardown
removes it too when an earlier test failed)."""

from __future__ import annotations

import json

import pytest
from labkit import (
    address,
    db_counts,
    emsops,
    http_json,
    lab_ssh,
    layout,
    psql_command,
    run_playbook,
    wait_until,
)

from lab import config, network, roster
from lab.fingerprint import diff, fingerprint
from lab.hosts import Host, known_hosts
from lab.hosts import host as lab_host

pytestmark = pytest.mark.lab

NAME = "ems-gw2"
UNCHANGED_HOSTS = ("ems-gw1", "meters")  # the meters host comes back to its old config


def _inventory_files() -> dict[str, str]:
    inv = config.inventory_dir()
    return {str(p.relative_to(inv)): p.read_text()
            for p in [inv / "hosts.yml", *sorted((inv / "host_vars").glob("*.yml"))]}


def _readings_by_gateway(since: str) -> dict[str, set[str]]:
    sql = ("SELECT gateway_id, meter_id FROM readings WHERE received_at > "
           f"'{since}'::timestamptz GROUP BY 1, 2")
    out = lab_ssh("ems-db", psql_command(sql)).stdout
    got: dict[str, set[str]] = {}
    for line in out.splitlines():
        if line.strip():
            gateway, meter = line.split()
            got.setdefault(gateway, set()).add(meter)
    return got


def _forget_its_data(meters: list[str]) -> None:
    """What the added gateway put into the site's database goes with it."""
    ids = ", ".join(f"'{m}'" for m in meters)
    sql = (f"DELETE FROM readings WHERE meter_id IN ({ids}); "
           f"DELETE FROM aggregates WHERE meter_id IN ({ids}); "
           f"DELETE FROM gateways WHERE gateway_id = '{NAME}'")
    lab_ssh("ems-db", psql_command(sql))


@pytest.fixture(scope="module")
def before(lab_site):
    """The site before the host is added; the teardown removes the host if a test failed."""
    snapshot = {"inventory": _inventory_files(), "db_meters": set(db_counts()),
                "fingerprints": {h: fingerprint(h) for h in UNCHANGED_HOSTS},
                "started": lab_ssh("ems-db", psql_command("SELECT now()")).stdout.strip()}
    yield snapshot
    if NAME in {s.name for s in roster.added()}:
        meters = [f"m{u:02d}" for u in roster.spec(NAME).meters]
        emsops("lab", "remove", NAME)
        run_playbook("site.yml", "--limit", "meters", "--tags", "ems_meter_sim")
        _forget_its_data(meters)


@pytest.fixture(scope="module")
def gw2(before):
    proc = emsops("lab", "add", NAME, "--group", "ems_gateways", "--net", "ifupdown")
    assert proc.returncode == 0, proc.stderr
    return roster.spec(NAME)


def test_it_boots_with_ifupdown_and_answers_over_ssh(gw2):
    assert gw2.net == "ifupdown" and gw2.groups == ("ems_gateways",)
    script = ("ifquery host0; systemctl is-active networking.service; "
              "systemctl is-enabled systemd-networkd.service || true; ip -4 -o addr show host0")
    out = lab_ssh(NAME, script).stdout
    assert f"address: {gw2.address}\n" in out  # what ifupdown itself read from interfaces
    assert "\nactive\n" in out and "disabled" in out
    assert f"inet {gw2.address}/{config.PREFIX_LEN}" in out


def test_it_has_meters_no_other_gateway_polls(gw2):
    theirs = {u for s in roster.hosts() if s.name != NAME for u in s.meters}
    assert gw2.meters and not set(gw2.meters) & theirs
    assert [m["unit"] for m in layout(NAME)["ems_gateway_meters"]] == list(gw2.meters)


def test_lab_up_again_keeps_it_with_its_variables(gw2):
    files, pid = _inventory_files(), lab_host(NAME).pid()
    proc = emsops("lab", "up")
    assert proc.returncode == 0, proc.stderr
    assert _inventory_files() == files
    assert f"host_vars/{NAME}.yml" in files and NAME in files["hosts.yml"]
    assert lab_host(NAME).pid() == pid


def test_site_yml_deploys_it_and_its_own_meters_reach_the_platform(gw2, before):
    run_playbook("site.yml", "--limit", f"{NAME}:meters")
    ours = {f"m{u:02d}" for u in gw2.meters}
    got = wait_until(lambda: (lambda g: g if g.get(NAME) == ours else None)(
        _readings_by_gateway(before["started"])), 60, f"readings of {sorted(ours)} from {NAME}")
    # The first gateway still polls its own meters, never the new ones.
    assert got["ems-gw1"] and not got["ems-gw1"] & ours
    port = layout(NAME)["ems_layout_gateway_status_port"]
    assert set(http_json(f"http://{address(NAME)}:{port}/health")["meters"]) == ours


def test_it_passes_emsops_verify_for_its_group(gw2):
    proc = emsops("verify", "-i", str(config.inventory_dir() / "hosts.yml"), "--limit", NAME,
                  "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    verdict = json.loads(proc.stdout)["hosts"][NAME]
    assert verdict["ok"] and verdict["checks"] > 0, verdict


def test_removing_it_leaves_the_site_as_before(gw2, before):
    proc = emsops("lab", "remove", NAME)
    assert proc.returncode == 0, proc.stderr
    # The simulator back to the meters the remaining gateways poll.
    run_playbook("site.yml", "--limit", "meters", "--tags", "ems_meter_sim")
    _forget_its_data([f"m{u:02d}" for u in gw2.meters])
    assert NAME not in {s.name for s in roster.hosts()}
    assert _inventory_files() == before["inventory"]
    assert set(db_counts()) == before["db_meters"]
    assert not Host(gw2).dir.exists()
    assert not any(NAME in link for link in network.lab_links())
    assert gw2.address not in known_hosts().read_text()
    for h in UNCHANGED_HOSTS:
        assert not diff(before["fingerprints"][h], fingerprint(h)), h
