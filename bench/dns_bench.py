"""Name resolution measured: pynet's per-network resolver (dnsname plugin) and dnsmasq serving the same
records, side by side: queries per second and p99 latency for local names and forwarded ones.

Everything happens in namespaces this script creates: a sandbox "host" netns with the bridge, one container
attached with our bridge -> dnsname chain (which starts pynet's resolver on the gateway), an "upstream"
namespace running a dnsmasq that answers every name under fwd.example.org (TTL 60), and a dnsmasq under
test in the host netns on a second bridge address with the container's name as a host record, forwarding
to the same upstream with a cache. The client is one UDP socket in the container sending one query at a
time (a bounded count, a time cap):
- ``local``: the same query again and again (cached local name);
- ``local-0x20``: the name in a new mix of cases each time: no two queries are the same bytes (uncached);
- ``fwd-first``: a new name under fwd.example.org each time: every query goes to the upstream;
- ``fwd-cached``: one forwarded name again and again: answered from the resolver's cache.
The rows measure both servers answering already: the first query to pynet's resolver (sent as ADD
returns; it starts the serving process, pynet/dns/supervise.py) is timed alone and printed last, as dnsmasq
is probed until it answers before its rows.
Both dnsmasq processes are stopped by PID; the container is detached (which stops pynet's resolver) and
every namespace is removed at the end, also on failure. Nothing here asserts a number.

    .venv/bin/python bench/dns_bench.py                   # 2000 queries per row and server
    .venv/bin/python bench/dns_bench.py --local 500 --forwarded 200
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dns.message  # noqa: E402

from cni_plugins import netlink  # noqa: E402
from netns_fixtures import CNI, OUR_PLUGINS, Netns  # noqa: E402
from netns_fixtures.daemon import stop_daemon  # noqa: E402
from netns_fixtures.links import veth_link  # noqa: E402
from pynet.dns import plugin_config  # noqa: E402

SUBNET = "10.96.0.0/24"
GATEWAY = "10.96.0.1"
DNSMASQ_ADDRESS = "10.96.0.254"
UPSTREAM = "10.54.0.2"
FORWARDED = "fwd.example.org"
CONTAINER_ID = "0123456789abcdef" * 4
TIME_CAP = 15.0   # seconds per server and row
ROUNDS = 40


def queries(kind: str, count: int) -> list[str]:
    """The names one row asks, in order (repeated when shorter than ``count``)."""
    if kind == "local":
        return ["web.dns.pynet"]
    if kind == "local-0x20":   # 0x20: another mix of cases each time, as some stub resolvers do
        return [spell("web.dns.pynet", i) for i in range(min(count, 2048))]
    if kind == "fwd-first":
        return [f"q{i}.{FORWARDED}" for i in range(count)]
    return [FORWARDED]


def measure(ctr: Netns, servers: dict[str, str], names: list[str], count: int) -> dict[str, dict]:
    """Sequential queries from inside ``ctr`` to each server (label -> address): qps and latency
    percentiles (ms) of the answered ones. The servers take turns in ROUNDS slices of the queries, so a
    busy moment of this shared machine falls on both rather than on one."""
    spellings = [bytearray(dns.message.make_query(name, "A").to_wire()) for name in names]
    socks = {}
    for label, address in servers.items():
        with ctr.entered():
            socks[label] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        socks[label].settimeout(2.0)
        socks[label].connect((address, 53))
    tally = {label: {"latencies": [], "failures": 0, "elapsed": 0.0} for label in servers}
    per_round = -(-count // ROUNDS)
    try:
        for first in range(0, count, per_round):
            for label, sock in socks.items():
                t = tally[label]
                if t["elapsed"] > TIME_CAP:
                    continue
                started = time.perf_counter()
                for i in range(first, min(count, first + per_round)):
                    wire = spellings[i % len(spellings)]
                    wire[0:2] = (i & 0xFFFF).to_bytes(2, "big")
                    t0 = time.perf_counter()
                    sock.send(wire)
                    try:
                        reply = sock.recv(4096)
                    except socket.timeout:
                        t["failures"] += 1
                        continue
                    t["latencies"].append(time.perf_counter() - t0)
                    if reply[3] & 0x0F:   # an rcode other than NOERROR
                        t["failures"] += 1
                t["elapsed"] += time.perf_counter() - started
    finally:
        for sock in socks.values():
            sock.close()
    return {label: _stats(**t) for label, t in tally.items()}


def first_query(ctr: Netns, address: str) -> float:
    """Milliseconds until the first query to ``address`` is answered (one query, no retry)."""
    with ctr.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(30.0)
        t0 = time.perf_counter()
        sock.sendto(dns.message.make_query("web.dns.pynet", "A").to_wire(), (address, 53))
        sock.recv(4096)
        return (time.perf_counter() - t0) * 1000


def _stats(latencies: list[float], failures: int, elapsed: float) -> dict:
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan")
    return {"queries": len(latencies) + (failures if not latencies else 0), "failures": failures,
            "qps": len(latencies) / elapsed if elapsed else 0.0,
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"), "p99_ms": p99 * 1000}


def spell(name: str, n: int) -> str:
    letters = [i for i, c in enumerate(name) if c.isalpha()]
    chars = list(name)
    for bit, i in enumerate(letters):
        if (n >> bit) & 1:
            chars[i] = chars[i].upper()
    return "".join(chars)


def dnsmasq(ns: Netns, tmp: str, label: str, address: str, *options: str) -> subprocess.Popen:
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-hosts", "--no-resolv",
            "--user=root", f"--pid-file={os.path.join(tmp, label + '.pid')}", f"--listen-address={address}",
            "--bind-interfaces", "--log-facility=-", *options]
    proc = ns.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:   # answering yet?
        if proc.poll() is not None:
            raise RuntimeError(f"dnsmasq ({label}) exited with {proc.returncode}")
        with ns.entered():
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with probe:
            probe.settimeout(0.1)
            try:
                probe.sendto(dns.message.make_query("probe.invalid", "A").to_wire(), (address, 53))
                probe.recv(512)
                return proc
            except OSError:
                pass
    raise RuntimeError(f"dnsmasq ({label}) does not answer on {address}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local", type=int, default=2000, help="queries for the local name (default 2000)")
    parser.add_argument("--forwarded", type=int, default=2000, help="queries per forwarded row (default 2000)")
    args = parser.parse_args()
    if not shutil.which("dnsmasq"):
        print("dnsmasq is not installed (scripts/install.sh installs it)", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="pynet-dnsbench-")
    namespaces: list[Netns] = []
    procs: list[subprocess.Popen] = []
    cni = net = result = ctr = None
    try:
        host, ctr, up = (Netns.create(p) for p in ("pynt-dbh", "pynt-dbc", "pynt-dbu"))
        namespaces += [host, ctr, up]
        veth_link(host, "up0", up, "up1", a_addresses=["10.54.0.1/24"], b_addresses=[UPSTREAM + "/24"])
        procs.append(dnsmasq(up, tmp, "upstream", UPSTREAM, f"--address=/{FORWARDED}/192.0.2.7", "--local-ttl=60"))

        dns_entry = plugin_config(data_dir=os.path.join(tmp, "dns"), upstreams=[UPSTREAM])
        net = {"cniVersion": "1.0.0", "name": "dnsbench", "plugins": [
            {"type": "bridge", "bridge": "dnsbench0", "isGateway": True,
             "ipam": {"type": "host-local", "dataDir": os.path.join(tmp, "ipam"), "ranges": [[{"subnet": SUBNET}]]}},
            dns_entry]}
        cni = CNI(host, OUR_PLUGINS)
        result = cni.add_chain(net, ctr, container_id=CONTAINER_ID, args="IgnoreUnknown=1;K8S_POD_NAME=web")
        web_ip = result["ips"][0]["address"].split("/")[0]
        first_query_ms = first_query(ctr, GATEWAY)

        netlink.add_address(host.ipr, netlink.link_index(host.ipr, "dnsbench0"),
                            ipaddress.ip_interface(DNSMASQ_ADDRESS + "/24"), nodad=True)
        procs.append(dnsmasq(host, tmp, "under-test", DNSMASQ_ADDRESS, "--cache-size=10000", "--local-ttl=60",
                             f"--server={UPSTREAM}", f"--host-record=web.dns.pynet,web,{web_ip}"))

        rows = []
        for label, count in (("local", args.local), ("local-0x20", args.local), ("fwd-first", args.forwarded),
                             ("fwd-cached", args.forwarded)):
            names = queries(label, count)
            both = measure(ctr, {"pynet": GATEWAY, "dnsmasq": DNSMASQ_ADDRESS}, names, count)
            rows.append((label, both["pynet"], both["dnsmasq"]))
        print(f"{'query':<10} {'server':<8} {'answered':>8} {'failed':>6} {'qps':>8} {'p50 ms':>7} {'p99 ms':>7}")
        for label, ours, theirs in rows:
            for server, m in (("pynet", ours), ("dnsmasq", theirs)):
                print(f"{label:<10} {server:<8} {m['queries']:>8} {m['failures']:>6} {m['qps']:>8.0f} "
                      f"{m['p50_ms']:>7.3f} {m['p99_ms']:>7.3f}")
        print()
        for label, ours, theirs in rows:
            print(f"{label}: pynet/dnsmasq qps {ours['qps'] / theirs['qps']:.2f}x, "
                  f"p99 {ours['p99_ms'] / theirs['p99_ms']:.2f}x")
        print(f"first query after ADD (starts pynet's serving process): {first_query_ms:.1f} ms")
        return 0
    finally:
        for proc in procs:
            stop_daemon(proc, 5)
        if result is not None:
            cni.del_chain(net, ctr, result, container_id=CONTAINER_ID, args="IgnoreUnknown=1")
        for ns in reversed(namespaces):
            ns.remove()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
