"""The lab's roster: hosts as data (defaults, added, removed), addresses and meters allocated
without collisions, and the inventory written from it (hosts.yml, host_vars/)."""

import ipaddress
import json
import shutil

import pytest
import yaml

from api.layout import site_vars
from lab import config, roster
from lab.errors import LabError
from lab.inventory import HOST_VARS_HEADER, _write_host_vars, render_host_vars, render_hosts

LAB_GROUP_VARS = config.inventory_dir() / "group_vars" / "all" / "main.yml"


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EMSOPS_LAB_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def _net():
    return ipaddress.ip_network(f"{config.BRIDGE_ADDRESS}/{config.PREFIX_LEN}", strict=False)


def test_without_a_roster_file_the_lab_has_its_default_hosts():
    assert roster.hosts() == config.HOSTS
    assert roster.added() == ()


def test_an_added_gateway_is_kept_with_a_free_address_and_meters_of_its_own():
    spec = roster.add("ems-gw2", "ems_gateways", "ifupdown")
    assert roster.hosts() == (*config.HOSTS, spec)  # read back from the state dir
    assert spec.groups == ("ems_gateways",) and spec.net == "ifupdown"
    assert ipaddress.ip_address(spec.address) in _net()
    assert spec.address not in {h.address for h in config.HOSTS} | {config.BRIDGE_ADDRESS}
    gw1 = config.host_spec("ems-gw1")
    assert spec.meters and not set(spec.meters) & set(gw1.meters)
    assert config.host_spec("ems-gw2") == spec


def test_two_added_hosts_never_share_an_address_or_a_meter():
    a = roster.add("ems-gw2", "ems_gateways")
    b = roster.add("ems-gw3", "ems_gateways")
    c = roster.add("db2", "ems_db")
    assert len({a.address, b.address, c.address}) == 3
    assert not set(a.meters) & set(b.meters)
    assert c.meters == () and c.net == "networkd"


def test_a_removed_host_is_forgotten_and_its_address_is_free_again():
    first = roster.add("spare", "standby")
    roster.remove("spare")
    assert "spare" not in {h.name for h in roster.hosts()}
    assert roster.add("spare2", "standby").address == first.address


@pytest.mark.parametrize("name", ["Gw2", "-gw", "gw-", "gw_2", "2gw", "gw.2", "", "x" * 20])
def test_a_bad_name_is_refused_and_nothing_is_recorded(name):
    with pytest.raises(LabError, match="bad host name|too long"):
        roster.add(name, "ems_gateways")
    assert roster.hosts() == config.HOSTS


@pytest.mark.parametrize("name", ["ems-app", "ems-gw2"])
def test_a_duplicate_name_is_refused(name):
    roster.add("ems-gw2", "ems_gateways")
    with pytest.raises(LabError, match=f"already has a host named '{name}'"):
        roster.add(name, "ems_gateways")
    assert len(roster.added()) == 1


def test_an_unknown_group_is_refused_naming_the_groups():
    with pytest.raises(LabError, match="unknown group 'gateways'.*ems_gateways"):
        roster.add("ems-gw2", "gateways")


def test_an_unknown_network_setup_is_refused():
    with pytest.raises(LabError, match="unknown network setup 'netplan'"):
        roster.add("ems-gw2", "ems_gateways", "netplan")


def test_a_full_subnet_is_refused():
    free = roster.LAST_ADDED - roster.FIRST_ADDED + 1
    for i in range(free):
        roster.add(f"h{i}", "standby")
    addresses = [h.address for h in roster.hosts()]
    assert len(set(addresses)) == len(addresses)
    with pytest.raises(LabError, match="is full"):
        roster.add("one-more", "standby")


def test_default_and_unknown_hosts_cannot_be_removed():
    with pytest.raises(LabError, match="default hosts"):
        roster.remove("ems-gw1")
    with pytest.raises(LabError, match="unknown lab host 'nope'"):
        roster.remove("nope")


def test_an_unreadable_roster_says_so(state_dir):
    state_dir.mkdir(parents=True)
    (state_dir / "roster.json").write_text("{not json")
    with pytest.raises(LabError, match="roster .* is unreadable"):
        roster.hosts()


def test_reset_goes_back_to_the_default_roster():
    roster.add("ems-gw2", "ems_gateways")
    roster.reset()
    assert roster.hosts() == config.HOSTS


def test_the_inventory_places_an_added_host_in_its_group():
    spec = roster.add("ems-gw2", "ems_gateways")
    gateways = render_hosts()["all"]["children"]["ems_gateways"]["hosts"]
    assert gateways == {"ems-gw1": {"ansible_host": config.host_spec("ems-gw1").address},
                        "ems-gw2": {"ansible_host": spec.address}}


def test_host_vars_give_each_gateway_its_own_meters(tmp_path):
    spec = roster.add("ems-gw2", "ems_gateways")
    folder = tmp_path / "host_vars"
    _write_host_vars(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["ems-gw1.yml", "ems-gw2.yml"]
    gw2 = yaml.safe_load((folder / "ems-gw2.yml").read_text())["ems_gateway_meters"]
    assert [m["unit"] for m in gw2] == list(spec.meters)
    assert [m["id"] for m in render_host_vars(config.host_spec("ems-gw1"))["ems_gateway_meters"]
            ] == [f"m{u:02d}" for u in range(1, 9)]
    assert {m["host"] for m in gw2} == {config.host_spec("meters").address}


def test_host_vars_of_a_removed_host_go_and_hand_written_ones_stay(tmp_path):
    folder = tmp_path / "host_vars"
    folder.mkdir()
    (folder / "ems-app.yml").write_text("ems_platform_log_level: DEBUG\n")
    roster.add("ems-gw2", "ems_gateways")
    _write_host_vars(folder)
    roster.remove("ems-gw2")
    _write_host_vars(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["ems-app.yml", "ems-gw1.yml"]
    assert (folder / "ems-gw1.yml").read_text().startswith(HOST_VARS_HEADER)


def _inventory(tmp_path):
    inv = tmp_path / "inv"
    (inv / "group_vars" / "all").mkdir(parents=True)
    shutil.copy(LAB_GROUP_VARS, inv / "group_vars" / "all" / "main.yml")
    (inv / "hosts.yml").write_text(yaml.safe_dump(render_hosts()))
    _write_host_vars(inv / "host_vars")
    return inv / "hosts.yml"


def test_as_ansible_sees_it_each_gateway_polls_only_its_own_meters_and_the_simulator_has_all(
        tmp_path):
    spec = roster.add("ems-gw2", "ems_gateways")
    inventory = _inventory(tmp_path)
    meters_address = config.host_spec("meters").address
    gw1 = site_vars(inventory, "ems-gw1")["ems_gateway_meters"]
    gw2 = site_vars(inventory, "ems-gw2")["ems_gateway_meters"]
    assert [m["unit"] for m in gw1] == list(range(1, 9))
    assert [m["unit"] for m in gw2] == list(spec.meters)
    assert {m["host"] for m in gw1 + gw2} == {meters_address}
    assert int(site_vars(inventory, "meters")["ems_meter_sim_meters"]) == max(spec.meters)


def test_roster_file_is_plain_json(state_dir):
    roster.add("ems-gw2", "ems_gateways", "ifupdown")
    rows = json.loads((state_dir / "roster.json").read_text())["added"]
    assert rows[0]["name"] == "ems-gw2" and rows[0]["net"] == "ifupdown"
