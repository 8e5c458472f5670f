"""Spec versions: what VERSION answers, and how results are read and written across 0.3.0 .. 1.1.0."""

import ipaddress
import json

import pytest

from cni_plugins.errors import CNIError
from cni_plugins.results import DNS, Interface, IPConfig, Result, Route

ALL_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
EXECUTABLES = ["bridge", "host-local", "static", "loopback", "portmap", "firewall", "tuning"]


# -- VERSION -------------------------------------------------------------------------------------

@pytest.mark.parametrize("plugin", EXECUTABLES)
def test_version_lists_every_supported_version_with_podman_style_env(cni, plugin):
    # podman sets every other CNI_* variable to "dummy" and sends {"cniVersion":"1.0.0"}.
    reply = cni.version(plugin)
    assert reply["supportedVersions"] == ALL_VERSIONS
    assert reply["cniVersion"] == "1.1.0"


def test_version_needs_only_cni_command(cni):
    inv = cni.invoke("loopback", "VERSION", {"cniVersion": "0.4.0"}, env={"CNI_COMMAND": "VERSION"})
    assert inv.rc == 0, inv
    assert json.loads(inv.stdout)["supportedVersions"] == ALL_VERSIONS


def test_version_with_empty_stdin_still_answers(cni):
    inv = cni.invoke("loopback", "VERSION", b"", env={"CNI_COMMAND": "VERSION"})
    assert inv.rc == 0, inv
    assert "1.0.0" in inv.reply["supportedVersions"]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_supported_version_is_accepted_for_add(cni, container_ns, version):
    result = cni.add("loopback", {"cniVersion": version, "name": "v", "type": "loopback"}, container_ns)
    assert result["cniVersion"] == version


# -- Result conversions --------------------------------------------------------------------------

FULL_1_1 = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
        {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/x", "mtu": 1400,
         "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6"},
    ],
    "ips": [
        {"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 1},
        {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 1},
    ],
    "routes": [
        {"dst": "0.0.0.0/0", "gw": "10.22.0.1", "mtu": 1300, "advmss": 1260, "priority": 100, "table": 200,
         "scope": 0},
        {"dst": "192.168.0.0/24"},
    ],
    "dns": {"nameservers": ["10.22.0.1"], "domain": "example.org", "search": ["example.org"],
            "options": ["ndots:2"]},
}


def test_1_1_result_round_trips_unchanged():
    assert Result.from_dict(FULL_1_1).to_dict("1.1.0") == FULL_1_1


def test_parsed_fields_are_typed():
    result = Result.from_dict(FULL_1_1)
    assert result.ips[0].address == ipaddress.ip_interface("10.22.0.5/16")
    assert result.ips[0].gateway == ipaddress.ip_address("10.22.0.1")
    assert result.ips[1].family == 6
    assert result.routes[0].dst == ipaddress.ip_network("0.0.0.0/0")
    assert result.routes[0].table == 200
    assert result.interfaces[1].mtu == 1400


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0", "1.0.0"])
def test_1_1_only_fields_are_dropped_below_1_1(version):
    out = Result.from_dict(FULL_1_1).to_dict(version)
    assert out["cniVersion"] == version
    assert out["routes"][0] == {"dst": "0.0.0.0/0", "gw": "10.22.0.1"}
    assert out["interfaces"][1] == {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/run/netns/x"}


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_ip_version_field_is_written_only_before_1_0(version):
    out = Result.from_dict(FULL_1_1).to_dict(version)
    assert [ip["version"] for ip in out["ips"]] == ["4", "6"]
    assert out["ips"][0] == {"version": "4", "address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 1}


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_ip_version_field_is_absent_from_1_x(version):
    out = Result.from_dict(FULL_1_1).to_dict(version)
    assert all("version" not in ip for ip in out["ips"])


def test_0_4_0_result_reads_and_upgrades_to_1_0():
    old = {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/y"}],
        "ips": [{"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }
    result = Result.from_dict(old)
    assert result.to_dict("0.4.0") == old
    assert result.to_dict("1.0.0") == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/y"}],
        "ips": [{"address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    }


def test_empty_result_renders_only_version_and_dns():
    assert Result().to_dict("1.0.0") == {"cniVersion": "1.0.0", "dns": {}}
    assert Result.from_dict({"cniVersion": "1.0.0"}).to_dict("1.0.0") == {"cniVersion": "1.0.0", "dns": {}}


def test_ipam_style_result_without_interfaces():
    result = Result.from_dict({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.9/8"}]})
    assert result.ips[0].interface is None and result.ips[0].gateway is None
    assert result.to_dict("0.3.1")["ips"] == [{"version": "4", "address": "10.0.0.9/8"}]


def test_route_zero_valued_1_1_fields_are_kept():
    route = Route(ipaddress.ip_network("10.0.0.0/8"), scope=0, table=0)
    assert route.to_dict("1.1.0") == {"dst": "10.0.0.0/8", "scope": 0, "table": 0}


def test_dns_is_false_when_empty_and_copies_lists():
    assert not DNS()
    servers = ["1.1.1.1"]
    dns = DNS.from_dict({"nameservers": servers})
    servers.append("8.8.8.8")
    assert dns.to_dict() == {"nameservers": ["1.1.1.1"]}


def test_route_dst_host_bits_are_tolerated():
    # Runtimes and IPAMs write "10.1.0.5/24" now and then; the network is what matters.
    assert str(Route.from_dict({"dst": "10.1.0.5/24"}).dst) == "10.1.0.0/24"


def test_add_interface_returns_its_index():
    result = Result()
    assert result.add_interface(Interface("cni0")) == 0
    assert result.add_interface(Interface("eth0")) == 1
    result.ips.append(IPConfig(ipaddress.ip_interface("10.0.0.2/24"), interface=1))
    assert result.to_dict("1.0.0")["ips"][0]["interface"] == 1


@pytest.mark.parametrize("bad, word", [
    ({"ips": [{"address": "10.0.0.300/24"}]}, "10.0.0.300/24"),
    ({"ips": [{"address": None}]}, "address"),
    ({"ips": [{"address": "10.0.0.1/24", "gateway": "nope"}]}, "nope"),
    ({"ips": [{"address": "10.0.0.1/24", "interface": "0"}]}, "interface"),
    ({"routes": [{"dst": "not-a-net"}]}, "not-a-net"),
    ({"routes": [{"dst": "0.0.0.0/0", "mtu": "1500"}]}, "mtu"),
    ({"interfaces": [{"mac": "aa:bb:cc:dd:ee:ff"}]}, "interface"),
    ({"interfaces": [{"name": "eth0", "mtu": "1500"}]}, "mtu"),
    ({"dns": ["1.1.1.1"]}, "dns"),
    (["not", "a", "result"], "result"),
])
def test_malformed_results_are_decoding_failures_naming_the_value(bad, word):
    with pytest.raises(CNIError) as info:
        Result.from_dict(bad)
    assert info.value.code == 6
    assert word in info.value.msg
