"""The node agent's loop: join (lease a subnet, set up the data plane, publish, write the conflist), then
keep the lease alive and the peers' routes in step with the store until told to stop."""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from dataclasses import dataclass

from cni_plugins.files import atomic_write
from cni_plugins.handles import own_netns

from . import dataplane, subnets
from .records import NodeRecord
from .store_etcd import StoreUnavailable

STATE_FILE = "pynet-node.json"          # this node's subnet, kept across restarts
STATUS_FILE = "pynet-node-status.json"  # ready or not, for `pynet node status` and tests
CONFLIST = "10-pynet-pods.conflist"
NETWORK = "pynet-pods"
BRIDGE = "pynet0"


@dataclass
class AgentConfig:
    name: str
    cluster_cidr: str
    backend: str
    iface: str
    config_dir: str
    ipam_dir: str = "/var/lib/cni/networks"
    subnet_len: int = 24
    ttl: int = 10
    interval: float = 1.0
    leave_on_exit: bool = False


class Agent:
    def __init__(self, cfg: AgentConfig, store):
        self.cfg = cfg
        self.store = store
        self.cluster = subnets.parse_cluster(cfg.cluster_cidr, cfg.subnet_len)
        self.lease: int | None = None
        self.own: NodeRecord | None = None
        self.ready = False
        self.peers: list[NodeRecord] = []

    # -- the loop --------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        host = own_netns()
        try:
            self.underlay_index, self.public_ip, self.underlay_mtu = dataplane.underlay(host, self.cfg.iface)
            while not stop.is_set():
                self._step(host)
                self._write_status()
                stop.wait(self.cfg.interval)
            if self.cfg.leave_on_exit:
                self._leave(host)
        finally:
            host.close()

    def _step(self, host) -> None:
        try:
            if self.lease is None or not self.store.keepalive(self.lease):
                self._join(host)
            self.peers = self.store.nodes()
            dataplane.reconcile(host, self.own, self.peers, self.underlay_index)
            self.ready = True
        except StoreUnavailable:
            # The data plane stays as it is: pods keep their connectivity while the store is away.
            self.ready = False

    def _join(self, host) -> None:
        lease = self.store.grant(self.cfg.ttl)
        subnet = self._claim(lease)
        own = NodeRecord(self.cfg.name, subnet, self.public_ip, self.cfg.backend)
        if self.cfg.backend == "vxlan":
            mac = dataplane.ensure_vxlan(host, self.underlay_index, self.public_ip, self.underlay_mtu, own)
            own = NodeRecord(own.name, own.subnet, own.public_ip, own.backend, mac)
        dataplane.enable_forwarding(host)
        dataplane.masquerade_outside(host, subnet, str(self.cluster))
        self.store.publish(own, lease)
        self._write_conflist(own)
        atomic_write(os.path.join(self.cfg.config_dir, STATE_FILE), json.dumps({"subnet": subnet}))
        self.lease, self.own = lease, own

    def _claim(self, lease: int) -> str:
        assigned = self.store.assigned_subnet(self.cfg.name)
        if assigned:   # Kubernetes: the Node's podCIDR
            if not self.store.claim_subnet(assigned, self.cfg.name, lease):
                raise RuntimeError(f"subnet {assigned} assigned to {self.cfg.name} cannot be used")
            return assigned
        taken = self.store.taken_subnets()
        for subnet in subnets.candidates(self.cluster, self.cfg.subnet_len,
                                         {s for s, holder in taken.items() if holder != self.cfg.name},
                                         self._previous_subnet() or _held_by(taken, self.cfg.name)):
            if self.store.claim_subnet(subnet, self.cfg.name, lease):
                return subnet
        raise RuntimeError(f"no free /{self.cfg.subnet_len} left in cluster CIDR {self.cluster}")

    def _previous_subnet(self) -> str | None:
        try:
            with open(os.path.join(self.cfg.config_dir, STATE_FILE)) as f:
                subnet = json.load(f).get("subnet")
            return subnet if ipaddress.ip_network(subnet).subnet_of(self.cluster) else None
        except (OSError, ValueError, TypeError, AttributeError):
            return None

    def _leave(self, host) -> None:
        """Gives the subnet back and removes this node's data plane (`--leave-on-exit`)."""
        if self.lease is not None:
            try:
                self.store.revoke(self.lease)
            except StoreUnavailable:
                pass   # the lease ends by itself
        if self.own is not None:
            dataplane.reconcile(host, self.own, [], self.underlay_index)
        dataplane.remove_masquerade(host)
        for name in (CONFLIST, STATE_FILE):
            try:
                os.unlink(os.path.join(self.cfg.config_dir, name))
            except FileNotFoundError:
                pass

    # -- files -----------------------------------------------------------------------------------------
    def _write_conflist(self, own: NodeRecord) -> None:
        net = own.network
        gateway = str(net.network_address + 1)
        mtu = self.underlay_mtu - (dataplane.VXLAN_OVERHEAD if own.backend == "vxlan" else 0)
        conflist = {
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [
                {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "isDefaultGateway": True, "mtu": mtu,
                 # masquerading is the agent's: only traffic leaving the cluster CIDR (dataplane.py)
                 "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": self.cfg.ipam_dir,
                          "ranges": [[{"subnet": own.subnet, "gateway": gateway}]]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "firewall"},
            ],
        }
        os.makedirs(self.cfg.config_dir, exist_ok=True)
        atomic_write(os.path.join(self.cfg.config_dir, CONFLIST), json.dumps(conflist, indent=2))

    def _write_status(self) -> None:
        status = {"name": self.cfg.name, "ready": self.ready, "backend": self.cfg.backend,
                  "subnet": self.own.subnet if self.own else None, "publicIP": getattr(self, "public_ip", None),
                  "peers": sorted(p.name for p in self.peers if self.own and p.name != self.own.name),
                  "time": time.time()}
        atomic_write(os.path.join(self.cfg.config_dir, STATUS_FILE), json.dumps(status))


def _held_by(taken: dict[str, str], name: str) -> str | None:
    return next((subnet for subnet, holder in taken.items() if holder == name), None)
