"""`pynet run` on a network with DNS: the container's resolv.conf, and --dns as its own upstream."""

from __future__ import annotations

from tests.test_cli_docker import docker, ok  # noqa: F401  (docker: `pynet` with its own state and networks)
from tests.test_dns import upstream  # noqa: F401  (a test resolver at 10.53.0.2, cabled to the sandbox host)
from tests.test_launcher import pynet_root  # noqa: F401


def test_dns_flag_on_a_dns_network_makes_those_servers_the_containers_upstream(docker, upstream):  # noqa: F811
    ok(docker("net", "create", "front"))
    ok(docker("run", "-d", "--name", "web", "--network", "front", "busybox", "sleep", "120"))
    ok(docker("run", "-d", "--name", "client", "--network", "front", "--dns", upstream.address,
              "busybox", "sleep", "120"))
    resolv = ok(docker("exec", "client", "cat", "/etc/resolv.conf")).out
    assert "search dns.pynet" in resolv and f"nameserver {upstream.address}" not in resolv, resolv
    # the network's resolver answers: container names still resolve...
    res = ok(docker("exec", "client", "timeout", "10", "nslookup", "web"))
    assert "Address" in res.out and "NXDOMAIN" not in res.out, res.out
    # ...and everything else goes to the --dns server, not the host's resolvers
    res = docker("exec", "client", "timeout", "10", "nslookup", "forwarded.example.org")
    assert "192.0.2.7" in res.out, (res.out, res.err)
    assert upstream.asked.get("forwarded.example.org.", 0) >= 1
