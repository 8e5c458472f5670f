"""Bringing a validated topology up in real namespaces, and taking it down again.

Order of ``up``: namespaces (+ sysctls), switch bridges, veth links, VXLAN links (they need the underlay
addresses), services (services.py: started in file order, all ready before going on), networks whose
conflist a service generates (waited for), CNI attachments (plugin executables run inside the
container's simulated host netns, see cni.py), nftables rules declared on nodes, static routes, then the
addresses actually present are read back from the kernel into the state. Any failure tears down what
was made; ``down`` ends the services first, by PID.
"""

from __future__ import annotations

import copy
import errno
import ipaddress
import os
import time

from cni_plugins import netlink
from cni_plugins.results import Route

from netns_fixtures.namespaces import Netns
from netns_fixtures.runner import OUR_PLUGINS
from . import cni, services
from . import state as st
from .model import SWITCH_BRIDGE, Attachment, Link, Node, Topology, TopologyError
from .parse import read_generated


class DeployError(Exception):
    """``up`` failed; everything it made has been removed again (unless keep_on_failure)."""


class NamespaceGone(LookupError):
    """Namespaces of a topology that is up were removed outside it."""

    def __init__(self, dep: "Deployment", nodes: list[str]):
        self.nodes = nodes
        names = ", ".join(f"{n} ({os.path.join(st.NETNS_DIR, dep.state['namespaces'][n])})" for n in nodes)
        super().__init__(f"topology {dep.name!r}: {_nodes(nodes)} {names} no longer "
                         f"{'exists' if len(nodes) == 1 else 'exist'} (deleted outside pynet?); "
                         f"`pynet topology down` removes the rest, then `up` builds it again")


class Deployment:
    """A topology that is (or was) up: its namespaces, CNI results and the addresses found in them."""

    def __init__(self, topology: Topology | None, state: dict, store: st.StateStore):
        self.topology = topology
        self.state = state
        self.store = store
        self._ns: dict[str, Netns] = {}

    @property
    def name(self) -> str:
        return self.state["name"]

    @property
    def run(self) -> str:
        return self.state["run"]

    @property
    def cni_path(self) -> list[str]:
        return self.state.get("cni_path") or [OUR_PLUGINS]

    def netns(self, node: str) -> Netns:
        """The namespace of ``node`` (a netns_fixtures.Netns; not removed when this object goes away).
        Raises NamespaceGone when it was deleted behind the topology's back."""
        if node not in self.state["namespaces"]:
            raise KeyError(f"no node {node!r} in topology {self.name!r}")
        if node not in self._ns:
            if not st.netns_exists(self.state["namespaces"][node]):
                raise NamespaceGone(self, [node])
            self._ns[node] = Netns(self.state["namespaces"][node])
        return self._ns[node]

    def missing_nodes(self) -> list[str]:
        """Nodes whose namespace no longer exists (deleted by hand, e.g. `ip netns del`)."""
        return st.missing_nodes(self.state["namespaces"])

    node = netns

    def addresses(self, node: str) -> list[tuple[str, str]]:
        """[(ifname, 'ip/prefix')] found on ``node`` after ``up``."""
        return [tuple(x) for x in self.state.get("addresses", {}).get(node, [])]

    def all_addresses(self) -> dict[str, str]:
        """ip -> node, for every address inside the topology."""
        return {str(ipaddress.ip_interface(addr).ip): node
                for node, addrs in self.state.get("addresses", {}).items() for _, addr in addrs}

    def address(self, node: str, ifname: str = "", family: int | None = None) -> str:
        """The address a check means by ``node`` or ``node:ifname``: the first one written for it in the
        file (link addresses in order, then CNI attachments), else the first found on the node; IPv4
        before IPv6 unless ``family`` says which."""
        found = [(i, a) for i, a in self.addresses(node)
                 if family is None or ipaddress.ip_interface(a).version == family]
        if ifname:
            found = [(i, a) for i, a in found if i == ifname]
        preferred = []
        if self.topology is not None:
            preferred = [ep.ifname for link in self.topology.links for ep in (link.a, link.b) if ep.node == node]
            preferred += [att.ifname for att in self.topology.nodes[node].attach]
        found.sort(key=lambda x: (ipaddress.ip_interface(x[1]).version,
                                  preferred.index(x[0]) if x[0] in preferred else len(preferred)))
        if not found:
            what = f"IPv{family} address" if family else "address"
            raise LookupError(f"node {node!r} has no {what}" + (f" on {ifname!r}" if ifname else ""))
        return str(ipaddress.ip_interface(found[0][1]).ip)

    def check(self, only: list[int] | None = None):
        from .checks import run_checks

        if self.topology is None:
            raise TopologyError("checks need the topology file")
        return run_checks(self, only)

    def close(self) -> None:
        for ns in self._ns.values():
            _close(ns)
        self._ns.clear()

    def down(self, cni_del: bool = True) -> dict:
        self.close()
        return down(self.name, self.store, cni_del=cni_del, state=self.state)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.down()


