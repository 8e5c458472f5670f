"""The rules a topology must follow across its fields: containers on hosts that exist, networks those
hosts have, every interface and address used once, vxlan underlays that are the node's own addresses,
routes of one IP family, checks aimed only inside the topology, port forwards that exist.

``parse.py`` reports a field it cannot read where it reads it; what is checked here needs the rest of
the topology. Problems are collected rather than raised, so one pass names every one of them.
"""

from __future__ import annotations

import ipaddress

from .model import NODE_KINDS, SWITCH_BRIDGE, Check, Topology, TopologyError


class Problems:
    """Findings of one parse, each ``place in the file: what is wrong, with the bad value``."""

    def __init__(self):
        self.found: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.found.append(f"{where}: {msg}")

    def raise_if_any(self, source: str) -> None:
        if self.found:
            raise TopologyError(self.found, source)


def nodes_and_links(problems: Problems, topo: Topology) -> None:
    _containers(problems, topo)
    _interfaces(problems, topo)
    _addresses(problems, topo)
    _vxlan_underlays(problems, topo)
    _routes(problems, topo)
    _services(problems, topo)


def check(problems: Problems, where: str, check: Check, topo: Topology) -> None:
    if check.src and check.src not in topo.nodes:
        problems.add(where + ".from", f"unknown node {check.src!r}")
    _check_target(problems, where + ".to", check.dst, topo)
    if check.type == "portforward":
        _portforward(problems, where, check, topo)


def _containers(problems: Problems, topo: Topology) -> None:
    for node in topo.containers():
        if not node.host:
            continue
        host = topo.nodes.get(node.host)
        if host is None:
            problems.add(f"nodes.{node.name}.host", f"unknown node {node.host!r}")
            continue
        if host.kind not in NODE_KINDS:
            continue   # its misspelt kind is reported; "is not a host" would only repeat it
        if host.kind != "host":
            problems.add(f"nodes.{node.name}.host",
                         f"{node.host!r} is a {host.kind}, containers run on kind: host nodes")
            continue
        for i, att in enumerate(node.attach):
            where = f"nodes.{node.name}.attach[{i}]"
            network = host.networks.get(att.network)
            if att.network and network is None:
                problems.add(where + ".network", f"unknown network {att.network!r} on host {node.host!r} "
                                                 f"(networks: {', '.join(host.networks) or 'none'})")
                continue
            if network is None or not network.conflist:
                continue   # no such network, or a conflist parse.py could not read
            if att.ports and not any((pl.get("capabilities") or {}).get("portMappings")
                                     for pl in network.conflist.get("plugins", [])):
                problems.add(where + ".ports", f"network {att.network!r} has no plugin with capabilities: "
                                               "{portMappings: true} (add a portmap plugin to its conflist)")
            if att.ip and network.subnets and not any(ipaddress.ip_address(att.ip) in s for s in network.subnets):
                problems.add(where + ".ip", f"{att.ip} is outside network {att.network!r} "
                                            f"({', '.join(map(str, network.subnets))})")


def _interfaces(problems: Problems, topo: Topology) -> None:
    used: dict[tuple[str, str], str] = {}
    for node in topo.nodes.values():
        for i, att in enumerate(node.attach):
            key = (node.name, att.ifname)
            if key in used:
                problems.add(f"nodes.{node.name}.attach[{i}].ifname", f"interface {att.ifname!r} is used twice")
            used[key] = f"nodes.{node.name}.attach[{i}]"
        if node.kind == "switch":
            used[(node.name, SWITCH_BRIDGE)] = "the switch's own bridge"
    for i, link in enumerate(topo.links):
        for ep in (link.a, link.b):
            key = (ep.node, ep.ifname)
            if key in used:
                problems.add(f"links[{i}].endpoints", f"interface {ep} is already used by {used[key]}")
            used[key] = f"links[{i}]"


def _addresses(problems: Problems, topo: Topology) -> None:
    owner: dict[str, str] = {}
    for i, link in enumerate(topo.links):
        for ep in (link.a, link.b):
            if not ep.address:
                continue
            ip = str(ipaddress.ip_interface(ep.address).ip)
            if ip in owner:
                problems.add(f"links[{i}].addresses", f"duplicate address {ip} (also on {owner[ip]})")
            owner[ip] = str(ep)
    for node in topo.containers():
        for att in node.attach:
            if att.ip and att.ip in owner:
                problems.add(f"nodes.{node.name}.attach", f"duplicate address {att.ip} (also on {owner[att.ip]})")
            if att.ip:
                owner[att.ip] = f"{node.name}:{att.ifname}"


