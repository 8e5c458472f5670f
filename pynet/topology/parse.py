"""Topology files: YAML -> the dataclasses of model.py, with every error found before anything is created.

A topology is a set of nodes (network namespaces), veth/VXLAN links between them, CNI networks living on
simulated hosts, containers attached to those networks, static routes, and a ``checks:`` section.
``load(path)`` / ``parse(doc)`` raise ``TopologyError`` listing every problem, each naming its place in
the file (``links[2].endpoints``) and the bad value: a field that cannot be read is reported here, where
it is read; the rules across fields are in validate.py. The format (examples/topologies/ has complete files)::

    name: web                      # a-z0-9-, <= 24 chars; namespaces are pynet.<name>.<run>.<node>
    nodes:
      h1:                          # kind: host | netns (default) | container | switch
        kind: host                 # a simulated machine: forwarding on, its own CNI networks and rules
        networks:
          pods: {cniVersion: 1.0.0, plugins: [...]}   # any conflist, inline or {file: x.conflist};
                                   # host-local's dataDir is always set to the topology's state dir
          gen: {file: "${data}/h1/net.d/x.conflist", written_by: agent}   # a conflist a service writes,
                                   # waited for (timeout: 60) and read at up
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
    services:                      # processes started in a node after the links, in this order (services.py)
      agent:
        node: h1
        command: pynet node run --config-dir ${data}/h1/net.d ...   # ${data}: the topology's data dir
        env: {KEY: value}
        after: [store]             # services above this one that must be ready before it starts
        ready: {file: "${data}/h1/net.d/status.json", json: {ready: true}, timeout: 60}  # or tcp: IP:PORT
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
import difflib
import ipaddress
import json
import os
import re
import shlex

from pynet.runner.ports import PortMapping, PortSpecError, parse_publish

from . import validate
from .model import (DATA_DIR_TOKEN, LINK_KINDS, NODE_KINDS, Attachment, Check, Endpoint, Link, Network, Node,
                    Readiness, RouteSpec, Service, Topology, TopologyError)
from .state import valid_name
from .validate import Problems

CHECK_TYPES = ("icmp", "tcp", "udp", "portforward", "mtu")
LATER_CHECK_TYPES = ("dns",)  # named in the issue, not implemented yet: a clear error, not "unknown"
EXPECT = {"success": True, "reach": True, "pass": True, True: True,
          "fail": False, "block": False, "blocked": False, False: False}
NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
# The topology engine's own port string; pynet/runner/ports.py will be the one `-p` grammar for all.


def load(path: str) -> Topology:
    import yaml

    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as exc:
        raise TopologyError(f"cannot read topology file: {exc.strerror}", path) from None
    except UnicodeDecodeError:
        raise TopologyError("not valid YAML: the file is not UTF-8 text", path) from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"not valid YAML: {exc}", path) from None
    return parse(doc, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def parse(doc, source: str = "", base_dir: str = ".") -> Topology:
    p = Problems()
    if not isinstance(doc, dict):
        raise TopologyError("the file must hold a mapping with 'name', 'nodes', 'links' and 'checks'", source)
    _mapping(p, "top level", doc, {"name", "nodes", "links", "checks", "description", "services"})
    name = doc.get("name")
    if not valid_name(name):
        p.add("name", f"must be 1-24 characters of a-z, 0-9 and '-', starting with a letter or digit; got {name!r}")
        name = "invalid"
    raw_nodes = doc.get("nodes")
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        p.add("nodes", "must be a non-empty mapping of node name -> node")
        raw_nodes = {}

    nodes = {str(node_name): _node(p, str(node_name), raw or {}, base_dir) for node_name, raw in raw_nodes.items()}
    links = [_link(p, i, raw, nodes) for i, raw in enumerate(_list(p, "links", doc.get("links")))]
    topo = Topology(name, nodes, [link for link in links if link is not None], [], source)
    raw_services = doc.get("services")
    if raw_services is not None and not isinstance(raw_services, dict):
        p.add("services", f"must be a mapping of service name -> service, got {type(raw_services).__name__}")
        raw_services = {}
    for service_name, raw in (raw_services or {}).items():
        topo.services[str(service_name)] = _service(p, str(service_name), raw, topo)
    validate.nodes_and_links(p, topo)
    for i, raw in enumerate(_list(p, "checks", doc.get("checks"))):
        where = f"checks[{i}]"
        expanded = _pingall(p, where, raw, topo) if isinstance(raw, dict) and raw.get("type") == "pingall" \
            else [_check(p, where, raw, topo)]
        for check in expanded:
            if check is None:
                continue
            validate.check(p, where, check, topo)
            check.index = len(topo.checks)     # numbered as shown in the matrix (after pingall expansion)
            topo.checks.append(check)
    p.raise_if_any(source)
    return topo


# -- field readers: each reports a value it cannot use and returns a neutral one -----------------

def _unknown(what: str, value, valid) -> str:
    close = difflib.get_close_matches(value, valid, n=1) if isinstance(value, str) else []
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {value!r} (valid: {', '.join(valid)}){hint}"


def _int(p: Problems, where: str, value, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        p.add(where, f"must be an integer from {lo} to {hi}, got {value!r}")
        return None
    return value


def _cidr(p: Problems, where: str, value) -> str:
    """An interface address with its prefix ('10.0.0.1/24')."""
    if not isinstance(value, str) or "/" not in value:
        p.add(where, f"bad CIDR {value!r}: an address with a prefix length is needed, e.g. 10.0.0.1/24")
        return ""
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        p.add(where, f"bad CIDR {value!r}")
        return ""
    if iface.ip == iface.network.network_address and iface.network.prefixlen < (31 if iface.version == 4 else 127):
        p.add(where, f"bad CIDR {value!r}: that is the network address, not a host address")
        return ""
    return str(iface)


def _subnet(p: Problems, where: str, value):
    """A network IPAM hands addresses out of; host bits are allowed, as the plugins allow them."""
    try:
        if not isinstance(value, str) or "/" not in value:
            raise ValueError
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        p.add(where, f"bad subnet {value!r}: write a network with its prefix length, e.g. 10.22.1.0/24")
        return None


def _ip(p: Problems, where: str, value) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except (TypeError, ValueError):
        p.add(where, f"bad IP address {value!r}")
        return ""


def _mapping(p: Problems, where: str, value, allowed: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        p.add(where, f"must be a mapping, got {type(value).__name__}")
        return {}
    for key in value:
        if key not in allowed:
            p.add(where, f"unknown key {key!r} (known: {', '.join(sorted(allowed))})")
    return value


def _list(p: Problems, where: str, value) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        p.add(where, f"must be a list, got {type(value).__name__}")
        return []
    return value


def _name(p: Problems, where: str, value, what: str) -> str:
    """A required reference to something by name or address; whether it exists is validate.py's job."""
    if isinstance(value, str) and value:
        return value
    p.add(where, f"{what}, got {value!r}")
    return ""


