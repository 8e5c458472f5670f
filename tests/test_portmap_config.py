"""portmap's config parsing: port ranges, hostIP families, duplicate and invalid entries (no kernel needed)."""

import ipaddress

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.results import Result
from cni_plugins.portmap import config


def entries(*mappings, ips=("10.88.0.2/24", "fd00:88::2/64")):
    prev = Result.from_dict({"interfaces": [{"name": "eth0", "sandbox": "/run/netns/x"}],
                             "ips": [{"address": a, "interface": 0} for a in ips]})
    parsed = config.parse_mappings({"portMappings": list(mappings)})
    return [(e.family, str(e.host_ip) if e.host_ip else None, e.protocol, e.host_port, str(e.container.ip),
             e.container_port) for e in config.dnat_entries(parsed, config.container_addresses(prev))]


def test_empty_host_ip_maps_both_families_and_unspecified_ones_only_their_own():
    assert entries({"hostPort": 80, "containerPort": 8080}) == [
        (4, None, "tcp", 80, "10.88.0.2", 8080), (6, None, "tcp", 80, "fd00:88::2", 8080)]
    assert [e[0] for e in entries({"hostPort": 80, "containerPort": 80, "hostIP": "0.0.0.0"})] == [4]
    assert [e[0] for e in entries({"hostPort": 80, "containerPort": 80, "hostIP": "::"})] == [6]
    assert entries({"hostPort": 80, "containerPort": 80, "hostIP": "192.168.1.1", "protocol": "UDP"}) == [
        (4, "192.168.1.1", "udp", 80, "10.88.0.2", 80)]


def test_family_without_container_address_is_skipped():
    assert entries({"hostPort": 80, "containerPort": 80, "hostIP": "fd00::1"}, ips=("10.88.0.2/24",)) == []


@pytest.mark.parametrize("mapping", [
    {"hostPort": "9000-9002", "containerPort": 80},
    {"hostPort": "9000-9002", "containerPort": "80-82"},
    {"hostPort": 9000, "containerPort": 80, "range": 3},
])
def test_port_range_forms_map_host_port_i_to_container_port_i(mapping):
    assert [(e[3], e[5]) for e in entries(mapping, ips=("10.88.0.2/24",))] == [(9000, 80), (9001, 81), (9002, 82)]


@pytest.mark.parametrize("mapping, key", [
    ({"hostPort": "9000-9001", "containerPort": 80, "range": 2}, "range"),
    ({"hostPort": 65535, "containerPort": 80, "range": 2}, "hostPort"),
    ({"hostPort": "a-b", "containerPort": 80}, "hostPort"),
    ({"hostPort": True, "containerPort": 80}, "hostPort"),
    ({"hostPort": 80}, "containerPort"),
])
def test_bad_ranges_name_the_key(mapping, key):
    with pytest.raises(CNIError) as err:
        config.parse_mappings({"portMappings": [mapping]})
    assert err.value.code == 7 and f"portMappings[0].{key}" in err.value.msg


def test_the_same_host_port_twice_in_one_request_is_refused():
    with pytest.raises(CNIError) as err:
        entries({"hostPort": "80-81", "containerPort": 80}, {"hostPort": 81, "containerPort": 90})
    assert err.value.code == 7 and "tcp/81 on 0.0.0.0 is mapped twice" in err.value.msg


def test_options_defaults_and_profile_identity():
    opts = config.parse_options({})
    assert (opts.snat, opts.masq_all, opts.mark) == (True, False, 0x2000)
    assert config.parse_options({"conditionsV4": "ip saddr 10.0.0.0/8"}).conditions(4) == "ip saddr 10.0.0.0/8"
    assert opts.digest() != config.parse_options({"masqAll": True}).digest()


def test_container_address_prefers_sandbox_interface():
    prev = Result.from_dict({"interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
                             "ips": [{"address": "10.0.0.1/24", "interface": 0},
                                     {"address": "10.0.0.2/24", "interface": 1}]})
    assert config.container_addresses(prev)[4] == ipaddress.ip_interface("10.0.0.2/24")