def _close(ns: Netns) -> None:
    if ns._ipr is not None:
        ns._ipr.close()
        ns._ipr = None


# -- up -------------------------------------------------------------------------------------------

def up(topo: Topology, state_dir: str | None = None, cni_path: list[str] | None = None,
       keep_on_failure: bool = False, cni_runtime: str | None = None) -> Deployment:
    """Brings ``topo`` up; ``cni_runtime`` is "runner" (pynet.runner, the default) or
    "fixtures" (netns_fixtures.runner.CNI)."""
    if cni_runtime is not None and cni_runtime not in cni.RUNTIMES:
        raise DeployError(f"unknown CNI runtime {cni_runtime!r} (known: {', '.join(cni.RUNTIMES)})")
    if any(link.kind == "vxlan" for link in topo.links) and not kernel_supports_vxlan():
        raise DeployError(f"topology {topo.name!r} has vxlan links, but this kernel cannot create vxlan "
                          "devices (no vxlan driver); route between the hosts instead (host-gw, see "
                          "examples/topologies/two-hosts-routed.yaml)")
    store = st.StateStore(state_dir)
    old = store.read(topo.name)
    if old is not None:
        alive = [n for n in old.get("namespaces", {}).values() if st.netns_exists(n)]
        if alive:
            raise DeployError(f"topology {topo.name!r} is already up (run {old.get('run')}, state "
                              f"{store.path(topo.name)}); take it down first")
        down(topo.name, store, cni_del=False, state=old)   # a stale state from a crash: clear it
    run = os.urandom(3).hex()
    state = {"name": topo.name, "run": run, "file": os.path.abspath(topo.source) if topo.source else "",
             "phase": "creating", "started": time.time(), "cni_path": list(cni_path or [OUR_PLUGINS]),
             "cni_runtime": cni_runtime or cni.default_runtime(),
             "data_dir": store.data_dir(topo.name),
             "namespaces": {n: st.netns_name(topo.name, run, n) for n in topo.nodes},
             "services": [], "attachments": [], "addresses": {}}
    store.write(state)
    dep = Deployment(topo, state, store)
    try:
        _build(dep)
    except BaseException as exc:
        state["phase"] = "failed"
        state["error"] = str(exc)
        store.write(state)
        if not keep_on_failure:
            dep.down()
        if isinstance(exc, (DeployError, KeyboardInterrupt)):
            raise
        raise DeployError(f"bringing up {topo.name!r} failed: {exc}") from exc
    state["phase"] = "up"
    store.write(state)
    return dep


def attach(topo: Topology, state_dir: str | None = None) -> Deployment:
    """The running deployment of ``topo`` (from its state file), for check/show after a separate ``up``."""
    store = st.StateStore(state_dir)
    state = store.read(topo.name)
    if state is None or state.get("corrupt"):
        raise DeployError(f"topology {topo.name!r} is not up (no state in {store.path(topo.name)})")
    if state.get("phase") != "up":
        raise DeployError(f"topology {topo.name!r} is not up (phase {state.get('phase')!r}: "
                          f"{state.get('error', 'up did not finish')}); run down, then up again")
    if set(state.get("namespaces", {})) != set(topo.nodes):
        raise DeployError(f"topology {topo.name!r} was brought up from a file with other nodes "
                          f"({', '.join(sorted(state.get('namespaces', {})))}); take it down and up again")
    return Deployment(topo, state, store)