# -- nodes ------------------------------------------------------------------------------------------

def _node(p: Problems, name: str, raw, base_dir: str) -> Node:
    where = f"nodes.{name}"
    if not NODE_RE.match(name):
        p.add(where, "node names are 1-32 characters of letters, digits, '_' and '-'")
    raw = _mapping(p, where, raw, {"kind", "host", "networks", "attach", "routes", "sysctls", "nftables",
                                   "forwarding"})
    kind = raw.get("kind", "netns")
    # A kind the file misspells is reported once; the node's other fields are still read, but nothing
    # is judged against a kind it does not have (no "only containers attach ..." after "contianer").
    known = isinstance(kind, str) and kind in NODE_KINDS
    if not known:
        p.add(where + ".kind", _unknown("node kind", kind, NODE_KINDS))
        kind = str(kind)
    node = Node(name, kind, forwarding=bool(raw.get("forwarding", kind in ("host", "switch"))))
    if kind == "container" or (not known and raw.get("attach")):
        if known:
            node.host = _name(p, where + ".host", raw.get("host"),
                              "a container needs the name of the host node it runs on")
        for i, att in enumerate(_list(p, where + ".attach", raw.get("attach"))):
            node.attach.append(_attachment(p, f"{where}.attach[{i}]", att, i))
    elif raw.get("attach"):
        p.add(where + ".attach", f"only containers attach to CNI networks; {name!r} is a {kind}")
    if raw.get("host") and kind != "container" and known:
        p.add(where + ".host", f"only containers run on a host; {name!r} is a {kind}")
    nets = raw.get("networks") or {}
    if nets and kind != "host" and known:
        p.add(where + ".networks", f"CNI networks live on simulated hosts (kind: host); {name!r} is a {kind}")
    elif not isinstance(nets, dict):
        p.add(where + ".networks", "must be a mapping of network name -> conflist")
    else:
        for net_name, conf in nets.items():
            net_where = f"{where}.networks.{net_name}"
            if isinstance(conf, dict) and "written_by" in conf:
                node.networks[str(net_name)] = _generated_network(p, net_where, conf, str(net_name), name)
                continue
            conflist = _conflist(p, net_where, conf, base_dir, str(net_name))
            node.networks[str(net_name)] = Network(str(net_name), name, conflist,
                                                   _ipam_subnets(p, net_where, conflist))
    for i, route in enumerate(_list(p, where + ".routes", raw.get("routes"))):
        node.routes.append(_route(p, f"{where}.routes[{i}]", route))
    sysctls = raw.get("sysctls") or {}
    if not isinstance(sysctls, dict):
        p.add(where + ".sysctls", "must be a mapping of key -> value")
    else:
        for key, value in sysctls.items():
            if not str(key).startswith("net."):
                p.add(f"{where}.sysctls.{key}", "only net.* sysctls are per network namespace")
            node.sysctls[str(key)] = str(int(value) if isinstance(value, bool) else value)
    nft = raw.get("nftables") or ""
    if nft and kind in ("container",) and known:
        p.add(where + ".nftables", "nftables rules belong on host, netns or switch nodes")
    node.nftables = str(nft)
    return node


