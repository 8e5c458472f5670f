"""A topology as plain data: nodes, links, CNI networks, attachments, routes and checks.

``parse.py`` builds these from a YAML document and ``validate.py`` vouches for them, so the code that
deploys, checks and draws a topology can trust every value it finds here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pynet.runner.ports import PortMapping  # noqa: F401  (a topology publishes ports in the one -p grammar)

# A switch node is a netns holding this bridge; link endpoints on the switch become its ports.
SWITCH_BRIDGE = "br0"
NODE_KINDS = ("host", "netns", "container", "switch")
LINK_KINDS = ("veth", "vxlan")


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
    """A CNI network on a simulated host: its conflist as the user wrote it (dataDir is set at deploy), or
    the file a service of the topology writes (``written_by``), read at ``up`` once it appears."""
    name: str
    host: str
    conflist: dict
    subnets: list = field(default_factory=list)  # ip_network objects from the IPAM config, for validation
    written_by: str = ""      # a service name: the conflist is generated, ``file`` waited for at up
    file: str = ""            # the generated conflist's path (may hold ${data})
    timeout: float = 60.0

    @property
    def generated(self) -> bool:
        return bool(self.written_by)


# Expanded in a service's command, env and readiness file and in a generated network's file: the
# topology's own data dir (under its state dir), removed by ``down``.
DATA_DIR_TOKEN = "${data}"


@dataclass
class Readiness:
    """When a service counts as up: a TCP port accepting inside its node, or a file present (and, with
    ``json``, holding those top-level values)."""
    tcp: tuple[str, int] | None = None
    file: str = ""
    json: dict = field(default_factory=dict)
    timeout: float = 60.0

    def describe(self) -> str:
        if self.tcp:
            return f"tcp {self.tcp[0]}:{self.tcp[1]}"
        return f"file {self.file}" + (f" holding {self.json}" if self.json else "")


@dataclass
class Service:
    """A long-running process the topology starts in a node's netns after its links, before the CNI
    attachments; never restarted; ended by PID on ``down``."""
    name: str
    node: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Readiness | None = None
    after: list[str] = field(default_factory=list)   # services that must be ready before this one starts


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
    services: dict[str, Service] = field(default_factory=dict)

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