def _vxlan_underlays(problems: Problems, topo: Topology) -> None:
    static = topo.static_addresses()
    for i, link in enumerate(topo.links):
        if link.kind != "vxlan" or not all(link.underlay):
            continue
        for ep, local in zip((link.a, link.b), link.underlay):
            mine = [str(ipaddress.ip_interface(a).ip) for _, a in static[ep.node]]
            if local not in mine:
                problems.add(f"links[{i}].underlay", f"{local} is not an address of node {ep.node!r} "
                                                     f"(its addresses: {', '.join(mine) or 'none'})")


def _routes(problems: Problems, topo: Topology) -> None:
    for node in topo.nodes.values():
        for i, route in enumerate(node.routes):
            if route.via and route.dst != "default" and (":" in route.via) != (":" in route.dst):
                problems.add(f"nodes.{node.name}.routes[{i}]", "dst and via are of different IP families")


def _services(problems: Problems, topo: Topology) -> None:
    """Generated networks name a service that exists; readiness probes stay inside the topology."""
    for node in topo.nodes.values():
        for net in node.networks.values():
            if net.written_by and net.written_by not in topo.services:
                problems.add(f"nodes.{node.name}.networks.{net.name}.written_by",
                             f"unknown service {net.written_by!r} (services: {', '.join(topo.services) or 'none'})")
    static = {ipaddress.ip_interface(a).ip for addrs in topo.static_addresses().values() for _, a in addrs}
    for service in topo.services.values():
        ready = service.ready
        if ready is None or ready.tcp is None:
            continue
        ip = ipaddress.ip_address(ready.tcp[0])
        if not ip.is_loopback and ip not in static:
            problems.add(f"services.{service.name}.ready.tcp",
                         f"{ip} is neither loopback nor an address of a node in this topology "
                         "(readiness probes never leave it)")


def _check_target(problems: Problems, where: str, dst: str, topo: Topology) -> None:
    """A check aims at a node, node:ifname, or an address inside the topology: never outside it."""
    if not dst:
        return   # parse.py reported it missing
    try:
        ip = ipaddress.ip_address(dst)
    except ValueError:
        ip = None
    if ip is not None:
        static = [ipaddress.ip_interface(a).ip for addrs in topo.static_addresses().values() for _, a in addrs]
        subnets = [s for n in topo.nodes.values() for net in n.networks.values() for s in net.subnets]
        if ip not in static and not any(ip in net for net in subnets):
            problems.add(where, f"{dst} is not an address of any node in this topology (checks never leave it)")
        return
    node, _, ifname = dst.partition(":")
    if node not in topo.nodes:
        problems.add(where, f"unknown node {node!r}")
        return
    if ifname:
        ifs = {ep.ifname for link in topo.links for ep in (link.a, link.b) if ep.node == node}
        ifs |= {att.ifname for att in topo.nodes[node].attach}
        if ifname not in ifs:
            problems.add(where, f"node {node!r} has no interface {ifname!r} (has: {', '.join(sorted(ifs)) or 'none'})")


def _portforward(problems: Problems, where: str, check: Check, topo: Topology) -> None:
    node = topo.nodes.get(check.target)
    if node is None or node.kind != "container":
        problems.add(where + ".target", f"names the container behind the port mapping, got {check.target or None!r}")
        return
    to_node = check.dst.partition(":")[0]
    if to_node in topo.nodes and to_node != node.host:
        problems.add(where + ".to", f"a port forward is reached at the address of {check.target!r}'s host "
                                    f"{node.host!r}, not at {to_node!r}")
    mapped = any(m.host_port == check.port and m.protocol == check.protocol for att in node.attach for m in att.ports)
    if check.port and check.target_port is None and not mapped:
        problems.add(where + ".port", f"container {check.target!r} maps no host port {check.port}/{check.protocol}; "
                                      "add the mapping or give target_port")
