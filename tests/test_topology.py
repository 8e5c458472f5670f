"""YAML topologies in real namespaces: every example comes up, passes its checks and goes down leaving
nothing; broken topologies fail with a readable matrix; crashed ups are cleaned up by down."""

import importlib.util
import json
import os

import pytest

from netns_fixtures import icmp_echo
from netns_fixtures.runner import OUR_PLUGINS, REFERENCE_PLUGINS, reference_available
from pynet.topology import DeployError, StateStore, down, load, parse, render, up
from pynet.topology.deploy import kernel_supports_vxlan
from pynet.topology.state import existing_netns

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples", "topologies")


def example(name):
    return os.path.join(EXAMPLES, name)


def our_plugin_ready(module):
    return importlib.util.find_spec(module) is not None


def leftovers(dep):
    """Namespaces of this run, plus the state file and data dir, that still exist."""
    left = existing_netns(f"pynet.{dep.name}.{dep.run}.")
    for path in (dep.store.path(dep.name), dep.store.data_dir(dep.name)):
        if os.path.exists(path):
            left.append(path)
    return left


@pytest.mark.parametrize("name", ["two-hosts-routed.yaml", "two-hosts-vxlan.yaml", "three-tier-firewall.yaml",
                                  "bridge-portforward.yaml"])
def test_example_comes_up_passes_its_checks_and_goes_down_leaving_nothing(name, tmp_path):
    if name == "bridge-portforward.yaml" and not our_plugin_ready("cni_plugins.portmap.plugin"):
        pytest.skip("pynet's portmap plugin (portmap/plugin.py) is not written yet; "
                    "see test_bridge_portforward_example_with_reference_plugins")
    if "vxlan" in name and not kernel_supports_vxlan():
        pytest.skip("kernel has no vxlan driver")
    topo = load(example(name))
    dep = up(topo, state_dir=str(tmp_path), cni_path=[OUR_PLUGINS])
    try:
        assert len(existing_netns(f"pynet.{topo.name}.{dep.run}.")) == len(topo.nodes)
        report = dep.check()
        assert report.ok, report.matrix()
        assert len(report.results) == len(topo.checks)
    finally:
        dep.down()
    assert leftovers(dep) == []


@pytest.mark.skipif(not reference_available(), reason="reference plugins not installed")
def test_bridge_portforward_example_with_reference_plugins(topology):
    dep = topology(example("bridge-portforward.yaml"), cni_path=[REFERENCE_PLUGINS])
    report = dep.check()
    assert report.ok, report.matrix()


def test_containers_get_addresses_from_their_host_network_and_leases_stay_in_the_state_dir(topology, tmp_path):
    dep = topology(example("two-hosts-routed.yaml"))
    assert dep.address("b1") == "10.22.2.50"                       # requested with ip:
    assert dep.address("a1").startswith("10.22.1.")
    assert dep.netns("a1").addresses("eth0") == [dep.addresses("a1")[0][1]]
    assert {"dst": "10.22.2.0/24", "gw": "192.168.50.2", "dev": "eth1"} in dep.netns("host1").routes()
    assert dep.netns("host1").sysctl("net.ipv4.ip_forward") == "1"
    assert dep.netns("host1").link("eth1").get_attr("IFLA_MTU") == 1400
    leases = tmp_path / "topologies" / "two-hosts-routed" / "cni" / "host2" / "pods"
    assert (leases / "10.22.2.50").read_text().startswith("two-hosts-routed-")
    assert dep.state["attachments"][0]["conflist"]["plugins"][0]["ipam"]["dataDir"].startswith(str(tmp_path))


def test_vxlan_example_carries_container_traffic_through_the_tunnel(topology):
    if not kernel_supports_vxlan():
        pytest.skip("kernel has no vxlan driver")
    dep = topology(example("two-hosts-vxlan.yaml"))
    host1 = dep.netns("host1")
    vx = host1.link("vx42")
    assert vx.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "vxlan"
    assert vx.get_attr("IFLA_MTU") == 1450
    before = vx.get_attr("IFLA_STATS64")["tx_packets"]
    assert icmp_echo(dep.netns("c1"), dep.address("c2"))
    assert host1.link("vx42").get_attr("IFLA_STATS64")["tx_packets"] > before


