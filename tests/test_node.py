"""`pynet node`: a pod network across simulated nodes on a real 3-member etcd.

Three node namespaces share an underlay (a bridge in a "switch" namespace that also holds the etcd
members' addresses and an outside address). One agent per node; containers attached with the CNI chain
the agent writes. Everything lives in namespaces and temp dirs of the test and goes with it."""

import json
import signal
import socket
import threading
import time

import pytest

from netns_fixtures import CNI, OUR_PLUGINS, icmp_echo, tcp_connect, tcp_listener
from netns_fixtures.multinode import CLUSTER, ETCD, OUTSIDE, PYNET, EtcdCluster, Underlay, stop as _stop, wait_for as _wait

pytestmark = pytest.mark.skipif(ETCD is None, reason="etcd-server is not installed (scripts/install.sh installs it)")

@pytest.fixture
def cluster(make_netns, tmp_path):
    underlay = Underlay(make_netns)
    nodes = [underlay.node(i, make_netns, tmp_path) for i in range(3)]
    etcd = None
    try:
        etcd = EtcdCluster(underlay, tmp_path)
        yield underlay.ns, etcd, nodes, make_netns
    finally:
        for node in nodes:
            node.stop_agent()
            cni = CNI(node.ns, OUR_PLUGINS)
            for i, (ctr, result) in enumerate(node.containers):
                try:
                    cni.del_chain(node.conflist(), ctr, result, container_id=f"{node.name}-pod{i}")
                except Exception:
                    pass
        if etcd is not None:
            etcd.stop_all()


def _up(cluster, backend, containers_per_node=2):
    switch, etcd, nodes, make_netns = cluster
    for node in nodes:
        node.start_agent(etcd.store, backend)
    for node in nodes:
        _wait(lambda: node.ready_with(2), 40, f"{node.name} to be ready with 2 peers")
    pods = []
    for node in nodes:
        cni = CNI(node.ns, OUR_PLUGINS)
        for _ in range(containers_per_node):
            ctr = make_netns("pynt-p")
            result = cni.add_chain(node.conflist(), ctr, container_id=f"{node.name}-pod{len(node.containers)}")
            node.containers.append((ctr, result))
            pods.append((node, ctr, result["ips"][0]["address"].split("/")[0]))
    return pods


def _all_pairs_reach(pods) -> None:
    for _src_node, src, _ in pods:
        for _dst_node, dst, ip in pods:
            if src is dst:
                continue
            assert icmp_echo(src, ip), f"{src.name} cannot ping {ip}"
    src, (_, dst, ip) = pods[0][1], pods[-1]
    with tcp_listener(dst, ip, 8080):
        assert tcp_connect(src, ip, 8080)


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
def test_every_pod_reaches_every_other_across_nodes(cluster, backend):
    pods = _up(cluster, backend)
    subnets = {n.status()["subnet"] for n in cluster[2]}
    assert len(subnets) == 3                                   # one subnet per node
    _all_pairs_reach(pods)
    for node in cluster[2]:
        if backend == "vxlan":
            link = node.ns.link("pynet-vxlan")
            assert link is not None and link.get_attr("IFLA_MTU") == 1500 - 50


def test_traffic_leaving_the_cluster_is_masqueraded_and_pod_traffic_is_not(cluster):
    pods = _up(cluster, "vxlan", containers_per_node=1)
    switch = cluster[0]
    (node_a, a, a_ip), (_, b, b_ip) = pods[0], pods[1]
    seen = []

    def serve(ns, ip):
        with ns.entered():
            srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((ip, 9090))
        srv.listen(1)
        srv.settimeout(10)
        return srv

    for dst_ns, dst_ip in ((switch, OUTSIDE), (b, b_ip)):
        srv = serve(dst_ns, dst_ip)
        t = threading.Thread(target=lambda: seen.append(srv.accept()[1][0]))
        t.start()
        tcp_connect(a, dst_ip, 9090, expect=None)
        t.join(12)
        srv.close()
    assert seen == [node_a.ip, a_ip]


def test_agent_restart_keeps_connectivity_and_its_subnet(cluster):
    pods = _up(cluster, "vxlan", containers_per_node=1)
    switch, etcd, nodes, _ = cluster
    node = nodes[1]
    subnet = node.status()["subnet"]
    _stop(node.agent, signal.SIGKILL)
    _all_pairs_reach(pods)                                      # the data plane stays without its agent
    node.start_agent(etcd.store, "vxlan")
    _wait(lambda: node.status().get("ready") and node.status().get("time", 0) > time.time() - 2, 30, "restart")
    assert node.status()["subnet"] == subnet
    _all_pairs_reach(pods)


def test_a_node_that_leaves_is_withdrawn_everywhere(cluster):
    _up(cluster, "vxlan", containers_per_node=0)
    switch, etcd, nodes, _ = cluster
    gone = nodes[2]
    subnet = gone.status()["subnet"]
    from pynet.node import dataplane

    assert subnet in dataplane.routes_to_peers(nodes[0].ns)      # a Netns has the .ipr the agent's handle has
    _stop(gone.agent, signal.SIGKILL)                            # silent: its lease runs out (TTL 4 s)
    for node in nodes[:2]:
        _wait(lambda: subnet not in dataplane.routes_to_peers(node.ns) and gone.name not in node.status()["peers"],
              20, f"{node.name} to withdraw {gone.name}")
    out = switch.run([PYNET, "node", "ls", "--store", etcd.store, "--json"])
    names = [row["name"] for row in json.loads(out.stdout)]
    assert names == ["node0", "node1"]


def test_store_faults_keep_the_data_plane(cluster):
    pods = _up(cluster, "host-gw", containers_per_node=1)
    switch, etcd, nodes, _ = cluster
    etcd.stop(0)                                                # quorum stays with 2 of 3
    time.sleep(2)
    assert all(n.status().get("ready") for n in nodes)
    for i in list(etcd.procs):
        etcd.stop(i)                                            # no store at all
    _wait(lambda: not any(n.status().get("ready") for n in nodes), 20, "agents to report not ready")
    _all_pairs_reach(pods)                                      # pods keep talking meanwhile
    for i in range(3):
        etcd.start(i, state="existing")
    _wait(lambda: all(n.status().get("ready") and len(n.status()["peers"]) == 2 for n in nodes), 60,
          "agents to recover")
    _all_pairs_reach(pods)


def test_racing_agents_never_share_a_subnet(cluster):
    switch, etcd, nodes, _ = cluster
    from pynet.node.store_etcd import EtcdStore, parse_store

    with switch.entered():
        stores = [EtcdStore(parse_store(etcd.store)) for _ in range(6)]
    results = []

    def claim(i):
        with switch.entered():
            lease = stores[i].grant(30)
            results.append((i, stores[i].claim_subnet("10.244.7.0/24", f"racer{i}", lease)))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(1 for _, won in results if won) == 1


def test_bad_arguments_are_refused_with_the_value_named(host_ns):
    for argv, needle in ((["--store", "http://x:1"], "http://x:1"), (["--cluster-cidr", "10.0.0.0/33"], "10.0.0.0/33"),
                         (["--subnet-len", "8"], "8")):
        base = {"--store": "etcd://127.0.0.1:1", "--cluster-cidr": CLUSTER, "--subnet-len": "24"}
        base[argv[0]] = argv[1]
        proc = host_ns.run([PYNET, "node", "run", "--name", "n", "--iface", "lo", "--config-dir", "/nonexistent-dir",
                            *[x for kv in base.items() for x in kv]], timeout=30)
        assert proc.returncode != 0 and needle.encode() in proc.stderr and b"Traceback" not in proc.stderr
