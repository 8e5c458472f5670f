"""Argument parsing of the attach/net commands and the runner's flag readers (the one -p grammar,
capability arguments, locations): no kernel state, no subprocesses."""

import pytest

from pynet.cli import build_parser
from pynet.runner import capabilities, locations, ports
from pynet.runner.conflists import build_conflist


@pytest.mark.parametrize("spec, expected", [
    ("8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
    ("53:5353/udp", {"hostPort": 53, "containerPort": 5353, "protocol": "udp"}),
    ("127.0.0.1:8080:80/SCTP", {"hostPort": 8080, "containerPort": 80, "protocol": "sctp", "hostIP": "127.0.0.1"}),
    ("[::1]:8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "::1"}),
    ("::1:8080:80/udp", {"hostPort": 8080, "containerPort": 80, "protocol": "udp", "hostIP": "::1"}),
    ("[fd00::0001]:1:65535", {"hostPort": 1, "containerPort": 65535, "protocol": "tcp", "hostIP": "fd00::1"}),
    (":8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
])
def test_port_specs_become_port_mappings(spec, expected):
    assert ports.to_port_mappings([spec]) == [expected]
    assert ports.parse_publish(spec).to_cni() == expected


def test_a_port_spec_reads_as_a_port_mapping():
    assert ports.parse_publish("10.0.0.1:53:5353/udp") == ports.PortMapping(53, 5353, "udp", "10.0.0.1")


@pytest.mark.parametrize("spec, why", [
    ("0:80", "1-65535"), ("80:70000", "1-65535"), ("a:b", "numbers"), ("80:80/icmp", "expected"),
    ("999.1.1.1:80:80", "bad host IP '999.1.1.1'"), ("1:2:3:4", "bad host IP"), ("[::1]8080:80", "expected"),
    ("", "expected"), ("80:", "expected"), ("a:80", "numbers"),
])
def test_bad_port_specs_are_refused_naming_the_value(spec, why):
    with pytest.raises(ports.PortSpecError, match=f"invalid -p {spec!r}: .*{why}".replace("[", r"\[")):
        ports.parse_publish(spec)


def test_capability_arguments_are_checked_and_must_be_declared():
    caps = capabilities.capability_args([{"hostPort": 1, "containerPort": 2, "protocol": "tcp"}], ["10.1.0.5/24"],
                                        "AA:bb:cc:dd:ee:ff")
    assert caps["ips"] == ["10.1.0.5/24"] and caps["mac"] == "aa:bb:cc:dd:ee:ff" and len(caps["portMappings"]) == 1
    assert capabilities.capability_args(None, None, None) == {}
    with pytest.raises(capabilities.CapabilityError, match="invalid --ip '10.1.0.300'"):
        capabilities.capability_args(ips=["10.1.0.300"])
    with pytest.raises(capabilities.CapabilityError, match="invalid --mac 'aa:bb'"):
        capabilities.capability_args(mac="aa:bb")

    class Conf:
        name = "n"

        def capabilities(self):
            return {"ips"}
    capabilities.require(Conf(), {"ips": ["10.1.0.5"]})
    with pytest.raises(capabilities.CapabilityError, match="network 'n' does not accept --mac, -p: no plugin declares "
                                                           "the capability mac, portMappings"):
        capabilities.require(Conf(), caps)


def test_locations_come_from_flags_then_environment():
    env = {"PYNET_CONFIG_DIR": "/c", "CNI_PATH": "/cni", "PYNET_NETNS_DIR": "/n"}
    assert locations.resolve(config_dir="/flag", environ=env) == \
        {"config_dir": "/flag", "cache_dir": None, "cni_path": "/cni", "netns_dir": "/n"}
    assert locations.resolve(environ=dict(env, PYNET_CNI_PATH="/a:/b"))["cni_path"] == "/a:/b"
    runner = locations.runner({"config_dir": "/c", "cni_path": "/a:/b", "cache_dir": None})
    assert (runner.config_dir, runner.cni_path, runner.cache_dir) == ("/c", ["/a", "/b"], "/var/lib/cni")


def test_conflist_for_dual_stack_gateway_network():
    import ipaddress
    conf = build_conflist("n", [ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_network("fd00::/64")],
                          "br0", gateway=True, masq=False, port_map=False, data_dir=None, cni_version="1.0.0")
    [bridge] = conf["plugins"]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]
    assert "dataDir" not in bridge["ipam"] and conf["cniVersion"] == "1.0.0"


def test_location_options_parse_on_every_command():
    parser = build_parser()
    args = parser.parse_args(["attach", "123", "--config-dir", "/c", "--cache-dir", "/k", "--cni-path", "/a:/b",
                              "--netns-dir", "/n", "--net", "x", "-p", "1:2", "-p", "3:4", "--json"])
    assert (int(args.ref), args.config_dir, args.cache_dir, args.cni_path, args.netns_dir, args.net, args.json) == \
        (123, "/c", "/k", "/a:/b", "/n", "x", True)
    assert args.publish == ["1:2", "3:4"]
    for argv in (["net", "ls"], ["net", "rm", "x", "--force"], ["ls"], ["inspect", "1"], ["status"], ["gc"],
                 ["detach", "abc", "--ifname", "eth1"]):
        assert callable(parser.parse_args(argv + ["--config-dir", "/c"]).func)