def _conflist(p: Problems, where: str, value, base_dir: str, name: str) -> dict:
    if isinstance(value, str):
        value = {"file": value}
    if not isinstance(value, dict):
        p.add(where, "must be a conflist mapping or {file: path}")
        return {}
    if "file" in value:
        if not isinstance(value["file"], str):
            p.add(where + ".file", f"must be a path, got {value['file']!r}")
            return {}
        path = value["file"] if os.path.isabs(value["file"]) else os.path.join(base_dir, value["file"])
        try:
            with open(path) as f:
                value = json.load(f)
        except OSError as exc:
            p.add(where + ".file", f"cannot read {path!r}: {exc.strerror}")
            return {}
        except ValueError as exc:
            p.add(where + ".file", f"{path!r} is not valid JSON: {exc}")
            return {}
        if not isinstance(value, dict):
            p.add(where + ".file", f"{path!r} must hold a JSON object")
            return {}
    conf = copy.deepcopy(value)
    if "plugins" not in conf and "type" in conf:       # a single-plugin .conf is accepted as a one-entry list
        conf = {k: v for k, v in conf.items() if k in ("cniVersion", "name")} | {
            "plugins": [{k: v for k, v in conf.items() if k not in ("cniVersion", "name")}]}
    plugins = conf.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        p.add(where, "a conflist needs a non-empty 'plugins' list")
        return {}
    readable = True
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not isinstance(plugin.get("type"), str):
            p.add(f"{where}.plugins[{i}]", "every plugin needs a 'type'")
            readable = False
            continue
        for key in ("ipam", "capabilities"):
            if plugin.get(key) is not None and not isinstance(plugin[key], dict):
                p.add(f"{where}.plugins[{i}].{key}", f"must be a mapping, got {type(plugin[key]).__name__}")
                readable = False
    if not readable:
        return {}
    conf.setdefault("cniVersion", "1.0.0")
    conf["name"] = conf.get("name") or name
    return conf


