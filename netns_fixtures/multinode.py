"""Simulated cluster nodes for multi-node tests and benchmarks: namespaces on one underlay, a real etcd
cluster, and one `pynet node` agent per node. It runs only executables (etcd, the installed `pynet`),
so it imports nothing from pynet; every process it starts is stopped by its PID, every namespace it makes
goes with the fixture that made it.

    underlay = Underlay(make_netns)                 # a "switch" netns with bridge under0, 10.77.0.254/24
    etcd = EtcdCluster(underlay, tmp_path, size=3)  # members on 10.77.0.201.. in the switch netns
    nodes = [underlay.node(i, make_netns, tmp_path) for i in range(3)]   # node<i>: eth0 10.77.0.(11+i)
    nodes[0].start_agent(etcd.store, "vxlan")
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

from .links import veth_link
from .runner import OUR_PLUGINS

UNDERLAY = "10.77.0.{}"
OUTSIDE = UNDERLAY.format(254)      # an address outside every cluster CIDR, in the switch netns
CLUSTER = "10.244.0.0/16"
ETCD = shutil.which("etcd")
PYNET = os.path.join(OUR_PLUGINS, "pynet")


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Underlay:
    """The switch every node is cabled to (bridge under0), which also holds the outside address."""

    def __init__(self, make_netns, extra_addresses=()):
        self.ns = make_netns("pynt-sw")
        ipr = self.ns.ipr
        ipr.link("add", ifname="under0", kind="bridge")
        self.bridge = ipr.link_lookup(ifname="under0")[0]
        for ip in (*extra_addresses, OUTSIDE):
            ipr.addr("add", index=self.bridge, address=ip, prefixlen=24)
        ipr.link("set", index=self.bridge, state="up")

    def node(self, index: int, make_netns, tmp_path) -> "SimNode":
        node = SimNode(index, make_netns(f"pynt-n{index}"), tmp_path)
        port = f"sw{os.getpid() % 10000}n{index}"
        veth_link(self.ns, port, node.ns, "eth0", (), [f"{node.ip}/24"])
        self.ns.ipr.link("set", index=self.ns.ipr.link_lookup(ifname=port)[0], master=self.bridge)
        return node


class EtcdCluster:
    """An etcd cluster whose members listen on addresses of the underlay's switch netns."""

    def __init__(self, underlay: Underlay, tmp_path, size: int = 3):
        self.switch, self.tmp = underlay.ns, tmp_path
        self.members = [UNDERLAY.format(201 + i) for i in range(size)]
        for ip in self.members:
            self.switch.ipr.addr("add", index=underlay.bridge, address=ip, prefixlen=24)
        self.initial = ",".join(f"m{i}=http://{ip}:2380" for i, ip in enumerate(self.members))
        self.procs: dict[int, subprocess.Popen] = {}
        for i in range(size):
            self.start(i)
        wait_for(self.listening, 30, "etcd to listen")

    def start(self, i: int, state: str = "new") -> None:
        ip = self.members[i]
        self.procs[i] = self.switch.popen([
            ETCD, "--name", f"m{i}", "--data-dir", str(self.tmp / f"etcd{i}"),
            "--listen-client-urls", f"http://{ip}:2379", "--advertise-client-urls", f"http://{ip}:2379",
            "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
            "--initial-cluster", self.initial, "--initial-cluster-state", state,
            "--initial-cluster-token", "pynet-test", "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, i: int) -> None:
        stop(self.procs.pop(i))

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)

    def listening(self) -> bool:
        for ip in self.members:
            try:
                with self.switch.entered():
                    sock = socket.create_connection((ip, 2379), timeout=1)
                sock.close()
            except OSError:
                return False
        return True

    @property
    def store(self) -> str:
        return "etcd://" + ",".join(f"{ip}:2379" for ip in self.members)


class SimNode:
    """One simulated host: a netns on the underlay, its agent, its conflist and its containers."""

    def __init__(self, index: int, ns, tmp_path):
        self.index, self.ns = index, ns
        self.name = f"node{index}"
        self.ip = UNDERLAY.format(11 + index)
        self.dir = tmp_path / self.name
        self.dir.mkdir()
        self.agent: subprocess.Popen | None = None
        self.containers: list = []

    def start_agent(self, store: str, backend: str, *extra: str, ttl: int = 4, interval: float = 0.3) -> None:
        self.agent = self.ns.popen([PYNET, "node", "run", "--name", self.name, "--store", store,
                                    "--cluster-cidr", CLUSTER, "--backend", backend, "--iface", "eth0",
                                    "--config-dir", str(self.dir / "net.d"), "--ipam-dir", str(self.dir / "ipam"),
                                    "--ttl", str(ttl), "--interval", str(interval), *extra],
                                   stdout=subprocess.DEVNULL, stderr=open(self.dir / "agent.log", "ab"))

    def stop_agent(self, sig=signal.SIGTERM) -> None:
        if self.agent is not None:
            stop(self.agent, sig)
            self.agent = None

    def status(self) -> dict:
        try:
            with open(self.dir / "net.d" / "pynet-node-status.json") as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def ready_with(self, peers: int) -> bool:
        status = self.status()
        return bool(status.get("ready")) and len(status.get("peers", [])) == peers

    def conflist(self) -> dict:
        with open(self.dir / "net.d" / "10-pynet-pods.conflist") as f:
            return json.load(f)
