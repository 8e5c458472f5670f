"""Pictures of a topology: a terminal text view, Graphviz DOT (rendered to SVG/PNG by the ``dot``
binary from Debian's graphviz package), and the check matrix."""

from __future__ import annotations

import os
import shutil
import subprocess

from . import services
from .model import Topology


def _subnets(net) -> str:
    return ", ".join(map(str, net.subnets)) or "?"


def _bridge_of(net) -> str:
    for plugin in net.conflist.get("plugins", []):
        if plugin.get("type") == "bridge":
            return plugin.get("bridge") or "cni0"
    return ""


def _interfaces(topo: Topology, dep, node: str) -> list[tuple[str, str, str]]:
    """(ifname, addresses, note) rows for one node: declared interfaces, plus what the kernel holds."""
    notes: dict[str, str] = {}
    declared: dict[str, list[str]] = {}
    for link in topo.links:
        for ep, peer in ((link.a, link.b), (link.b, link.a)):
            if ep.node == node:
                notes[ep.ifname] = f"{'vxlan ' + str(link.vni) if link.kind == 'vxlan' else 'veth'} to {peer}"
                declared[ep.ifname] = [ep.address] if ep.address else []
    n = topo.nodes[node]
    for att in n.attach:
        net = topo.network(n.host, att.network) if n.host in topo.nodes and att.network in topo.nodes[n.host].networks else None
        ports = ", ".join(f"{p.host_port}->{p.container_port}/{p.protocol}" for p in att.ports)
        notes[att.ifname] = f"network {att.network}" + (f"; ports {ports}" if ports else "")
        declared[att.ifname] = [att.ip] if att.ip else [f"(from {_subnets(net)})" if net else "(dynamic)"]
    for net in n.networks.values():
        bridge = _bridge_of(net)
        if bridge:
            notes.setdefault(bridge, f"bridge of network {net.name}")
            declared.setdefault(bridge, [])
    if dep is not None:
        found: dict[str, list[str]] = {}
        for ifname, addr in dep.addresses(node):
            found.setdefault(ifname, []).append(addr)
        for ifname, addrs in found.items():
            declared[ifname] = addrs
    return [(ifname, " ".join(addrs) or "-", notes.get(ifname, "")) for ifname, addrs in declared.items()]


def text(topo: Topology, dep=None) -> str:
    lines = []
    status = f"up, run {dep.run}" if dep is not None else "not up"
    missing = dep.missing_nodes() if dep is not None else []
    if missing:
        status += f"; {len(missing)} of {len(topo.nodes)} namespaces gone, `down` removes the rest"
    lines.append(f"topology {topo.name} ({status})")
    width = max(len(n) for n in topo.nodes)
    lines.append("nodes")
    for node in topo.nodes.values():
        what = node.kind + (f" on {node.host}" if node.host else "")
        if node.forwarding and node.kind != "host":
            what += ", forwarding"
        ns = f"  netns {dep.state['namespaces'][node.name]}" if dep is not None else ""
        if dep is not None and node.name in missing:
            ns += " (GONE: deleted outside pynet?)"
        lines.append(f"  {node.name:<{width}}  {what}{ns}")
        for ifname, addrs, note in _interfaces(topo, dep, node.name):
            lines.append(f"  {'':<{width}}    {ifname:<10} {addrs:<24} {note}".rstrip())
        for net in node.networks.values():
            chain = " -> ".join(p["type"] for p in net.conflist.get("plugins", [])) \
                or f"written by service {net.written_by}"
            lines.append(f"  {'':<{width}}    network {net.name}: {_subnets(net)} [{chain}]")
        for service in (s for s in topo.services.values() if s.node == node.name):
            record = services.record(dep.state, service.name) if dep is not None else None
            pid = record["pid"] if record else None
            ready = f", ready on {service.ready.describe()}" if service.ready else ""
            lines.append(f"  {'':<{width}}    service {service.name}: {os.path.basename(service.command[0])}"
                         f"{ready}" + (f" (PID {pid})" if pid else ""))
        for route in node.routes:
            via = f" via {route.via}" if route.via else ""
            dev = f" dev {route.dev}" if route.dev else ""
            lines.append(f"  {'':<{width}}    route {route.dst}{via}{dev}")
        if node.nftables:
            lines.append(f"  {'':<{width}}    nftables: {len(node.nftables.strip().splitlines())} lines")
    if topo.links:
        lines.append("links")
        for link in topo.links:
            kind = f"vxlan {link.vni} over {link.underlay[0]}<->{link.underlay[1]}" if link.kind == "vxlan" else "veth"
            mtu = f" mtu {link.mtu}" if link.mtu else ""
            a = f"{link.a} {link.a.address}".strip()
            b = f"{link.b} {link.b.address}".strip()
            lines.append(f"  {a}  <-{kind}->  {b}{mtu}")
    if topo.checks:
        lines.append(f"checks: {len(topo.checks)}")
    return "\n".join(lines) + "\n"