def _ipam_subnets(p: Problems, where: str, conflist: dict) -> list:
    """Subnets an IPAM section hands out from (host-local ``ranges``/``subnet``, static ``addresses``)."""
    found = []
    for i, plugin in enumerate(conflist.get("plugins", [])):
        ipam = plugin.get("ipam") if isinstance(plugin, dict) else None
        if not isinstance(ipam, dict):
            continue
        at = f"{where}.plugins[{i}].ipam"
        if ipam.get("subnet"):
            found.append((f"{at}.subnet", ipam["subnet"]))
        for r, rangeset in enumerate(_list(p, f"{at}.ranges", ipam.get("ranges"))):
            for j, rng in enumerate(_list(p, f"{at}.ranges[{r}]", rangeset)):
                if isinstance(rng, dict) and rng.get("subnet"):
                    found.append((f"{at}.ranges[{r}][{j}].subnet", rng["subnet"]))
        for j, addr in enumerate(_list(p, f"{at}.addresses", ipam.get("addresses"))):
            if isinstance(addr, dict) and addr.get("address"):
                found.append((f"{at}.addresses[{j}].address", addr["address"]))
    subnets = [_subnet(p, place, value) for place, value in found]
    return [s for s in subnets if s is not None]


def _attachment(p: Problems, where: str, raw, position: int) -> Attachment:
    if isinstance(raw, str):
        raw = {"network": raw}
    raw = _mapping(p, where, raw, {"network", "ifname", "ip", "ports"})
    att = Attachment(str(raw.get("network") or ""), str(raw.get("ifname") or f"eth{position}"))
    if not att.network:
        p.add(where + ".network", "names the CNI network (on the container's host) to attach to")
    if raw.get("ip"):
        att.ip = _ip(p, where + ".ip", raw["ip"])
    for i, port in enumerate(_list(p, where + ".ports", raw.get("ports"))):
        mapping = _port(p, f"{where}.ports[{i}]", port)
        if mapping is not None:
            att.ports.append(mapping)
    return att


def _port(p: Problems, where: str, port) -> PortMapping | None:
    """A port mapping: a ``-p`` string ("8080:80/tcp") or the CNI portMappings entry {hostPort, containerPort, ...}."""
    if isinstance(port, str):
        try:
            mapping = parse_publish(port, flag=where)   # the one -p grammar (pynet/runner/ports.py)
        except PortSpecError as exc:
            p.add(where, str(exc).removeprefix(f"invalid {where} "))
            return None
        if not mapping.host_port:   # `-p 80` picks a free port at run time: a topology's checks need it fixed
            p.add(where, f"{port!r} has no host port; write HOST:CONTAINER[/tcp|udp]")
            return None
        return mapping
    port = _mapping(p, where, port, {"hostPort", "containerPort", "protocol", "hostIP"})
    host_port = _int(p, where + ".hostPort", port.get("hostPort"), 1, 65535)
    container_port = _int(p, where + ".containerPort", port.get("containerPort"), 1, 65535)
    proto = str(port.get("protocol", "tcp")).lower()
    if proto not in ("tcp", "udp", "sctp"):
        p.add(where + ".protocol", f"must be tcp, udp or sctp, got {proto!r}")
    host_ip = _ip(p, where + ".hostIP", port["hostIP"]) if port.get("hostIP") else ""
    if host_port and container_port:
        return PortMapping(host_port, container_port, proto, host_ip)
    return None


def _route(p: Problems, where: str, raw) -> RouteSpec:
    raw = _mapping(p, where, raw, {"dst", "via", "dev"})
    dst = raw.get("dst")
    if dst != "default":
        try:
            ipaddress.ip_network(dst, strict=False)
            if "/" not in str(dst):
                raise ValueError
        except (TypeError, ValueError):
            p.add(where + ".dst", f"bad CIDR {dst!r} (or write 'default')")
            dst = "default"
    via = _ip(p, where + ".via", raw["via"]) if raw.get("via") else ""
    dev = str(raw.get("dev") or "")
    if not via and not dev:
        p.add(where, "a route needs 'via' (a gateway) or 'dev'")
    return RouteSpec(str(dst), via, dev)


