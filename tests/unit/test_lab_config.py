"""The lab's site shape: hosts, groups and addresses the inventory is written from."""

import ipaddress

from lab import config
from lab.inventory import render_hosts


def test_inventory_has_every_group_of_the_design():
    children = render_hosts()["all"]["children"]
    assert set(children) == {"ems_app", "ems_db", "ems_gateways", "ems_meters",
                             "backup_servers", "standby", "network_devices"}


def test_inventory_places_each_lab_host_in_its_group():
    children = render_hosts()["all"]["children"]
    expected = {"ems_app": "ems-app", "ems_db": "ems-db", "ems_gateways": "ems-gw1",
                "ems_meters": "meters", "backup_servers": "backup", "standby": "standby"}
    for group, name in expected.items():
        assert list(children[group]["hosts"]) == [name]
    assert "hosts" not in children["network_devices"]


def test_host_addresses_are_unique_and_inside_the_bridge_subnet():
    net = ipaddress.ip_network(f"{config.BRIDGE_ADDRESS}/{config.PREFIX_LEN}", strict=False)
    addresses = [ipaddress.ip_address(h.address) for h in config.HOSTS]
    assert len(set(addresses)) == len(addresses)
    assert all(a in net and str(a) != config.BRIDGE_ADDRESS for a in addresses)


def test_inventory_pins_host_keys_instead_of_trusting_any():
    args = render_hosts()["all"]["vars"]["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in args
    assert "UserKnownHostsFile=" in args


def test_image_cache_key_follows_the_recipe(monkeypatch):
    before = config.image_key()
    monkeypatch.setattr(config, "BASE_PACKAGES", (*config.BASE_PACKAGES, "curl"))
    assert config.image_key() != before


def test_the_second_subnet_is_another_one_with_a_controller_address():
    first = ipaddress.ip_network(f"{config.BRIDGE_ADDRESS}/{config.PREFIX_LEN}", strict=False)
    second = ipaddress.ip_network(f"{config.BRIDGE_ADDRESS2}/{config.PREFIX_LEN}", strict=False)
    assert not first.overlaps(second)
    assert f"{config.SUBNET2_PREFIX}.1" == config.BRIDGE_ADDRESS2
