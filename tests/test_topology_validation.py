"""Topology files are validated before anything is created: every problem is reported, each naming its
place in the file and the bad value."""

import copy
import os

import pytest

from pynet.topology import TopologyError, load, parse
from pynet.topology.state import existing_netns

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "topologies")

BRIDGE = {"cniVersion": "1.0.0", "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": True,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.50.0.0/24"}]]}}]}

BASE = {
    "name": "valid",
    "nodes": {
        "h1": {"kind": "host", "networks": {"pods": BRIDGE}},
        "c1": {"kind": "container", "host": "h1", "attach": ["pods"]},
        "r1": {"kind": "netns"},
    },
    "links": [{"endpoints": ["h1:eth1", "r1:eth0"], "addresses": ["192.168.9.1/24", "192.168.9.2/24"]}],
    "checks": [{"type": "icmp", "from": "r1", "to": "h1"}],
}


def doc(**changes):
    d = copy.deepcopy(BASE)
    for key, value in changes.items():
        d[key] = value
    return d


def problems(d) -> str:
    with pytest.raises(TopologyError) as err:
        parse(d, source="t.yaml")
    return str(err.value)


def test_base_document_is_valid():
    topo = parse(doc())
    assert topo.name == "valid" and set(topo.nodes) == {"h1", "c1", "r1"}
    assert topo.links[0].a.address == "192.168.9.1/24"


@pytest.mark.parametrize("path", sorted(os.listdir(EXAMPLES)))
def test_every_example_is_valid(path):
    topo = load(os.path.join(EXAMPLES, path))
    assert topo.checks


def test_unknown_node_in_link_is_named():
    msg = problems(doc(links=[{"endpoints": ["h1:eth1", "nosuch:eth0"]}]))
    assert "links[0].endpoints[1]: unknown node 'nosuch'" in msg


def test_duplicate_address_is_reported_with_both_places():
    msg = problems(doc(links=[
        {"endpoints": ["h1:eth1", "r1:eth0"], "addresses": ["192.168.9.1/24", "192.168.9.2/24"]},
        {"endpoints": ["h1:eth2", "r1:eth1"], "addresses": ["192.168.8.1/24", "192.168.9.2/24"]}]))
    assert "duplicate address 192.168.9.2 (also on r1:eth0)" in msg


@pytest.mark.parametrize("bad", ["10.0.0.300/24", "10.0.0.1", "10.0.0.0/24", "banana"])
def test_bad_cidr_is_rejected(bad):
    msg = problems(doc(links=[{"endpoints": ["h1:eth1", "r1:eth0"], "addresses": ["192.168.9.1/24", bad]}]))
    assert f"bad CIDR {bad!r}" in msg and "links[0].addresses[r1:eth0]" in msg


def test_bad_route_cidr_is_rejected():
    d = doc()
    d["nodes"]["r1"]["routes"] = [{"dst": "10.1.0.0/33", "via": "192.168.9.1"}]
    assert "nodes.r1.routes[0].dst: bad CIDR '10.1.0.0/33'" in problems(d)


def test_unknown_check_type_lists_known_ones():
    msg = problems(doc(checks=[{"type": "traceroute", "from": "r1", "to": "h1"}]))
    assert "checks[0].type: unknown check type 'traceroute' (known: icmp, tcp, udp, portforward, mtu, pingall)" in msg


def test_dns_check_is_named_as_not_supported_yet():
    assert "check type 'dns' is not supported yet" in problems(doc(checks=[{"type": "dns", "from": "r1", "to": "h1"}]))


def test_check_target_outside_the_topology_is_refused():
    msg = problems(doc(checks=[{"type": "icmp", "from": "r1", "to": "8.8.8.8"}]))
    assert "8.8.8.8 is not an address of any node in this topology" in msg


def test_check_target_inside_a_cni_subnet_is_accepted():
    topo = parse(doc(checks=[{"type": "icmp", "from": "r1", "to": "10.50.0.7"}]))
    assert topo.checks[0].dst == "10.50.0.7"


def test_container_on_unknown_network_and_unknown_host():
    d = doc()
    d["nodes"]["c1"]["attach"] = ["nosuch"]
    d["nodes"]["c2"] = {"kind": "container", "host": "ghost"}
    msg = problems(d)
    assert "nodes.c1.attach[0].network: unknown network 'nosuch' on host 'h1' (networks: pods)" in msg
    assert "nodes.c2.host: unknown node 'ghost'" in msg


def test_all_problems_are_reported_at_once():
    d = doc(links=[{"endpoints": ["h1:eth1", "x:eth0"]}], checks=[{"type": "nope"}])
    d["nodes"]["r1"]["kind"] = "vm"
    msg = problems(d)
    assert msg.startswith("t.yaml: 3 problems:")
    assert "unknown node kind 'vm'" in msg and "unknown node 'x'" in msg and "unknown check type 'nope'" in msg


def test_check_fields_are_required_per_type():
    msg = problems(doc(checks=[{"type": "tcp", "from": "r1", "to": "h1"},
                               {"type": "mtu", "from": "r1", "to": "h1", "size": 20},
                               {"type": "icmp", "from": "r1", "to": "h1", "expect": "maybe"}]))
    assert "checks[0].port: must be an integer from 1 to 65535, got None" in msg
    assert "checks[1].size: must be an integer from 68 to 65535, got 20" in msg
    assert "checks[2].expect: must be success or fail, got 'maybe'" in msg


def test_port_forward_check_needs_a_mapping_and_the_host_address():
    d = doc(checks=[{"type": "portforward", "from": "r1", "to": "r1", "port": 8080, "target": "c1"}])
    msg = problems(d)
    assert "container 'c1' maps no host port 8080/tcp" in msg
    assert "not at 'r1'" in msg


def test_ports_need_a_portmappings_capability():
    d = doc()
    d["nodes"]["c1"]["attach"] = [{"network": "pods", "ports": ["8080:80"]}]
    assert "has no plugin with capabilities: {portMappings: true}" in problems(d)


def test_vxlan_underlay_must_be_an_address_of_the_node():
    d = doc(links=BASE["links"] + [{"kind": "vxlan", "endpoints": ["h1:vx1", "r1:vx1"], "vni": 7,
                                    "underlay": ["192.168.9.1", "192.168.9.99"]}])
    assert "links[1].underlay: 192.168.9.99 is not an address of node 'r1'" in problems(d)


def test_interface_used_twice_on_a_node():
    d = doc(links=BASE["links"] + [{"endpoints": ["h1:eth1", "r1:eth5"]}])
    assert "interface h1:eth1 is already used by links[0]" in problems(d)


def test_requested_ip_outside_the_network():
    d = doc()
    d["nodes"]["c1"]["attach"] = [{"network": "pods", "ip": "10.99.0.5"}]
    assert "10.99.0.5 is outside network 'pods' (10.50.0.0/24)" in problems(d)


def test_yaml_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load(str(bad))
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load(str(tmp_path / "missing.yaml"))


def test_conflist_from_a_file_next_to_the_yaml(tmp_path):
    (tmp_path / "pods.conflist").write_text('{"cniVersion": "1.0.0", "name": "pods", "plugins": '
                                            '[{"type": "bridge", "ipam": {"type": "host-local", '
                                            '"subnet": "10.60.0.0/24"}}]}')
    d = doc()
    d["nodes"]["h1"]["networks"] = {"pods": {"file": "pods.conflist"}}
    (tmp_path / "t.yaml").write_text(__import__("yaml").safe_dump(d))
    topo = load(str(tmp_path / "t.yaml"))
    assert [str(s) for s in topo.network("h1", "pods").subnets] == ["10.60.0.0/24"]


def test_validation_creates_no_namespace():
    d = doc(name=f"novalid-{os.getpid()}", links=[{"endpoints": ["h1:eth1", "nosuch:eth0"]}])
    problems(d)
    assert existing_netns(f"pynet.{d['name']}.") == []


def test_pingall_expands_to_every_ordered_pair():
    topo = parse(doc(checks=[{"type": "tcp", "from": "r1", "to": "h1", "port": 80},
                             {"type": "pingall"}]))
    pairs = [(ch.src, ch.dst) for ch in topo.checks if ch.type == "icmp"]
    assert sorted(pairs) == sorted((a, b) for a in ("h1", "c1", "r1") for b in ("h1", "c1", "r1") if a != b)
    assert [ch.index for ch in topo.checks] == list(range(7))
    assert "checks[0].nodes" in problems(doc(checks=[{"type": "pingall", "nodes": "r1"}]))
    assert "checks[0].from: unknown node 'zz'" in problems(doc(checks=[{"type": "pingall", "nodes": ["r1", "zz"]}]))


def test_bad_ipam_subnet_is_named_with_its_place():
    d = doc()
    d["nodes"]["h1"]["networks"]["pods"]["plugins"][0]["ipam"]["ranges"] = [[{"subnet": "10.22.1.0/33"}]]
    assert "nodes.h1.networks.pods.plugins[0].ipam.ranges[0][0].subnet: bad subnet '10.22.1.0/33'" in problems(d)


def _places(node, path=()):
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _places(child, path + (key,))


@pytest.mark.parametrize("source", ["base", "bridge-portforward.yaml", "pod-network-etcd.yaml"])
def test_any_value_anywhere_gives_a_topology_error_never_a_crash(source):
    original = BASE if source == "base" else __import__("yaml").safe_load(open(os.path.join(EXAMPLES, source)))
    for place in list(_places(original))[1:]:
        for garbage in (None, 7, "x", [], {}, [1], {"a": 1}, "10.0.0.0/33"):
            d = copy.deepcopy(original)
            parent = d
            for key in place[:-1]:
                parent = parent[key]
            parent[place[-1]] = copy.deepcopy(garbage)
            try:
                parse(d, base_dir=EXAMPLES)
            except TopologyError:
                pass


def test_port_without_a_host_port_is_refused_naming_it():
    from pynet.topology import TopologyError, parse

    doc = {"name": "portless", "nodes": {
        "h1": {"kind": "host", "networks": {"pods": {"cniVersion": "1.0.0", "name": "pods", "plugins": [
            {"type": "bridge", "bridge": "br-pl", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.31.0.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}}},
        "c1": {"kind": "container", "host": "h1", "attach": [{"network": "pods", "ports": ["80"]}]}}}
    try:
        parse(doc)
    except TopologyError as exc:
        assert "'80' has no host port" in str(exc)
    else:
        raise AssertionError("a port without a host port was accepted")


# -- a misspelt kind: one clear error, no follow-on ones --------------------------------------------

def test_misspelt_node_kind_is_one_error_naming_value_and_valid_kinds():
    d = doc()
    d["nodes"]["h1"]["kind"] = "hots"            # a host with networks that c1 runs on
    d["nodes"]["c1"]["kind"] = "contianer"       # a container with host and attach
    d["checks"] = [{"type": "icmp", "from": "r1", "to": "c1:eth0"}]
    with pytest.raises(TopologyError) as err:
        parse(d, source="t.yaml")
    assert err.value.problems == [
        "nodes.h1.kind: unknown node kind 'hots' (valid: host, netns, container, switch); did you mean 'host'?",
        "nodes.c1.kind: unknown node kind 'contianer' (valid: host, netns, container, switch); "
        "did you mean 'container'?"]


def test_misspelt_link_kind_is_one_error_and_its_interfaces_still_count():
    d = doc(links=[{"kind": "vetth", "endpoints": ["h1:eth1", "r1:eth0"],
                    "addresses": ["192.168.9.1/24", "192.168.9.2/24"]}],
            checks=[{"type": "icmp", "from": "r1", "to": "h1:eth1"},
                    {"type": "icmp", "from": "h1", "to": "192.168.9.2"}])
    with pytest.raises(TopologyError) as err:
        parse(d, source="t.yaml")
    assert err.value.problems == ["links[0].kind: unknown link kind 'vetth' (valid: veth, vxlan); did you mean 'veth'?"]


def test_a_kind_that_is_no_string_is_named():
    d = doc()
    d["nodes"]["r1"]["kind"] = ["netns"]
    assert problems(d).endswith("nodes.r1.kind: unknown node kind ['netns'] (valid: host, netns, container, switch)")


# -- services and generated networks ----------------------------------------------------------------

def services_doc(**services):
    d = doc()
    d["services"] = services
    return d


def test_services_and_a_generated_network_parse():
    d = services_doc(store={"node": "r1", "command": "sleep 100", "ready": {"tcp": "192.168.9.2:2379"}},
                     agent={"node": "h1", "command": ["agent", "--dir", "${data}/h1"], "after": ["store"],
                            "env": {"X": 1}, "ready": {"file": "${data}/h1/ok", "json": {"ready": True},
                                                       "timeout": 5}})
    d["nodes"]["h1"]["networks"]["gen"] = {"file": "${data}/h1/gen.conflist", "written_by": "agent"}
    topo = parse(d)
    store, agent = topo.services["store"], topo.services["agent"]
    assert store.command == ["sleep", "100"] and store.ready.tcp == ("192.168.9.2", 2379)
    assert agent.after == ["store"] and agent.env == {"X": "1"} and agent.ready.json == {"ready": True}
    assert agent.ready.timeout == 5
    assert topo.nodes["h1"].networks["gen"].generated


@pytest.mark.parametrize("service, expected", [
    ({"command": "x"}, "services.s.node: names the node whose netns the service runs in, got None"),
    ({"node": "ghost", "command": "x"}, "services.s.node: unknown node 'ghost' (nodes: h1, c1, r1)"),
    ({"node": "r1"}, "services.s.command: must be a non-empty list of arguments (or one command line), got None"),
    ({"node": "r1", "command": "x", "after": ["later"]},
     "services.s.after[0]: 'later' is not a service defined above 's' (defined above: none)"),
    ({"node": "r1", "command": "x", "ready": {"tcp": "8.8.8.8:53"}},
     "services.s.ready.tcp: 8.8.8.8 is neither loopback nor an address of a node in this topology"),
    ({"node": "r1", "command": "x", "ready": {"tcp": "127.0.0.1:2379", "file": "/x"}},
     "services.s.ready: give one condition: tcp: ADDRESS:PORT"),
    ({"node": "r1", "command": "x", "ready": {"tcp": "127.0.0.1:http"}},
     "services.s.ready.tcp: must be an integer from 1 to 65535, got 'http'"),
    ({"node": "r1", "command": "x", "ready": {"file": "relative/ok"}},
     "services.s.ready.file: must be an absolute path or start with ${data}, got 'relative/ok'"),
    ({"node": "r1", "command": "x", "ready": {"file": "/ok", "timeout": 0}},
     "services.s.ready.timeout: must be a number of seconds from 1 to 600, got 0"),
    ({"node": "r1", "command": "x", "restart": "always"}, "services.s: unknown key 'restart'"),
])
def test_bad_service_is_named_with_its_key(service, expected):
    assert expected in problems(services_doc(s=service))


def test_generated_network_names_an_existing_service_and_a_file():
    d = doc()
    d["nodes"]["h1"]["networks"]["gen"] = {"written_by": "agent"}
    msg = problems(d)
    assert "nodes.h1.networks.gen.written_by: unknown service 'agent' (services: none)" in msg
    assert "nodes.h1.networks.gen.file: is the path of the conflist the service writes, got None" in msg