def test_broken_topology_fails_its_checks_with_a_readable_matrix(topology):
    topo = load(example("two-hosts-routed.yaml"))
    for host in ("host1", "host2"):
        topo.nodes[host].routes = []                 # forget the host-gw routes: hosts cannot reach pods
    dep = topology(topo)
    report = dep.check()
    assert not report.ok
    failed = {r.check.index + 1 for r in report.mismatches}
    assert failed == {1, 2, 3, 4, 5, 6}              # everything crossing hosts; 7 still "fails" as expected
    text = report.matrix()
    assert "8 checks, 6 mismatches" in text
    assert "1!-" in text and "7-" in text and "8+" in text
    line = next(l for l in text.splitlines() if l.strip().startswith("1 "))
    assert "a1 -> b1 icmp" in line and "success" in line and "fail" in line and line.endswith("MISMATCH")
    assert text.rstrip().endswith("FAIL: 6 of 8 checks differ")
    data = report.to_dict()
    assert data["ok"] is False and data["mismatches"] == 6
    assert data["checks"][0] == {"index": 0, "name": "a1 -> b1 icmp", "type": "icmp", "from": "a1", "to": "b1",
                                 "to_ip": "10.22.2.50", "to_node": "b1", "expected": "success",
                                 "actual": "fail", "ok": False}


def test_same_topology_twice_at_once_stays_apart(topology, tmp_path):
    one = topology(example("two-hosts-vxlan.yaml"), state_dir=str(tmp_path / "one"))
    two = topology(example("two-hosts-vxlan.yaml"), state_dir=str(tmp_path / "two"))
    assert one.run != two.run
    assert set(one.state["namespaces"].values()).isdisjoint(two.state["namespaces"].values())
    assert one.check(only=[0]).ok and two.check(only=[0]).ok


def test_up_refuses_a_topology_that_is_already_up(topology, tmp_path):
    dep = topology(example("two-hosts-vxlan.yaml"))
    with pytest.raises(DeployError, match="already up"):
        up(dep.topology, state_dir=str(tmp_path / "topologies"))


def test_failed_up_removes_what_it_made_and_says_which_plugin_failed(tmp_path):
    d = {"name": f"failing-{os.getpid()}", "nodes": {
        "h1": {"kind": "host", "networks": {"n": {"plugins": [{"type": "no-such-plugin"}]}}},
        "c1": {"kind": "container", "host": "h1", "attach": ["n"]}}}
    with pytest.raises(DeployError, match=r"attaching c1:eth0 to network 'n' on 'h1': .*no-such-plugin"):
        up(parse(d), state_dir=str(tmp_path))
    assert existing_netns(f"pynet.{d['name']}.") == []
    assert not os.path.exists(StateStore(str(tmp_path)).path(d["name"]))


@pytest.mark.parametrize("with_state", [True, False])
def test_down_after_a_crashed_up_removes_everything(tmp_path, with_state):
    topo = load(example("two-hosts-routed.yaml"))
    topo.name = f"crash-{os.getpid()}-{int(with_state)}"
    topo.nodes["b1"].attach[0].network = "missing"      # ADD of b1 fails after a1 and a2 are attached
    with pytest.raises(DeployError):
        up(topo, state_dir=str(tmp_path), keep_on_failure=True)   # what a crash leaves behind
    store = StateStore(str(tmp_path))
    state = store.read(topo.name)
    assert state["phase"] == "failed"
    assert len(existing_netns(f"pynet.{topo.name}.")) == len(topo.nodes)
    if not with_state:
        os.unlink(store.path(topo.name))                 # without a state file: found by prefix, on request
        assert down(topo.name, str(tmp_path))["orphans"] == existing_netns(f"pynet.{topo.name}.")
        assert len(existing_netns(f"pynet.{topo.name}.")) == len(topo.nodes)
    report = down(topo.name, str(tmp_path), all_runs=not with_state)
    assert len(report["namespaces"]) == len(topo.nodes)
    assert existing_netns(f"pynet.{topo.name}.") == []
    assert not os.path.exists(store.data_dir(topo.name))
    assert down(topo.name, str(tmp_path))["namespaces"] == []          # idempotent


def test_switch_node_joins_several_machines_on_one_segment(topology):
    machines = ["m1", "m2", "m3"]
    d = {"name": "switched", "nodes": {"sw": {"kind": "switch"}, **{m: {} for m in machines}},
         "links": [{"endpoints": [f"{m}:eth0", f"sw:p{i}"], "addresses": [f"10.7.0.{i + 1}/24", None]}
                   for i, m in enumerate(machines)],
         "checks": [{"type": "pingall"}]}
    dep = topology(d)
    report = dep.check()
    assert report.ok, report.matrix()
    assert len(report.results) == 6


