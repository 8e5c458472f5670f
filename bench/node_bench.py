"""`pynet node`: how fast a new node joins, and what the pod network carries, with simulated nodes.

For each node count (3 and 10 by default) and backend (vxlan, host-gw): an underlay switch namespace, a
3-member etcd, one agent per node and one pod per node (the CNI chain each agent writes). Measured:
- join: from starting the last node's agent until a pod on every other node reaches a pod on it (ICMP);
- throughput: iperf3 TCP from a pod on node1 to a pod on node0 (cross-node), and between two pods on
  node0 (same node), bounded to a few seconds each.
Everything runs in namespaces this script creates and removes, also on failure; processes it starts are
stopped by their PIDs. Nothing asserts a number.

    .venv/bin/python bench/node_bench.py [--nodes 3,10] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from netns_fixtures import CNI, OUR_PLUGINS, Netns, icmp_echo  # noqa: E402
from netns_fixtures.multinode import ETCD, EtcdCluster, Underlay, stop, wait_for  # noqa: E402

IPERF = shutil.which("iperf3")


class Namespaces:
    """make_netns for a script: every namespace made is removed by close()."""

    def __init__(self):
        self.made: list[Netns] = []

    def __call__(self, prefix: str = "pynt-b") -> Netns:
        ns = Netns.create(prefix)
        self.made.append(ns)
        return ns

    def close(self) -> None:
        for ns in reversed(self.made):
            ns.remove()


def _pod(node, make) -> tuple:
    ctr = make("pynt-bp")
    cid = f"{node.name}-bench{len(node.containers)}"
    result = CNI(node.ns, OUR_PLUGINS).add_chain(node.conflist(), ctr, container_id=cid)
    node.containers.append((ctr, result, cid))
    return ctr, result["ips"][0]["address"].split("/")[0]


def _iperf(server_ns, server_ip: str, client_ns, seconds: float) -> float:
    """Gbit/s of one TCP stream, client → server."""
    server = server_ns.popen([IPERF, "-s", "-1", "-B", server_ip, "-p", "5201"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        out = client_ns.run([IPERF, "-c", server_ip, "-p", "5201", "-t", str(seconds), "-J"],
                            timeout=seconds + 20)
        data = json.loads(out.stdout or b"{}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        stop(server)


def run(count: int, backend: str, seconds: float) -> dict:
    make = Namespaces()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="pynet-node-bench-"))
    nodes, etcd = [], None
    try:
        underlay = Underlay(make)
        nodes = [underlay.node(i, make, tmp) for i in range(count)]
        etcd = EtcdCluster(underlay, tmp)
        for node in nodes[:-1]:
            node.start_agent(etcd.store, backend, ttl=10, interval=0.2)
        for node in nodes[:-1]:
            wait_for(lambda: node.ready_with(count - 2), 60, f"{node.name} ready")
        pods = [_pod(node, make) for node in nodes[:-1]]
        last = nodes[-1]
        start = time.monotonic()
        last.start_agent(etcd.store, backend, ttl=10, interval=0.2)
        wait_for(lambda: last.status().get("ready"), 60, "the new node")
        _, new_ip = _pod(last, make)
        for ctr, _ in pods:
            wait_for(lambda: icmp_echo(ctr, new_ip, timeout=0.2), 60, f"{new_ip} from every node")
        join = time.monotonic() - start
        out = {"nodes": count, "backend": backend, "join_s": join}
        if IPERF:
            same, same_ip = _pod(nodes[0], make)
            out["cross_gbps"] = _iperf(pods[0][0], pods[0][1], pods[1][0], seconds)
            out["same_node_gbps"] = _iperf(pods[0][0], pods[0][1], same, seconds)
        return out
    finally:
        for node in nodes:
            node.stop_agent()
            cni = CNI(node.ns, OUR_PLUGINS)
            for ctr, result, cid in node.containers:
                try:
                    cni.del_chain(node.conflist(), ctr, result, container_id=cid)
                except Exception:
                    pass
        if etcd is not None:
            etcd.stop_all()
        make.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", default="3,10", help="node counts (default 3,10)")
    parser.add_argument("--seconds", type=float, default=2.0, help="iperf3 run time (default 2)")
    args = parser.parse_args()
    if ETCD is None:
        print("etcd is not installed (scripts/install.sh installs etcd-server)", file=sys.stderr)
        return 1
    if IPERF is None:
        print("iperf3 is not installed (apt-get install iperf3): throughput columns are skipped", file=sys.stderr)
    rows = [run(int(n), backend, args.seconds) for n in args.nodes.split(",") for backend in ("vxlan", "host-gw")]
    print(f"{'nodes':>5}  {'backend':8} {'join':>8}  {'cross-node':>11}  {'same node':>10}  {'cross/same':>10}")
    for r in rows:
        cross, same = r.get("cross_gbps"), r.get("same_node_gbps")
        ratio = f"{cross / same:.2f}" if cross and same else "-"
        print(f"{r['nodes']:>5}  {r['backend']:8} {r['join_s']:>7.2f}s  "
              f"{(f'{cross:.2f} Gb/s' if cross else '-'):>11}  {(f'{same:.2f} Gb/s' if same else '-'):>10}  {ratio:>10}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