# -- services and the networks they generate ---------------------------------------------------------

def _generated_network(p: Problems, where: str, raw: dict, name: str, host: str) -> Network:
    """``{file: PATH, written_by: SERVICE[, timeout: S]}``: a conflist that exists only once the service runs."""
    raw = _mapping(p, where, raw, {"file", "written_by", "timeout"})
    net = Network(name, host, {}, written_by=_name(p, where + ".written_by", raw.get("written_by"),
                                                  "names the service (under services:) that writes the conflist"))
    net.file = _service_path(p, where + ".file", raw.get("file"), "is the path of the conflist the service writes")
    net.timeout = _seconds(p, where + ".timeout", raw.get("timeout", 60))
    return net


def read_generated(net: Network, path: str) -> None:
    """Fills in a generated network from the file its service wrote, with the checks a written one gets."""
    p = Problems()
    where = f"nodes.{net.host}.networks.{net.name}"
    net.conflist = _conflist(p, where, {"file": path}, "/", net.name)
    net.subnets = _ipam_subnets(p, where, net.conflist)
    p.raise_if_any(f"the conflist written by service {net.written_by!r}")


def _service_path(p: Problems, where: str, value, what: str) -> str:
    """A file a service writes (_name's checks): an absolute path, or one under the data dir."""
    path = _name(p, where, value, what)
    if path and not os.path.isabs(path) and not path.startswith(DATA_DIR_TOKEN):
        p.add(where, f"must be an absolute path or start with {DATA_DIR_TOKEN}, got {path!r}")
    return path


