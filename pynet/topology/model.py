"""Topology files: YAML -> validated dataclasses, with every error found before anything is created.

A topology is a set of nodes (network namespaces), veth/VXLAN links between them, CNI networks living on
simulated hosts, containers attached to those networks, static routes, and a ``checks:`` section.
``load(path)`` / ``parse(doc)`` raise ``TopologyError`` listing every problem, each naming its place in
the file (``links[2].endpoints``) and the bad value. The format (examples/topologies/ has complete files)::

    name: web                      # a-z0-9-, <= 24 chars; namespaces are pynet.<name>.<run>.<node>
    nodes:
      h1:                          # kind: host | netns (default) | container | switch
        kind: host                 # a simulated machine: forwarding on, its own CNI networks and rules
        networks:
          pods: {cniVersion: 1.0.0, plugins: [...]}   # any conflist, inline or {file: x.conflist};
                                   # host-local's dataDir is always set to the topology's state dir
        routes: [{dst: 10.2.0.0/24, via: 192.168.1.2}]      # or dst: default, dev: eth1
        sysctls: {net.ipv4.conf.all.rp_filter: 0}
        nftables: |                # nft syntax, applied with libnftables in h1 after the CNI attachments
          table inet t { ... }
      c1:
        kind: container
        host: h1
        attach:                    # CNI ADD of h1's network, plugins running inside h1's netns
          - {network: pods, ifname: eth0, ip: 10.1.0.5, ports: ["8080:80/tcp"]}
      r1: {}                       # a plain netns (forwarding: true makes it a router)
      sw: {kind: switch}           # a netns with bridge br0: link endpoints on it become its ports
    links:
      - endpoints: ["h1:eth1", "r1:eth0"]
        addresses: [192.168.1.1/24, 192.168.1.2/24]   # or {h1: ..., r1: ...}; null for none
        mtu: 1400
      - {kind: vxlan, endpoints: ["h1:vx1", "h2:vx1"], vni: 7, underlay: [192.168.1.1, 192.168.1.3],
         addresses: [10.9.0.1/24, 10.9.0.2/24]}
    checks:                        # to: node | node:ifname | an address inside the topology
      - {type: icmp, from: c1, to: r1}
      - {type: tcp, from: r1, to: c1, port: 80, expect: fail}      # expect: success (default) | fail
      - {type: udp, from: c1, to: r1:eth0, port: 53}
      - {type: portforward, from: r1, to: h1:eth1, port: 8080, target: c1}  # target_port from the mapping
      - {type: mtu, from: c1, to: r1, size: 1400}                  # a DF UDP datagram of that IP size
      - {type: pingall, nodes: [c1, r1]}       # icmp both ways between every pair (default: all nodes)
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field

NODE_KINDS = ("host", "netns", "container", "switch")
CHECK_TYPES = ("icmp", "tcp", "udp", "portforward", "mtu")
LATER_CHECK_TYPES = ("dns",)  # named in the issue, not implemented yet: a clear error, not "unknown"
EXPECT = {"success": True, "reach": True, "pass": True, True: True,
          "fail": False, "block": False, "blocked": False, False: False}
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
SWITCH_BRIDGE = "br0"


class TopologyError(Exception):
    """The topology file is wrong; ``problems`` lists every finding, one readable line each."""

    def __init__(self, problems: list[str] | str, source: str = ""):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            super().__init__(head + self.problems[0])
        else:
            super().__init__(head + f"{len(self.problems)} problems:\n  - " + "\n  - ".join(self.problems))


@dataclass
class PortMapping:
    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_cni(self) -> dict:
        out = {"hostPort": self.host_port, "containerPort": self.container_port, "protocol": self.protocol}
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out


@dataclass
class Attachment:
    network: str
    ifname: str
    ip: str = ""
    ports: list[PortMapping] = field(default_factory=list)


@dataclass
class RouteSpec:
    dst: str            # a CIDR or "default"
    via: str = ""
    dev: str = ""

    @property
    def network(self):
        if self.dst == "default":
            return ipaddress.ip_network("::/0" if self.via and ":" in self.via else "0.0.0.0/0")
        return ipaddress.ip_network(self.dst, strict=False)


@dataclass
class Network:
    """A CNI network on a simulated host: its conflist as the user wrote it (dataDir is set at deploy)."""
    name: str
    host: str
    conflist: dict
    subnets: list = field(default_factory=list)  # ip_network objects from the IPAM config, for validation


@dataclass
class Node:
    name: str
    kind: str = "netns"
    host: str = ""                                   # containers: the simulated host they live on
    networks: dict[str, Network] = field(default_factory=dict)   # hosts
    attach: list[Attachment] = field(default_factory=list)        # containers
    routes: list[RouteSpec] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    nftables: str = ""
    forwarding: bool = False


@dataclass
class Endpoint:
    node: str
    ifname: str
    address: str = ""   # 'ip/prefix' or ""

    def __str__(self):
        return f"{self.node}:{self.ifname}"


@dataclass
class Link:
    kind: str                      # "veth" or "vxlan"
    a: Endpoint
    b: Endpoint
    mtu: int | None = None
    vni: int | None = None
    underlay: tuple[str, str] = ("", "")
    port: int = 4789


@dataclass
class Check:
    index: int
    type: str
    src: str               # node name
    dst: str               # as written: node, node:ifname or an IP literal
    expect: bool = True
    port: int | None = None
    size: int | None = None
    target: str = ""       # portforward: the container behind the mapping
    target_port: int | None = None
    protocol: str = "tcp"  # portforward
    name: str = ""

    def label(self) -> str:
        if self.name:
            return self.name
        what = {"icmp": "icmp", "tcp": f"tcp/{self.port}", "udp": f"udp/{self.port}",
                "portforward": f"{self.protocol}/{self.port}->{self.target}:{self.target_port}",
                "mtu": f"mtu {self.size}"}[self.type]
        return f"{self.src} -> {self.dst} {what}"


@dataclass
class Topology:
    name: str
    nodes: dict[str, Node]
    links: list[Link] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    source: str = ""

    def static_addresses(self) -> dict[str, list[tuple[str, str]]]:
        """node -> [(ifname, 'ip/prefix')] for addresses written in the file."""
        out: dict[str, list[tuple[str, str]]] = {name: [] for name in self.nodes}
        for link in self.links:
            for ep in (link.a, link.b):
                if ep.address:
                    out[ep.node].append((ep.ifname, ep.address))
        return out

    def containers(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind == "container"]

    def network(self, host: str, name: str) -> Network:
        return self.nodes[host].networks[name]


# -- parsing ----------------------------------------------------------------------------------------

class _Collector:
    def __init__(self):
        self.problems: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")


def _int(c: _Collector, where: str, value, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        c.add(where, f"must be an integer from {lo} to {hi}, got {value!r}")
        return None
    return value


def _cidr(c: _Collector, where: str, value) -> str:
    """An interface address with its prefix ('10.0.0.1/24')."""
    if not isinstance(value, str) or "/" not in value:
        c.add(where, f"bad CIDR {value!r}: an address with a prefix length is needed, e.g. 10.0.0.1/24")
        return ""
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        c.add(where, f"bad CIDR {value!r}")
        return ""
    if iface.ip == iface.network.network_address and iface.network.prefixlen < (31 if iface.version == 4 else 127):
        c.add(where, f"bad CIDR {value!r}: that is the network address, not a host address")
        return ""
    return str(iface)


def _ip(c: _Collector, where: str, value) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (TypeError, ValueError):
        c.add(where, f"bad IP address {value!r}")
        return ""


def _mapping(c: _Collector, where: str, value, allowed: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        c.add(where, f"must be a mapping, got {type(value).__name__}")
        return {}
    for key in value:
        if key not in allowed:
            c.add(where, f"unknown key {key!r} (known: {', '.join(sorted(allowed))})")
    return value


def _ipam_subnets(conflist: dict) -> list:
    """Subnets an IPAM section hands out from (host-local ``ranges``/``subnet``, static ``addresses``)."""
    out = []
    for plugin in conflist.get("plugins", []):
        ipam = (plugin.get("ipam") or {}) if isinstance(plugin, dict) else {}
        candidates = []
        if ipam.get("subnet"):
            candidates.append(ipam["subnet"])
        for rangeset in ipam.get("ranges") or []:
            for rng in rangeset if isinstance(rangeset, list) else []:
                if isinstance(rng, dict) and rng.get("subnet"):
                    candidates.append(rng["subnet"])
        for addr in ipam.get("addresses") or []:
            if isinstance(addr, dict) and addr.get("address"):
                candidates.append(addr["address"])
        for value in candidates:
            try:
                out.append(ipaddress.ip_network(value, strict=False))
            except ValueError:
                pass
    return out


def _conflist(c: _Collector, where: str, value, base_dir: str, name: str) -> dict:
    if isinstance(value, str):
        value = {"file": value}
    if not isinstance(value, dict):
        c.add(where, "must be a conflist mapping or {file: path}")
        return {}
    if "file" in value:
        path = value["file"] if os.path.isabs(value["file"]) else os.path.join(base_dir, value["file"])
        try:
            with open(path) as f:
                value = json.load(f)
        except OSError as exc:
            c.add(where + ".file", f"cannot read {path!r}: {exc.strerror}")
            return {}
        except ValueError as exc:
            c.add(where + ".file", f"{path!r} is not valid JSON: {exc}")
            return {}
    conf = copy.deepcopy(value)
    if "plugins" not in conf and "type" in conf:       # a single-plugin .conf is accepted as a one-entry list
        conf = {k: v for k, v in conf.items() if k in ("cniVersion", "name")} | {
            "plugins": [{k: v for k, v in conf.items() if k not in ("cniVersion", "name")}]}
    plugins = conf.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        c.add(where, "a conflist needs a non-empty 'plugins' list")
        return {}
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            c.add(f"{where}.plugins[{i}]", "every plugin needs a 'type'")
    conf.setdefault("cniVersion", "1.0.0")
    conf["name"] = conf.get("name") or name
    return conf


def parse(doc, source: str = "", base_dir: str = ".") -> Topology:
    c = _Collector()
    if not isinstance(doc, dict):
        raise TopologyError("the file must hold a mapping with 'name', 'nodes', 'links' and 'checks'", source)
    _mapping(c, "top level", doc, {"name", "nodes", "links", "checks", "description"})
    name = doc.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        c.add("name", f"must be 1-24 characters of a-z, 0-9 and '-', starting with a letter or digit; got {name!r}")
        name = "invalid"
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        c.add("nodes", "must be a non-empty mapping of node name -> node")
        raw_nodes = {}

    nodes: dict[str, Node] = {}
    for node_name, raw in raw_nodes.items():
        nodes[str(node_name)] = _parse_node(c, str(node_name), raw or {}, base_dir)
    _check_containers(c, nodes)

    links = [_parse_link(c, i, raw, nodes) for i, raw in enumerate(doc.get("links") or [])]
    links = [link for link in links if link is not None]
    topo = Topology(name, nodes, links, [], source)
    _check_interfaces_and_addresses(c, topo)
    _check_routes(c, topo)
    raw_checks = doc.get("checks") or []
    if not isinstance(raw_checks, list):
        c.add("checks", "must be a list")
        raw_checks = []
    for i, raw in enumerate(raw_checks):
        for ch in _expand_pingall(c, i, raw, topo) if isinstance(raw, dict) and raw.get("type") == "pingall" \
                else [_parse_check(c, i, raw, topo)]:
            if ch is not None:
                ch.index = len(topo.checks)     # numbered as shown in the matrix (after pingall expansion)
                topo.checks.append(ch)
    if c.problems:
        raise TopologyError(c.problems, source)
    return topo


def load(path: str) -> Topology:
    import yaml

    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise TopologyError(f"cannot read topology file: {exc.strerror}", path) from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"not valid YAML: {exc}", path) from None
    return parse(doc, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def _parse_node(c: _Collector, name: str, raw, base_dir: str) -> Node:
    where = f"nodes.{name}"
    if not NODE_RE.match(name):
        c.add(where, "node names are 1-32 characters of letters, digits, '_' and '-'")
    raw = _mapping(c, where, raw, {"kind", "host", "networks", "attach", "routes", "sysctls", "nftables",
                                   "forwarding"})
    kind = raw.get("kind", "netns")
    if kind not in NODE_KINDS:
        c.add(where + ".kind", f"unknown node kind {kind!r} (known: {', '.join(NODE_KINDS)})")
        kind = "netns"
    node = Node(name, kind, forwarding=bool(raw.get("forwarding", kind in ("host", "switch"))))
    if kind == "container":
        node.host = raw.get("host") or ""
        if not node.host:
            c.add(where + ".host", "a container needs the name of the host node it runs on")
        for i, att in enumerate(raw.get("attach") or []):
            node.attach.append(_parse_attachment(c, f"{where}.attach[{i}]", att, i))
    elif raw.get("attach"):
        c.add(where + ".attach", f"only containers attach to CNI networks; {name!r} is a {kind}")
    if raw.get("host") and kind != "container":
        c.add(where + ".host", f"only containers run on a host; {name!r} is a {kind}")
    nets = raw.get("networks") or {}
    if nets and kind != "host":
        c.add(where + ".networks", f"CNI networks live on simulated hosts (kind: host); {name!r} is a {kind}")
    elif not isinstance(nets, dict):
        c.add(where + ".networks", "must be a mapping of network name -> conflist")
    else:
        for net_name, conf in nets.items():
            conflist = _conflist(c, f"{where}.networks.{net_name}", conf, base_dir, str(net_name))
            node.networks[str(net_name)] = Network(str(net_name), name, conflist, _ipam_subnets(conflist))
    for i, route in enumerate(raw.get("routes") or []):
        node.routes.append(_parse_route(c, f"{where}.routes[{i}]", route))
    sysctls = raw.get("sysctls") or {}
    if not isinstance(sysctls, dict):
        c.add(where + ".sysctls", "must be a mapping of key -> value")
    else:
        for key, value in sysctls.items():
            if not str(key).startswith("net."):
                c.add(f"{where}.sysctls.{key}", "only net.* sysctls are per network namespace")
            node.sysctls[str(key)] = str(int(value) if isinstance(value, bool) else value)
    nft = raw.get("nftables") or ""
    if nft and kind in ("container",):
        c.add(where + ".nftables", "nftables rules belong on host, netns or switch nodes")
    node.nftables = str(nft)
    return node


def _parse_attachment(c: _Collector, where: str, raw, position: int) -> Attachment:
    if isinstance(raw, str):
        raw = {"network": raw}
    raw = _mapping(c, where, raw, {"network", "ifname", "ip", "ports"})
    att = Attachment(str(raw.get("network") or ""), str(raw.get("ifname") or f"eth{position}"))
    if not att.network:
        c.add(where + ".network", "names the CNI network (on the container's host) to attach to")
    if raw.get("ip"):
        att.ip = _ip(c, where + ".ip", raw["ip"])
    for i, port in enumerate(raw.get("ports") or []):
        pw = f"{where}.ports[{i}]"
        if isinstance(port, str):   # "8080:80/tcp"
            m = re.match(r"^(\d+):(\d+)(?:/(tcp|udp|sctp))?$", port)
            if not m:
                c.add(pw, f"bad port mapping {port!r}; write HOST:CONTAINER[/tcp|udp]")
                continue
            port = {"hostPort": int(m[1]), "containerPort": int(m[2]), "protocol": m[3] or "tcp"}
        port = _mapping(c, pw, port, {"hostPort", "containerPort", "protocol", "hostIP"})
        hp = _int(c, pw + ".hostPort", port.get("hostPort"), 1, 65535)
        cp = _int(c, pw + ".containerPort", port.get("containerPort"), 1, 65535)
        proto = str(port.get("protocol", "tcp")).lower()
        if proto not in ("tcp", "udp", "sctp"):
            c.add(pw + ".protocol", f"must be tcp, udp or sctp, got {proto!r}")
        host_ip = _ip(c, pw + ".hostIP", port["hostIP"]) if port.get("hostIP") else ""
        if hp and cp:
            att.ports.append(PortMapping(hp, cp, proto, host_ip))
    return att


def _parse_route(c: _Collector, where: str, raw) -> RouteSpec:
    raw = _mapping(c, where, raw, {"dst", "via", "dev"})
    dst = raw.get("dst")
    if dst != "default":
        try:
            ipaddress.ip_network(dst, strict=False)
            if "/" not in str(dst):
                raise ValueError
        except (TypeError, ValueError):
            c.add(where + ".dst", f"bad CIDR {dst!r} (or write 'default')")
            dst = "default"
    via = _ip(c, where + ".via", raw["via"]) if raw.get("via") else ""
    dev = str(raw.get("dev") or "")
    if not via and not dev:
        c.add(where, "a route needs 'via' (a gateway) or 'dev'")
    return RouteSpec(str(dst), via, dev)


def _endpoint(c: _Collector, where: str, value, nodes: dict[str, Node]) -> Endpoint | None:
    if not isinstance(value, str) or value.count(":") != 1:
        c.add(where, f"an endpoint is 'node:ifname', got {value!r}")
        return None
    node, ifname = value.split(":")
    if node not in nodes:
        c.add(where, f"unknown node {node!r} (nodes: {', '.join(nodes) or 'none'})")
        return None
    if not IFNAME_RE.match(ifname):
        c.add(where, f"bad interface name {ifname!r} (1-15 characters)")
        return None
    return Endpoint(node, ifname)


def _parse_link(c: _Collector, i: int, raw, nodes: dict[str, Node]) -> Link | None:
    where = f"links[{i}]"
    raw = _mapping(c, where, raw, {"kind", "endpoints", "addresses", "mtu", "vni", "underlay", "port"})
    kind = raw.get("kind", "veth")
    if kind not in ("veth", "vxlan"):
        c.add(where + ".kind", f"unknown link kind {kind!r} (known: veth, vxlan)")
        return None
    eps = raw.get("endpoints")
    if not isinstance(eps, list) or len(eps) != 2:
        c.add(where + ".endpoints", f"a link has exactly two endpoints ['a:eth1', 'b:eth1'], got {eps!r}")
        return None
    a, b = (_endpoint(c, f"{where}.endpoints[{j}]", ep, nodes) for j, ep in enumerate(eps))
    if a is None or b is None:
        return None
    if a.node == b.node:
        c.add(where + ".endpoints", f"both ends are on node {a.node!r}")
    addrs = raw.get("addresses") or []
    if isinstance(addrs, dict):
        addrs = [addrs.get(a.node), addrs.get(b.node)]
    if not isinstance(addrs, list) or len(addrs) not in (0, 2):
        c.add(where + ".addresses", "give two addresses (one per endpoint, null for none) or a node -> address map")
        addrs = []
    for ep, value in zip((a, b), addrs):
        if value:
            ep.address = _cidr(c, f"{where}.addresses[{ep}]", value)
            if ep.address and nodes[ep.node].kind == "switch":
                c.add(f"{where}.addresses[{ep}]", f"{ep.node!r} is a switch: its ports carry no addresses")
    link = Link(kind, a, b)
    if raw.get("mtu") is not None:
        link.mtu = _int(c, where + ".mtu", raw["mtu"], 68, 65535)
    if kind == "vxlan":
        link.vni = _int(c, where + ".vni", raw.get("vni"), 1, 2 ** 24 - 1)
        under = raw.get("underlay")
        if not isinstance(under, list) or len(under) != 2:
            c.add(where + ".underlay", "a vxlan link needs underlay: [local address of a, local address of b]")
        else:
            link.underlay = (_ip(c, where + ".underlay[0]", under[0]), _ip(c, where + ".underlay[1]", under[1]))
        link.port = _int(c, where + ".port", raw.get("port", 4789), 1, 65535) or 4789
        for ep in (a, b):
            if nodes[ep.node].kind == "container":
                c.add(where, f"vxlan endpoints belong on host or netns nodes, not container {ep.node!r}")
    elif any(k in raw for k in ("vni", "underlay")):
        c.add(where, "'vni' and 'underlay' only apply to kind: vxlan")
    return link


def _check_containers(c: _Collector, nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        if node.kind != "container" or not node.host:
            continue
        host = nodes.get(node.host)
        if host is None:
            c.add(f"nodes.{node.name}.host", f"unknown node {node.host!r}")
            continue
        if host.kind != "host":
            c.add(f"nodes.{node.name}.host", f"{node.host!r} is a {host.kind}, containers run on kind: host nodes")
            continue
        for i, att in enumerate(node.attach):
            if att.network and att.network not in host.networks:
                c.add(f"nodes.{node.name}.attach[{i}].network",
                      f"unknown network {att.network!r} on host {node.host!r} "
                      f"(networks: {', '.join(host.networks) or 'none'})")
            elif att.ports and not any((pl.get("capabilities") or {}).get("portMappings")
                                       for pl in host.networks[att.network].conflist.get("plugins", [])):
                c.add(f"nodes.{node.name}.attach[{i}].ports",
                      f"network {att.network!r} has no plugin with capabilities: {{portMappings: true}} "
                      "(add a portmap plugin to its conflist)")
            if att.ip and att.network and att.network in host.networks:
                subnets = host.networks[att.network].subnets
                if subnets and not any(ipaddress.ip_address(att.ip) in s for s in subnets):
                    c.add(f"nodes.{node.name}.attach[{i}].ip",
                          f"{att.ip} is outside network {att.network!r} ({', '.join(map(str, subnets))})")


def _check_interfaces_and_addresses(c: _Collector, topo: Topology) -> None:
    seen_if: dict[tuple[str, str], str] = {}
    for node in topo.nodes.values():
        for i, att in enumerate(node.attach):
            key = (node.name, att.ifname)
            if key in seen_if:
                c.add(f"nodes.{node.name}.attach[{i}].ifname", f"interface {att.ifname!r} is used twice")
            seen_if[key] = f"nodes.{node.name}.attach[{i}]"
        if node.kind == "switch":
            seen_if[(node.name, SWITCH_BRIDGE)] = "the switch's own bridge"
    for i, link in enumerate(topo.links):
        for ep in (link.a, link.b):
            key = (ep.node, ep.ifname)
            if key in seen_if:
                c.add(f"links[{i}].endpoints", f"interface {ep} is already used by {seen_if[key]}")
            seen_if[key] = f"links[{i}]"
    seen_ip: dict[str, str] = {}
    for i, link in enumerate(topo.links):
        for ep in (link.a, link.b):
            if not ep.address:
                continue
            ip = str(ipaddress.ip_interface(ep.address).ip)
            if ip in seen_ip:
                c.add(f"links[{i}].addresses", f"duplicate address {ip} (also on {seen_ip[ip]})")
            seen_ip[ip] = str(ep)
    for node in topo.containers():
        for att in node.attach:
            if att.ip and att.ip in seen_ip:
                c.add(f"nodes.{node.name}.attach", f"duplicate address {att.ip} (also on {seen_ip[att.ip]})")
            if att.ip:
                seen_ip[att.ip] = f"{node.name}:{att.ifname}"
    static = topo.static_addresses()
    for i, link in enumerate(topo.links):
        if link.kind != "vxlan" or not all(link.underlay):
            continue
        for ep, local in zip((link.a, link.b), link.underlay):
            mine = [str(ipaddress.ip_interface(a).ip) for _, a in static[ep.node]]
            if local not in mine:
                c.add(f"links[{i}].underlay", f"{local} is not an address of node {ep.node!r} "
                                              f"(its addresses: {', '.join(mine) or 'none'})")


def _check_routes(c: _Collector, topo: Topology) -> None:
    for node in topo.nodes.values():
        for i, route in enumerate(node.routes):
            if route.via and route.dst != "default" and (":" in route.via) != (":" in route.dst):
                c.add(f"nodes.{node.name}.routes[{i}]", "dst and via are of different IP families")


def _topology_subnets(topo: Topology) -> list:
    return [s for n in topo.nodes.values() for net in n.networks.values() for s in net.subnets]


def _expand_pingall(c: _Collector, i: int, raw: dict, topo: Topology) -> list[Check]:
    """mininet's pingAll: an ICMP check for every ordered pair of the listed nodes (default: every node
    that has an address, i.e. all but switches and unlinked bare namespaces)."""
    where = f"checks[{i}]"
    raw = _mapping(c, where, raw, {"type", "nodes", "expect"})
    names = raw.get("nodes")
    if names is None:
        linked = {ep.node for link in topo.links for ep in (link.a, link.b) if ep.address}
        names = [n.name for n in topo.nodes.values()
                 if n.kind == "container" or (n.kind == "host" and n.networks) or n.name in linked]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        c.add(where + ".nodes", "must be a list of node names")
        return []
    out = []
    for src in names:
        for dst in names:
            if src != dst:
                out.append(_parse_check(c, i, {"type": "icmp", "from": src, "to": dst,
                                               "expect": raw.get("expect", "success")}, topo))
    return out


def _parse_check(c: _Collector, i: int, raw, topo: Topology) -> Check | None:
    where = f"checks[{i}]"
    raw = _mapping(c, where, raw, {"type", "from", "to", "expect", "port", "size", "target", "target_port",
                                   "protocol", "name"})
    kind = raw.get("type")
    if kind in LATER_CHECK_TYPES:
        c.add(where + ".type", f"check type {kind!r} is not supported yet (supported: {', '.join(CHECK_TYPES)})")
        return None
    if kind not in CHECK_TYPES:
        c.add(where + ".type", f"unknown check type {kind!r} (known: {', '.join(CHECK_TYPES)}, pingall)")
        return None
    expect = raw.get("expect", "success")
    if expect not in EXPECT:
        c.add(where + ".expect", f"must be success or fail, got {expect!r}")
        expect = "success"
    src = raw.get("from")
    if src not in topo.nodes:
        c.add(where + ".from", f"unknown node {src!r}")
    dst = raw.get("to")
    _check_target(c, where + ".to", dst, topo)
    check = Check(i, kind, str(src), str(dst), EXPECT[expect], name=str(raw.get("name") or ""))
    if kind in ("tcp", "udp", "portforward"):
        check.port = _int(c, where + ".port", raw.get("port"), 1, 65535)
    if kind == "mtu":
        check.size = _int(c, where + ".size", raw.get("size"), 68, 65535)
    if kind == "portforward":
        _portforward(c, where, raw, check, topo)
    return check


def _check_target(c: _Collector, where: str, dst, topo: Topology) -> None:
    """A check aims at a node, node:ifname, or an address inside the topology: never outside it."""
    if not isinstance(dst, str) or not dst:
        c.add(where, f"names a node, node:ifname or an address of a node in this topology, got {dst!r}")
        return
    try:
        ip = ipaddress.ip_address(dst)
    except ValueError:
        ip = None
    if ip is not None:
        static = [ipaddress.ip_interface(a).ip for addrs in topo.static_addresses().values() for _, a in addrs]
        if ip in static or any(ip in net for net in _topology_subnets(topo)):
            return
        c.add(where, f"{dst} is not an address of any node in this topology (checks never leave it)")
        return
    node, _, ifname = dst.partition(":")
    if node not in topo.nodes:
        c.add(where, f"unknown node {node!r}")
        return
    if ifname:
        ifs = {ep.ifname for link in topo.links for ep in (link.a, link.b) if ep.node == node}
        ifs |= {att.ifname for att in topo.nodes[node].attach}
        if ifname not in ifs:
            c.add(where, f"node {node!r} has no interface {ifname!r} (has: {', '.join(sorted(ifs)) or 'none'})")


def _portforward(c: _Collector, where: str, raw, check: Check, topo: Topology) -> None:
    target = raw.get("target")
    node = topo.nodes.get(target) if isinstance(target, str) else None
    if node is None or node.kind != "container":
        c.add(where + ".target", f"names the container behind the port mapping, got {target!r}")
        return
    check.target = target
    to_node = check.dst.partition(":")[0]
    if to_node in topo.nodes and to_node != node.host:
        c.add(where + ".to", f"a port forward is reached at the address of {target!r}'s host {node.host!r}, "
                             f"not at {to_node!r}")
    mappings = [m for att in node.attach for m in att.ports if m.host_port == check.port]
    if raw.get("protocol"):
        check.protocol = str(raw["protocol"]).lower()
        if check.protocol not in ("tcp", "udp"):
            c.add(where + ".protocol", f"must be tcp or udp, got {check.protocol!r}")
    elif mappings:
        check.protocol = mappings[0].protocol
    mappings = [m for m in mappings if m.protocol == check.protocol]
    if raw.get("target_port") is not None:
        check.target_port = _int(c, where + ".target_port", raw["target_port"], 1, 65535)
    elif mappings:
        check.target_port = mappings[0].container_port
    elif check.port:
        c.add(where + ".port", f"container {target!r} maps no host port {check.port}/{check.protocol}; "
                               "add the mapping or give target_port")