_VXLAN_SUPPORT: bool | None = None


def kernel_supports_vxlan() -> bool:
    """Tries a vxlan device in a throwaway netns (once per process)."""
    global _VXLAN_SUPPORT
    if _VXLAN_SUPPORT is None:
        with Netns.create("pynet-vxprobe") as ns:
            try:
                ns.ipr.link("add", ifname="vxprobe", kind="vxlan", vxlan_id=1, vxlan_port=4789)
                _VXLAN_SUPPORT = True
            except Exception:
                _VXLAN_SUPPORT = False
    return _VXLAN_SUPPORT


def _build(dep: Deployment) -> None:
    topo = dep.topology
    from pyroute2 import netns as pr_netns

    for node in topo.nodes.values():
        pr_netns.create(dep.state["namespaces"][node.name])
        ns = dep.netns(node.name)
        ns.ipr.link("set", index=1, state="up")
        _sysctls(ns, node)
        if node.kind == "switch":
            ns.ipr.link("add", ifname=SWITCH_BRIDGE, kind="bridge")
            netlink.set_up(ns.ipr, netlink.link_index(ns.ipr, SWITCH_BRIDGE))
    for link in topo.links:
        if link.kind == "veth":
            _veth(dep, link)
    for link in topo.links:
        if link.kind == "vxlan":
            _vxlan(dep, link)
    _services(dep)
    for node in topo.nodes.values():
        for net in node.networks.values():
            if net.generated:
                _generated_network(dep, net)
    for node in topo.containers():
        for att in node.attach:
            _attach(dep, node, att)
    # After the plugins: rules may add to tables they created (the firewall plugin's admin chain).
    for node in topo.nodes.values():
        if node.nftables:
            _nftables(dep.netns(node.name), node)
    for node in topo.nodes.values():
        for route in node.routes:
            _route(dep.netns(node.name), node, route)
    dep.state["addresses"] = {n: _read_addresses(dep.netns(n)) for n in topo.nodes}


def _services(dep: Deployment) -> None:
    """In file order; each waits for the readiness of the services its ``after`` names, and all are
    ready before the first CNI attachment (a network may be a conflist a service writes)."""
    data_dir = dep.state["data_dir"]
    started: dict[str, tuple] = {}
    waited: set[str] = set()

    def ready(name: str) -> None:
        if name not in waited:
            proc, record = started[name]
            services.wait_ready(dep.topology.services[name], proc, dep.netns(record["node"]), record, data_dir)
            waited.add(name)

    try:
        for service in dep.topology.services.values():
            for name in service.after:
                ready(name)
            proc, record = services.start(service, dep.netns(service.node), data_dir)
            started[service.name] = (proc, record)
            dep.state["services"].append(record)
            dep.store.write(dep.state)   # before waiting: a failed or interrupted up still ends it
        for name in started:
            ready(name)
        for name, (proc, record) in started.items():
            services.check_running(dep.topology.services[name], proc, record)
    except services.ServiceFailed as exc:
        raise DeployError(str(exc)) from None


def _generated_network(dep: Deployment, net) -> None:
    path = services.expand(net.file, dep.state["data_dir"])
    writer = services.record(dep.state, net.written_by)
    writers = [writer] if writer is not None else []
    try:
        services.wait_file(path, net.timeout, writers, f"network {net.name!r} on {net.host!r}")
        read_generated(net, path)
    except (services.ServiceFailed, TopologyError) as exc:
        raise DeployError(str(exc)) from None