def _seconds(p: Problems, where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 600:
        p.add(where, f"must be a number of seconds from 1 to 600, got {value!r}")
        return 60.0
    return float(value)


def _service(p: Problems, name: str, raw, topo: Topology) -> Service:
    """A process to keep running in a node (etcd, an agent, a server). ``after`` may name only services
    defined above it, so the file's order is the start order and no cycle can be written."""
    where = f"services.{name}"
    if not NODE_RE.match(name):
        p.add(where, "service names are 1-32 characters of letters, digits, '_' and '-'")
    if not isinstance(raw, dict):
        p.add(where, f"must be a mapping with 'node' and 'command', got {type(raw).__name__}")
        raw = {}
    raw = _mapping(p, where, raw, {"node", "command", "env", "ready", "after"})
    node = _name(p, where + ".node", raw.get("node"), "names the node whose netns the service runs in")
    if node and node not in topo.nodes:
        p.add(where + ".node", f"unknown node {node!r} (nodes: {', '.join(topo.nodes) or 'none'})")
    command = raw.get("command")
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as exc:   # an unclosed quote
            p.add(where + ".command", f"cannot split {command!r} into arguments: {exc}")
            command = ["?"]     # reported; not "must be a non-empty list" as well
    if not isinstance(command, list) or not command or not all(isinstance(a, (str, int, float)) for a in command):
        p.add(where + ".command", f"must be a non-empty list of arguments (or one command line), got {command!r}")
        command = []
    service = Service(name, node, [str(a) for a in command])
    env = raw.get("env") or {}
    if not isinstance(env, dict):
        p.add(where + ".env", f"must be a mapping of variable -> value, got {type(env).__name__}")
    else:
        service.env = {str(k): str(v) for k, v in env.items()}
    for i, other in enumerate(_list(p, where + ".after", raw.get("after"))):
        if not isinstance(other, str) or other not in topo.services:
            p.add(f"{where}.after[{i}]", f"{other!r} is not a service defined above {name!r} "
                                         f"(defined above: {', '.join(topo.services) or 'none'})")
        else:
            service.after.append(other)
    if raw.get("ready") is not None:
        service.ready = _readiness(p, where + ".ready", raw["ready"])
    return service


def _readiness(p: Problems, where: str, raw) -> Readiness | None:
    raw = _mapping(p, where, raw, {"tcp", "file", "json", "timeout"})
    if not raw:
        return None
    ready = Readiness(timeout=_seconds(p, where + ".timeout", raw.get("timeout", 60)))
    if ("tcp" in raw) == ("file" in raw):
        p.add(where, "give one condition: tcp: ADDRESS:PORT (a port accepting in the service's node) "
                     "or file: PATH (a file appearing)")
        return ready
    if "tcp" in raw:
        host, _, port = str(raw["tcp"]).rpartition(":")
        ip = _ip(p, where + ".tcp", host.strip("[]")) if host else ""
        number = _int(p, where + ".tcp", int(port) if port.isdigit() else port, 1, 65535)
        if not host:
            p.add(where + ".tcp", f"must be ADDRESS:PORT, got {raw['tcp']!r}")
        if ip and number:
            ready.tcp = (ip, number)
        if "json" in raw:
            p.add(where + ".json", "only applies to file:")
        return ready
    ready.file = _service_path(p, where + ".file", raw["file"], "is the path of a file the service writes when ready")
    if raw.get("json") is not None:
        ready.json = _mapping(p, where + ".json", raw["json"], set(raw["json"]) if isinstance(raw["json"], dict)
                              else set())
    return ready


# -- links ------------------------------------------------------------------------------------------

def _endpoint(p: Problems, where: str, value, nodes: dict[str, Node]) -> Endpoint | None:
    if not isinstance(value, str) or value.count(":") != 1:
        p.add(where, f"an endpoint is 'node:ifname', got {value!r}")
        return None
    node, ifname = value.split(":")
    if node not in nodes:
        p.add(where, f"unknown node {node!r} (nodes: {', '.join(nodes) or 'none'})")
        return None
    if not IFNAME_RE.match(ifname):
        p.add(where, f"bad interface name {ifname!r} (1-15 characters)")
        return None
    return Endpoint(node, ifname)


def _link(p: Problems, i: int, raw, nodes: dict[str, Node]) -> Link | None:
    where = f"links[{i}]"
    raw = _mapping(p, where, raw, {"kind", "endpoints", "addresses", "mtu", "vni", "underlay", "port"})
    kind = raw.get("kind", "veth")
    if not isinstance(kind, str) or kind not in LINK_KINDS:
        # Still read as a link: its endpoints and addresses exist for the checks that name them.
        p.add(where + ".kind", _unknown("link kind", kind, LINK_KINDS))
        kind = str(kind)
    eps = raw.get("endpoints")
    if not isinstance(eps, list) or len(eps) != 2:
        p.add(where + ".endpoints", f"a link has exactly two endpoints ['a:eth1', 'b:eth1'], got {eps!r}")
        return None
    a, b = (_endpoint(p, f"{where}.endpoints[{j}]", ep, nodes) for j, ep in enumerate(eps))
    if a is None or b is None:
        return None
    if a.node == b.node:
        p.add(where + ".endpoints", f"both ends are on node {a.node!r}")
    addrs = raw.get("addresses") or []
    if isinstance(addrs, dict):
        addrs = [addrs.get(a.node), addrs.get(b.node)]
    if not isinstance(addrs, list) or len(addrs) not in (0, 2):
        p.add(where + ".addresses", "give two addresses (one per endpoint, null for none) or a node -> address map")
        addrs = []
    for ep, value in zip((a, b), addrs):
        if value:
            ep.address = _cidr(p, f"{where}.addresses[{ep}]", value)
            if ep.address and nodes[ep.node].kind == "switch":
                p.add(f"{where}.addresses[{ep}]", f"{ep.node!r} is a switch: its ports carry no addresses")
    link = Link(kind, a, b)
    if raw.get("mtu") is not None:
        link.mtu = _int(p, where + ".mtu", raw["mtu"], 68, 65535)
    if kind == "vxlan":
        link.vni = _int(p, where + ".vni", raw.get("vni"), 1, 2 ** 24 - 1)
        under = raw.get("underlay")
        if not isinstance(under, list) or len(under) != 2:
            p.add(where + ".underlay", "a vxlan link needs underlay: [local address of a, local address of b]")
        else:
            link.underlay = (_ip(p, where + ".underlay[0]", under[0]), _ip(p, where + ".underlay[1]", under[1]))
        link.port = _int(p, where + ".port", raw.get("port", 4789), 1, 65535) or 4789
        for ep in (a, b):
            if nodes[ep.node].kind == "container":
                p.add(where, f"vxlan endpoints belong on host or netns nodes, not container {ep.node!r}")
    elif any(k in raw for k in ("vni", "underlay")) and kind in LINK_KINDS:
        p.add(where, "'vni' and 'underlay' only apply to kind: vxlan")
    return link


# -- checks -----------------------------------------------------------------------------------------

def _pingall(p: Problems, where: str, raw: dict, topo: Topology) -> list[Check | None]:
    """mininet's pingAll: an ICMP check for every ordered pair of the listed nodes (default: every node
    that has an address, i.e. all but switches and unlinked bare namespaces)."""
    raw = _mapping(p, where, raw, {"type", "nodes", "expect"})
    names = raw.get("nodes")
    if names is None:
        linked = {ep.node for link in topo.links for ep in (link.a, link.b) if ep.address}
        names = [n.name for n in topo.nodes.values()
                 if n.kind == "container" or (n.kind == "host" and n.networks) or n.name in linked]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        p.add(where + ".nodes", "must be a list of node names")
        return []
    expect = raw.get("expect", "success")
    return [_check(p, where, {"type": "icmp", "from": src, "to": dst, "expect": expect}, topo)
            for src in names for dst in names if src != dst]


def _check(p: Problems, where: str, raw, topo: Topology) -> Check | None:
    raw = _mapping(p, where, raw, {"type", "from", "to", "expect", "port", "size", "target", "target_port",
                                   "protocol", "name"})
    kind = raw.get("type")
    if kind in LATER_CHECK_TYPES:
        p.add(where + ".type", f"check type {kind!r} is not supported yet (supported: {', '.join(CHECK_TYPES)})")
        return None
    if kind not in CHECK_TYPES:
        p.add(where + ".type", f"unknown check type {kind!r} (known: {', '.join(CHECK_TYPES)}, pingall)")
        return None
    expect = raw.get("expect", "success")
    if not isinstance(expect, (str, int)) or expect not in EXPECT:
        p.add(where + ".expect", f"must be success or fail, got {expect!r}")
        expect = "success"
    src = _name(p, where + ".from", raw.get("from"), "names the node the check starts from")
    dst = _name(p, where + ".to", raw.get("to"), "names a node, node:ifname or an address of a node in this topology")
    check = Check(0, kind, src, dst, EXPECT[expect], name=str(raw.get("name") or ""))
    if kind in ("tcp", "udp", "portforward"):
        check.port = _int(p, where + ".port", raw.get("port"), 1, 65535)
    if kind == "mtu":
        check.size = _int(p, where + ".size", raw.get("size"), 68, 65535)
    if kind == "portforward":
        _portforward(p, where, raw, check, topo)
    return check


def _portforward(p: Problems, where: str, raw, check: Check, topo: Topology) -> None:
    """The container behind the mapping, and what the file leaves out taken from its mapping."""
    target = raw.get("target")
    check.target = "" if target is None else str(target)
    node = topo.nodes.get(check.target)
    mappings = [m for att in node.attach for m in att.ports if m.host_port == check.port] if node else []
    if raw.get("protocol"):
        check.protocol = str(raw["protocol"]).lower()
        if check.protocol not in ("tcp", "udp"):
            p.add(where + ".protocol", f"must be tcp or udp, got {check.protocol!r}")
    elif mappings:
        check.protocol = mappings[0].protocol
    mappings = [m for m in mappings if m.protocol == check.protocol]
    if raw.get("target_port") is not None:
        check.target_port = _int(p, where + ".target_port", raw["target_port"], 1, 65535)
    elif mappings:
        check.target_port = mappings[0].container_port