def test_check_target_is_verified_against_the_running_topology(topology):
    d = {"name": "targets", "nodes": {
        "h1": {"kind": "host", "networks": {"pods": {"plugins": [
            {"type": "bridge", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.77.0.0/24"}]]}}]}}},
        "c1": {"kind": "container", "host": "h1", "attach": ["pods"]}},
        "checks": [{"type": "icmp", "from": "c1", "to": "10.77.0.200"}]}   # in the subnet, but nobody has it
    report = topology(d).check()
    result = report.results[0]
    assert result.actual is None and not result.ok
    assert "10.77.0.200 is not an address of any node" in result.error
    assert "? " in report.matrix() or "1?" in report.matrix()


def test_text_and_dot_views_show_nodes_links_and_addresses(topology):
    dep = topology(example("two-hosts-routed.yaml"))
    text = render.text(dep.topology, dep)
    assert f"topology two-hosts-routed (up, run {dep.run})" in text
    assert "eth1       192.168.50.1/24" in text and "10.22.2.50/24" in text
    assert "host1:eth1 192.168.50.1/24  <-veth->  host2:eth1 192.168.50.2/24 mtu 1400" in text
    dot = render.dot(dep.topology, dep)
    assert dot.startswith('graph "two-hosts-routed" {')
    assert '"cluster_host1"' in dot and '"host1" -- "host2"' in dot and "10.22.2.50/24" in dot


def test_topology_fixture_takes_paths_relative_to_the_test_file(topology):
    dep = topology("../examples/topologies/two-hosts-vxlan.yaml")
    assert dep.name == "two-hosts-vxlan"
    assert json.loads(json.dumps(dep.check(only=[0]).to_dict()))["ok"]


@pytest.mark.parametrize("runtime", ["runner", "fixtures"])
def test_both_cni_runtimes_run_the_plugins_inside_the_simulated_host(topology, tmp_path, runtime):
    if runtime == "runner" and not our_plugin_ready("pynet.runner"):
        pytest.skip("pynet.runner not available")
    dep = topology(example("two-hosts-routed.yaml"), cni_runtime=runtime)
    assert dep.state["cni_runtime"] == runtime
    assert dep.netns("host1").link("cni0") is not None          # the bridge plugin ran in host1's netns
    assert dep.netns("host2").addresses("cni0") == ["10.22.2.1/24"]
    assert dep.check(only=[0]).ok
    cache = tmp_path / "topologies" / "two-hosts-routed" / "cni-cache" / "results"
    if runtime == "runner":
        assert sorted(os.listdir(cache)) == sorted(f"pods-two-hosts-routed-{dep.run}-{c}-eth0"
                                                   for c in ("a1", "a2", "b1"))
    else:
        assert not cache.exists()
    dep.down()
    assert leftovers(dep) == []


def test_vxlan_without_kernel_support_fails_before_creating_anything(monkeypatch, tmp_path):
    from pynet.topology import deploy

    monkeypatch.setattr(deploy, "_VXLAN_SUPPORT", False)
    topo = load(example("two-hosts-vxlan.yaml"))
    with pytest.raises(DeployError, match="cannot create vxlan devices .* route between the hosts instead"):
        up(topo, state_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_routed_ipv6_path_with_a_smaller_mtu_in_the_middle(topology):
    d = {"name": "v6-routed", "nodes": {"a": {"routes": [{"dst": "default", "via": "fd00:1::1"}]},
                                        "r": {"forwarding": True},
                                        "b": {"routes": [{"dst": "default", "via": "fd00:2::1"}]}},
         "links": [{"endpoints": ["a:eth0", "r:eth0"], "addresses": ["fd00:1::2/64", "fd00:1::1/64"]},
                   {"endpoints": ["r:eth1", "b:eth0"], "addresses": ["fd00:2::1/64", "fd00:2::2/64"],
                    "mtu": 1400}],
         "checks": [{"type": "icmp", "from": "a", "to": "b"},
                    {"type": "tcp", "from": "b", "to": "fd00:1::2", "port": 7000},
                    {"type": "udp", "from": "a", "to": "b:eth0", "port": 7001},
                    {"type": "mtu", "from": "a", "to": "b", "size": 1400},
                    {"type": "mtu", "from": "a", "to": "b", "size": 1401, "expect": "fail"}]}
    dep = topology(d)
    assert dep.address("b") == "fd00:2::2"
    report = dep.check()
    assert report.ok, report.matrix()
    assert {"dst": "default", "gw": "fd00:1::1", "dev": "eth0"} in dep.netns("a").routes(6)
