import yaml

from netns_fixtures import icmp_echo, tcp_connect, tcp_listener, veth_link


def test_two_namespaces_talk_over_a_veth_pair(make_netns):
    a, b = make_netns(), make_netns()          # removed when the test ends, pass or fail
    veth_link(a, "eth0", b, "eth0", ["10.77.0.1/30"], ["10.77.0.2/30"])
    assert icmp_echo(a, "10.77.0.2")
    with tcp_listener(b) as port:
        assert tcp_connect(a, "10.77.0.2", port)


ROUTED = """
name: user-example
nodes:
  a: {routes: [{dst: default, via: 10.78.1.1}]}
  r: {forwarding: true}
  b: {routes: [{dst: default, via: 10.78.2.1}]}
links:
  - {endpoints: ["a:eth0", "r:eth0"], addresses: [10.78.1.2/24, 10.78.1.1/24]}
  - {endpoints: ["r:eth1", "b:eth0"], addresses: [10.78.2.1/24, 10.78.2.2/24]}
checks:
  - {type: icmp, from: a, to: b}
  - {type: tcp, from: b, to: a, port: 7000}
"""


def test_a_router_between_two_nodes(topology):
    dep = topology(yaml.safe_load(ROUTED))     # up now, down when the test ends, pass or fail
    report = dep.check()
    assert report.ok, report.matrix()
    assert icmp_echo(dep.netns("a"), dep.address("b"))
