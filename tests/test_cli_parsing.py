"""Argument parsing of the attach/net commands: no kernel state, no subprocesses."""

import pytest

from pynet.cli import CommandError, build_parser
from pynet.commands import build_conflist, parse_port


@pytest.mark.parametrize("spec, expected", [
    ("8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}),
    ("53:5353/udp", {"hostPort": 53, "containerPort": 5353, "protocol": "udp"}),
    ("127.0.0.1:8080:80/SCTP", {"hostPort": 8080, "containerPort": 80, "protocol": "sctp", "hostIP": "127.0.0.1"}),
    ("[::1]:8080:80", {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "::1"}),
])
def test_port_specs_become_port_mappings(spec, expected):
    assert parse_port(spec) == expected


@pytest.mark.parametrize("spec", ["80", "0:80", "80:70000", "a:b", "80:80/icmp", "999.1.1.1:80:80", "1:2:3:4"])
def test_bad_port_specs_are_refused(spec):
    with pytest.raises(CommandError, match="invalid -p"):
        parse_port(spec)


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
    assert (args.pid, args.config_dir, args.cache_dir, args.cni_path, args.netns_dir, args.net, args.json) == \
        (123, "/c", "/k", "/a:/b", "/n", "x", True)
    assert args.publish == ["1:2", "3:4"]
    for argv in (["net", "ls"], ["net", "rm", "x", "--force"], ["ls"], ["inspect", "1"], ["status"], ["gc"],
                 ["detach", "abc", "--ifname", "eth1"]):
        assert callable(parser.parse_args(argv + ["--config-dir", "/c"]).func)