def _q(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(topo: Topology, dep=None) -> str:
    shapes = {"host": "box3d", "netns": "box", "container": "component", "switch": "hexagon"}
    out = [f"graph {_q(topo.name)} {{",
           f'  graph [rankdir=LR, fontname="Helvetica", label={_q("topology " + topo.name)}, labelloc=t];',
           '  node [fontname="Helvetica", fontsize=10, style="rounded,filled", fillcolor="#f4f4f4"];',
           '  edge [fontname="Helvetica", fontsize=9];']
    addr = {}
    if dep is not None:
        for node in topo.nodes:
            for ifname, a in dep.addresses(node):
                addr.setdefault((node, ifname), []).append(a)

    def if_label(node, ifname, declared):
        values = addr.get((node, ifname)) or ([declared] if declared else [])
        return "\\n".join([ifname] + values)

    def node_stmt(node, indent="  "):
        shape = shapes[node.kind]
        out.append(f"{indent}{_q(node.name)} [label={_q(node.name + chr(10) + node.kind)}, shape={shape}];")

    placed = set()
    for host in (n for n in topo.nodes.values() if n.kind == "host"):
        out.append(f"  subgraph {_q('cluster_' + host.name)} {{")
        out.append(f'    label={_q("host " + host.name)}; style="dashed"; color="#888888";')
        node_stmt(host, "    ")
        placed.add(host.name)
        for net in host.networks.values():
            nid = f"{host.name}/{net.name}"
            label = f"{net.name}\n{_bridge_of(net) or 'cni'}\n{_subnets(net)}"
            out.append(f"    {_q(nid)} [label={_q(label)}, shape=ellipse, fillcolor=\"#e3f0ff\"];")
            out.append(f"    {_q(host.name)} -- {_q(nid)} [style=dotted];")
        for ctr in topo.containers():
            if ctr.host != host.name:
                continue
            node_stmt(ctr, "    ")
            placed.add(ctr.name)
            for att in ctr.attach:
                if att.network in host.networks:
                    ports = "\\n".join(f"{p.host_port}->{p.container_port}/{p.protocol}" for p in att.ports)
                    label = if_label(ctr.name, att.ifname, att.ip) + (f"\\n{ports}" if ports else "")
                    out.append(f"    {_q(ctr.name)} -- {_q(host.name + '/' + att.network)} "
                               f"[label=\"{label}\"];")
        out.append("  }")
    for node in topo.nodes.values():
        if node.name not in placed:
            node_stmt(node)
    for link in topo.links:
        style = ', style=dashed, color="#1f6fd1"' if link.kind == "vxlan" else ""
        middle = f"vxlan {link.vni}" if link.kind == "vxlan" else ""
        if link.mtu:
            middle += f" mtu {link.mtu}"
        ends = [f"{ep.node}:{if_label(ep.node, ep.ifname, ep.address)}".replace("\\n", " ") for ep in (link.a, link.b)]
        label = "\\n".join([ends[0]] + ([middle.strip()] if middle.strip() else []) + [ends[1]])
        out.append(f"  {_q(link.a.node)} -- {_q(link.b.node)} [label=\"{label}\", minlen=2{style}];")
    out.append("}")
    return "\n".join(out) + "\n"


def render(dot_source: str, fmt: str) -> bytes:
    """DOT -> SVG or PNG through Graphviz's ``dot`` (apt-get install graphviz)."""
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError("Graphviz 'dot' is not installed (apt-get install -y graphviz); "
                           "use --format dot to get the DOT source")
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_source.encode(), capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"dot -T{fmt} failed: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


# -- checks -----------------------------------------------------------------------------------------

def _mark(result) -> str:
    if result.actual is None:
        return "?"
    sign = "+" if result.actual else "-"
    return sign if result.ok else "!" + sign


def check_matrix(report) -> str:
    """Who reaches whom: rows are sources, columns destinations; each cell lists check numbers with
    + (reached) or - (did not), prefixed ! when that differs from what the check expected."""
    results = report.results
    lines = [f"topology {report.topology} (run {report.run}): "
             f"{len(results)} checks, {len(report.mismatches)} mismatches"]
    if not results:
        return lines[0] + "\n"
    dst_of = lambda r: r.dst_node or r.check.dst.partition(":")[0]
    rows = list(dict.fromkeys(r.check.src for r in results))
    cols = list(dict.fromkeys(dst_of(r) for r in results))
    cells = {}
    for r in results:
        cells.setdefault((r.check.src, dst_of(r)), []).append(f"{r.check.index + 1}{_mark(r)}")
    head = "from \\ to"
    w0 = max(len(head), *(len(x) for x in rows))
    widths = [max(len(c), *(len(" ".join(cells.get((row, c), []))) for row in rows)) for c in cols]
    lines.append("")
    lines.append(f"  {head:<{w0}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cols, widths)))
    for row in rows:
        lines.append(f"  {row:<{w0}}  " + "  ".join(f"{' '.join(cells.get((row, c), [])) or '.':<{w}}"
                                                    for c, w in zip(cols, widths)))
    lines.append("  (+ reached, - not reached, ! differs from expected, ? could not run)")
    lines.append("")
    table = [("#", "check", "to", "expected", "actual", "result")]
    for r in results:
        actual = "error" if r.actual is None else ("success" if r.actual else "fail")
        to = f"{r.dst_ip}" + (f" ({r.dst_node})" if r.dst_node and r.dst_node != r.check.dst else "")
        table.append((str(r.check.index + 1), r.check.label(), to or r.check.dst,
                      "success" if r.check.expect else "fail", actual, "ok" if r.ok else "MISMATCH"))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        lines.append("  " + "  ".join(f"{v:<{w}}" for v, w in zip(row, widths)).rstrip())
    for r in results:
        if r.error or (r.detail and not r.ok):
            lines.append(f"  #{r.check.index + 1}: {r.error or r.detail}")
    lines.append("")
    lines.append("PASS" if report.ok else f"FAIL: {len(report.mismatches)} of {len(results)} checks differ")
    return "\n".join(lines) + "\n"
