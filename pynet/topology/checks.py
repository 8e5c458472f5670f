"""The ``checks:`` section run against a deployment: each check gives expected vs actual, and the whole
report renders as a who-reaches-whom matrix (text) or JSON.

Every probe is aimed at an address found inside the topology's own namespaces (checked again here at
run time, after ``up``), and servers for TCP/UDP/port-forward/MTU probes are started by the check
itself inside the destination node, so a check needs nothing running beforehand.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from netns_fixtures.probes import icmp_echo, tcp_connect, tcp_listener, udp_echo_server, udp_exchange
from .model import Check

TIMEOUT = 2.0   # per probe; an expected failure costs this much (checks run concurrently)
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO = 23, 2


@dataclass
class CheckResult:
    check: Check
    dst_ip: str = ""
    dst_node: str = ""
    actual: bool | None = None     # None: could not run (error says why)
    error: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.actual is not None and self.actual == self.check.expect

    def to_dict(self) -> dict:
        c = self.check
        out = {"index": c.index, "name": c.label(), "type": c.type, "from": c.src, "to": c.dst,
               "to_ip": self.dst_ip, "to_node": self.dst_node,
               "expected": "success" if c.expect else "fail",
               "actual": None if self.actual is None else ("success" if self.actual else "fail"),
               "ok": self.ok}
        for key in ("port", "size", "target", "target_port"):
            if getattr(c, key):
                out[key] = getattr(c, key)
        if c.type == "portforward":
            out["protocol"] = c.protocol
        if self.error:
            out["error"] = self.error
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class CheckReport:
    topology: str
    run: str
    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def mismatches(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def to_dict(self) -> dict:
        return {"topology": self.topology, "run": self.run, "ok": self.ok,
                "total": len(self.results), "mismatches": len(self.mismatches),
                "checks": [r.to_dict() for r in self.results]}

    def matrix(self) -> str:
        from .render import check_matrix

        return check_matrix(self)

    __str__ = matrix


def resolve(dep, dst: str) -> tuple[str, str]:
    """(ip, node) of a check target; only addresses present in the topology's namespaces qualify."""
    owners = dep.all_addresses()
    try:
        ip = str(ipaddress.ip_address(dst))
    except ValueError:
        node, _, ifname = dst.partition(":")
        ip = dep.address(node, ifname)
        return ip, node
    if ip not in owners:
        raise LookupError(f"{ip} is not an address of any node in topology {dep.name!r}; refusing to send to it")
    return ip, owners[ip]


def run_checks(dep, only: list[int] | None = None, workers: int = 8) -> CheckReport:
    """Runs checks concurrently (an expected failure costs a full timeout); checks that start a server
    in the same node take turns, so their ports never collide."""
    report = CheckReport(dep.name, dep.run)
    unknown = sorted(set(only or ()) - {c.index for c in dep.topology.checks})
    if unknown:   # an empty report would pass
        raise ValueError(f"topology {dep.name!r} has no check with index {', '.join(map(str, unknown))} "
                         f"(0 to {len(dep.topology.checks) - 1})")
    checks = [c for c in dep.topology.checks if only is None or c.index in only]
    locks: dict[str, threading.Lock] = {name: threading.Lock() for name in dep.topology.nodes}

    def run_one(check: Check) -> CheckResult:
        result = CheckResult(check)
        try:
            result.dst_ip, result.dst_node = resolve(dep, check.dst)
            server = check.target if check.type == "portforward" else result.dst_node
            for node in {check.src, server, result.dst_node}:
                dep.netns(node)     # a namespace deleted by hand: say so, not ENOENT from inside a probe
            if check.type == "icmp":
                result.actual = _PROBES[check.type](dep, check, result)
            else:
                with locks[server]:
                    result.actual = _PROBES[check.type](dep, check, result)
        except (LookupError, OSError) as exc:
            result.error = str(exc)
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(checks) or 1))) as pool:
        report.results = list(pool.map(run_one, checks))
    return report


def _icmp(dep, check: Check, result: CheckResult) -> bool:
    # One echo every quarter second over the whole timeout, as ping does.
    return icmp_echo(dep.netns(check.src), result.dst_ip, TIMEOUT, attempts=int(TIMEOUT / 0.25))


def _any(ip: str) -> str:
    return "::" if ipaddress.ip_address(ip).version == 6 else "0.0.0.0"


def _tcp(dep, check: Check, result: CheckResult) -> bool:
    with tcp_listener(dep.netns(result.dst_node), _any(result.dst_ip), check.port) as port:
        return tcp_connect(dep.netns(check.src), result.dst_ip, port, timeout=TIMEOUT)


def _udp(dep, check: Check, result: CheckResult) -> bool:
    with udp_echo_server(dep.netns(result.dst_node), _any(result.dst_ip), check.port) as port:
        return udp_exchange(dep.netns(check.src), result.dst_ip, port, timeout=TIMEOUT, attempts=2)


def _portforward(dep, check: Check, result: CheckResult) -> bool:
    """A server on the container's port; the client aims at the host address and the mapped port."""
    target = dep.netns(check.target)
    result.detail = f"{result.dst_ip}:{check.port}/{check.protocol} -> {check.target}:{check.target_port}"
    if check.protocol == "udp":
        with udp_echo_server(target, "0.0.0.0", check.target_port):
            return udp_exchange(dep.netns(check.src), result.dst_ip, check.port, timeout=TIMEOUT, attempts=2)
    banner = f"pynet-topology {check.target}\n".encode()
    with tcp_listener(target, "0.0.0.0", check.target_port, banner=banner):
        # The banner proves the connection landed on the target container, not on something else.
        return tcp_connect(dep.netns(check.src), result.dst_ip, check.port, timeout=TIMEOUT, expect=banner)


def _mtu(dep, check: Check, result: CheckResult) -> bool:
    """A DF-set UDP datagram whose IP packet is exactly ``size`` bytes must come back whole."""
    v6 = ipaddress.ip_address(result.dst_ip).version == 6
    payload_len = check.size - (48 if v6 else 28)
    result.detail = f"{check.size}-byte IPv{6 if v6 else 4} packet, DF set"
    # A buffer that holds any datagram: the default 2 KiB would cut a large one short.
    with udp_echo_server(dep.netns(result.dst_node), _any(result.dst_ip), bufsize=65535) as port:
        with dep.netns(check.src).entered():
            sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
            else:
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            sock.settimeout(TIMEOUT / 2)
            payload = os.urandom(max(payload_len, 0))
            for _ in range(3):
                try:
                    sock.sendto(payload, (result.dst_ip, port))
                    data, _ = sock.recvfrom(65535)
                    if data == payload:
                        return True
                except socket.timeout:
                    continue
                except OSError as exc:
                    # EMSGSIZE: the local link or a learnt path MTU is smaller; the datagram cannot go.
                    result.detail += f"; {exc.strerror}"
                    return False
            return False
        finally:
            sock.close()


_PROBES = {"icmp": _icmp, "tcp": _tcp, "udp": _udp, "portforward": _portforward, "mtu": _mtu}