def _sysctls(ns: Netns, node: Node) -> None:
    values = {}
    if node.forwarding:
        values.update({"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
    values.update(node.sysctls)
    for key, value in values.items():
        try:
            ns.set_sysctl(key, value)
        except OSError as exc:
            raise DeployError(f"node {node.name!r}: cannot set sysctl {key}={value}: {exc.strerror}") from None


def _addresses_up(ns: Netns, ifname: str, address: str, node: Node, mtu: int | None) -> None:
    index = netlink.link_index(ns.ipr, ifname)
    if mtu:
        ns.ipr.link("set", index=index, mtu=mtu)
    if address:
        netlink.add_address(ns.ipr, index, ipaddress.ip_interface(address), nodad=True)
    if node.kind == "switch":
        ns.ipr.link("set", index=index, master=netlink.link_index(ns.ipr, SWITCH_BRIDGE))
    netlink.set_up(ns.ipr, index)


def _veth(dep: Deployment, link: Link) -> None:
    topo = dep.topology
    a, b = dep.netns(link.a.node), dep.netns(link.b.node)
    fd = os.open(b.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        # Both ends are born in their namespaces: nothing ever appears in the machine's own netns.
        netlink.create_veth(a.ipr, link.a.ifname, link.b.ifname, fd, mtu=link.mtu)
    except Exception as exc:
        raise DeployError(f"link {link.a} <-> {link.b}: {exc}") from None
    finally:
        os.close(fd)
    _addresses_up(a, link.a.ifname, link.a.address, topo.nodes[link.a.node], None)
    _addresses_up(b, link.b.ifname, link.b.address, topo.nodes[link.b.node], None)


def _vxlan(dep: Deployment, link: Link) -> None:
    topo = dep.topology
    for ep, local, remote in ((link.a, *link.underlay), (link.b, *reversed(link.underlay))):
        ns = dep.netns(ep.node)
        # Bound to the underlay interface, the kernel sizes the tunnel MTU (underlay - 50) by itself.
        lower = [msg["index"] for msg in ns.ipr.get_addr(address=local)]
        try:
            # A unicast "group" is the single remote: a point-to-point tunnel that needs no FDB entries.
            ns.ipr.link("add", ifname=ep.ifname, kind="vxlan", vxlan_id=link.vni, vxlan_local=local,
                        vxlan_group=remote, vxlan_port=link.port, **({"vxlan_link": lower[0]} if lower else {}))
        except Exception as exc:
            code = netlink.netlink_error_code(exc)
            if code in (errno.EOPNOTSUPP, errno.EINVAL):
                raise DeployError(f"vxlan link {link.a} <-> {link.b}: this kernel cannot create vxlan "
                                  f"devices ({exc}); use routed links (host-gw) instead") from None
            raise DeployError(f"vxlan link {link.a} <-> {link.b}: {exc}") from None
        _addresses_up(ns, ep.ifname, ep.address, topo.nodes[ep.node], link.mtu)


def _nftables(ns: Netns, node: Node) -> None:
    import nftables

    with ns.entered():
        ctx = nftables.Nftables()
        rc, _, err = ctx.cmd(node.nftables)
    if rc != 0:
        raise DeployError(f"node {node.name!r}: its nftables rules were refused: {err.strip()}")


def effective_conflist(dep: Deployment, host: str, network: str) -> dict:
    """The conflist as run: host-local keeps its leases under the topology's own data dir."""
    conf = copy.deepcopy(dep.topology.network(host, network).conflist)
    for plugin in conf["plugins"]:
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            ipam["dataDir"] = os.path.join(dep.state["data_dir"], "cni", host)
    return conf


def _attach(dep: Deployment, node: Node, att: Attachment) -> None:
    conf = effective_conflist(dep, node.host, att.network)
    record = {"node": node.name, "host": node.host, "network": att.network, "ifname": att.ifname,
              "container_id": f"{dep.name}-{dep.run}-{node.name}", "conflist": conf,
              "capability_args": {"portMappings": [p.to_cni() for p in att.ports]} if att.ports else {},
              "ip": att.ip, "result": None}
    # Recorded before ADD: a crash in the middle still leaves down() enough to run DEL.
    dep.state["attachments"].append(record)
    dep.store.write(dep.state)
    try:
        record["result"] = cni.add(dep.state, dep.netns(node.host), dep.netns(node.name), record)
    except cni.CNIFailed as exc:
        raise DeployError(f"attaching {node.name}:{att.ifname} to network {att.network!r} on {node.host!r}: "
                          f"{exc}") from None
    dep.store.write(dep.state)


def _route(ns: Netns, node: Node, route) -> None:
    index = netlink.link_index(ns.ipr, route.dev) if route.dev else None
    if route.dev and index is None:
        raise DeployError(f"node {node.name!r}: route {route.dst} names interface {route.dev!r}, which it lacks")
    gw = ipaddress.ip_address(route.via) if route.via else None
    try:
        netlink.add_route(ns.ipr, Route(route.network, gw), index)
    except Exception as exc:
        raise DeployError(f"node {node.name!r}: route {route.dst} via {route.via or route.dev}: {exc}") from None


def _read_addresses(ns: Netns) -> list[list[str]]:
    out = []
    for name in ns.link_names():
        if name != "lo":
            out.extend([name, a] for a in ns.addresses(name))
    return out


# -- down -----------------------------------------------------------------------------------------

def down(name: str, store: st.StateStore | str | None = None, cni_del: bool = True,
         state: dict | None = None, all_runs: bool = False) -> dict:
    """Removes everything of topology ``name``: CNI DEL for each attachment (best effort), every namespace
    in the state and every other ``pynet.<name>.<run>.*`` of the same run, then the state file and data
    dir. Idempotent; works after a crashed ``up`` (its state file is written before anything is made).

    Without a state file nothing is removed unless ``all_runs``: other runs of the same file (another
    state dir, a parallel test) share the ``pynet.<name>.`` prefix; they are listed as ``orphans``."""
    if not isinstance(store, st.StateStore):
        store = st.StateStore(store)
    state = state if state is not None else store.read(name)
    report = {"name": name, "namespaces": [], "services": [], "warnings": [], "orphans": []}
    namespaces = dict((state or {}).get("namespaces") or {})
    # First, and in reverse start order: agents go before the store they talk to.
    for record in reversed((state or {}).get("services") or []):
        if services.running(record):
            report["services"].append(record["name"])
        warning = services.stop(record)
        if warning:
            report["warnings"].append(warning)
    gone = st.missing_nodes(namespaces)
    if gone and state and state.get("phase") == "up":
        report["gone"] = gone
        report["warnings"].append(f"{_nodes(gone)} {', '.join(gone)} {'was' if len(gone) == 1 else 'were'} "
                                  "already gone (deleted outside pynet?); removed the rest")
    if cni_del and state:
        for record in reversed(state.get("attachments") or []):
            _del_attachment(state, record, report)
    if state and state.get("run"):
        targets = set(namespaces.values()) | set(st.existing_netns(st.netns_prefix(name, state["run"])))
    elif all_runs:
        targets = set(st.existing_netns(st.netns_prefix(name)))
    else:
        targets = set()
        report["orphans"] = st.existing_netns(st.netns_prefix(name))
    from pyroute2 import netns as pr_netns

    for ns_name in sorted(targets):
        if not st.netns_exists(ns_name):
            continue
        try:
            pr_netns.remove(ns_name)
            report["namespaces"].append(ns_name)
        except OSError as exc:
            report["warnings"].append(f"cannot remove namespace {ns_name}: {exc}")
    store.remove(name)
    return report


def _nodes(nodes: list[str]) -> str:
    return "the namespace of node" if len(nodes) == 1 else "the namespaces of nodes"


def _del_attachment(state: dict, record: dict, report: dict) -> None:
    host_ns = state["namespaces"].get(record["host"])
    ctr_ns = state["namespaces"].get(record["node"])
    if not st.netns_exists(host_ns):
        return   # its host is gone, and everything the plugins made lived in it
    # A container netns that is gone gets DEL without one, as runtimes do: leases and rules still go.
    ctr_path = os.path.join(st.NETNS_DIR, ctr_ns) if st.netns_exists(ctr_ns) else ""
    try:
        cni.delete(state, Netns(host_ns), ctr_path, record)
    except cni.CNIFailed as exc:
        report["warnings"].append(f"DEL of {record['node']}:{record['ifname']} on {record['host']}: {exc}")
