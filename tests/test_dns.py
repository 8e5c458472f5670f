"""dnsname: containers find each other by name, through the chain bridge -> dnsname in sandbox namespaces.

Queries go from inside the container namespaces (a dnspython socket made in there, busybox nslookup run in
there) to the network's resolver on its gateway; forwarding goes to a test resolver in another namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from cni_plugins import syscalls
from netns_fixtures import CNI, OUR_PLUGINS, PluginFailed
from netns_fixtures.links import veth_link

BUSYBOX = "/bin/busybox"
WEB_ID = "0123456789abcdef" * 4
DB_ID = "fedcba9876543210" * 4
UPSTREAM = "10.53.0.2"


@pytest.fixture
def dns_dir(tmp_path):
    """The plugin's dataDir; every resolver it names is killed at test end (by PID), pass or fail."""
    path = tmp_path / "dns"
    yield path
    for pid_file in path.glob("*.pid") if path.exists() else ():
        try:
            info = json.loads(pid_file.read_text())
        except ValueError:
            continue
        for pid, start in ((info.get("pid"), info.get("startTime")), (info.get("server"), info.get("serverStartTime"))):
            if syscalls.is_alive(pid, start):
                os.kill(pid, signal.SIGKILL)


def conflist(tmp_path, dns_dir, name="dnsnet", bridge="dnsbr0", subnet="10.88.0.0/24", **dns_options):
    dnsname = {"type": "dnsname", "dataDir": str(dns_dir), "upstreams": [],
               "capabilities": {"aliases": True, "dns": True}}
    dnsname.update(dns_options)
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True,
         "ipam": {"type": "host-local", "dataDir": str(tmp_path / "ipam"), "routes": [{"dst": "0.0.0.0/0"}],
                  "ranges": [[{"subnet": s}] for s in subnet.split(",")]}},
        dnsname]}


def attach(cni, net, ns, cid, name=None, aliases=None, caps=None, ifname="eth0"):
    caps = dict(caps or {})
    if aliases is not None:
        caps["aliases"] = {net["name"]: aliases}
    args = "IgnoreUnknown=1" + (f";K8S_POD_NAME={name}" if name else "")
    return cni.add_chain(net, ns, capability_args=caps, container_id=cid, args=args, ifname=ifname)


def detach(cni, net, ns, cid, result, ifname="eth0"):
    cni.del_chain(net, ns, result, container_id=cid, args="IgnoreUnknown=1", ifname=ifname)


def ip_of(result, ifname="eth0") -> str:
    index = next(i for i, iface in enumerate(result["interfaces"]) if iface["name"] == ifname and iface.get("sandbox"))
    return next(ip["address"].split("/")[0] for ip in result["ips"] if ip.get("interface") == index)


def ask(ns, server, name, rdtype="A", tcp=False, timeout=3.0) -> dns.message.Message:
    """A query from inside ``ns`` (the socket is made in there)."""
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    with ns.entered():
        sock = socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    with sock:
        query = dns.message.make_query(name, rdtype)
        if tcp:
            sock.settimeout(timeout)
            sock.connect((server, 53))
            sock.setblocking(False)
            return dns.query.tcp(query, server, timeout=timeout, sock=sock)
        return dns.query.udp(query, server, timeout=timeout, sock=sock)


def answers(reply) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


def resolver_pid(dns_dir, network="dnsnet"):
    try:
        info = json.loads((dns_dir / f"{network}.pid").read_text())
    except FileNotFoundError:
        return None
    return info["pid"] if syscalls.is_alive(info["pid"], info.get("startTime")) else None


def serving(dns_dir, network="dnsnet") -> dict:
    """The pid file once it names the serving process the watchdog forked (at the first query: ask one
    before), waited for."""
    path = dns_dir / f"{network}.pid"
    assert wait_until(lambda: json.loads(path.read_text()).get("server")), path.read_text()
    return json.loads(path.read_text())


def resolver_processes(dns_dir, network="dnsnet") -> list[int]:
    """The PIDs of the network's resolver watchdog and its serving process, from the pid file."""
    info = serving(dns_dir, network)
    return sorted([info["pid"], info["server"]])


def resolvers_of(dns_dir) -> list[int]:
    """PIDs of every process running a resolver of ``dns_dir`` (by command line)."""
    proc = subprocess.run(["pgrep", "-f", f"pynet.dns.supervise --state-dir {dns_dir} "], stdout=subprocess.PIPE)
    return sorted(int(pid) for pid in proc.stdout.split())


def stopped(dns_dir, *pids) -> bool:
    """Whether ``pids`` and every resolver of ``dns_dir`` are gone (the last DEL kills them, not waiting)."""
    return wait_until(lambda: not resolvers_of(dns_dir) and not any(syscalls.is_alive(pid, None) for pid in pids))


@contextlib.contextmanager
def web_and_db(cni, net, make_netns, web_aliases=None):
    """web and db attached to ``net``; yields {name: (ns, result)}; detached at the end (db first)."""
    web, db = make_netns("pynt-web"), make_netns("pynt-db")
    ctrs = {"web": (web, attach(cni, net, web, WEB_ID, "web", aliases=web_aliases))}
    try:
        ctrs["db"] = (db, attach(cni, net, db, DB_ID, "db"))
        yield ctrs
    finally:
        for name, cid in (("db", DB_ID), ("web", WEB_ID)):
            if name in ctrs:
                ns, result = ctrs[name]
                try:
                    detach(cni, net, ns, cid, result)
                except PluginFailed:
                    pass


@pytest.fixture
def two(cni, make_netns, tmp_path, dns_dir):
    """web and db on one network; yields (net, {name: (ns, result)})."""
    net = conflist(tmp_path, dns_dir)
    with web_and_db(cni, net, make_netns, web_aliases=["www", "frontend"]) as ctrs:
        yield net, ctrs


def test_containers_resolve_each_other_by_name_alias_and_short_id(two, dns_dir):
    net, ctrs = two
    (web, web_res), (db, db_res) = ctrs["web"], ctrs["db"]
    assert web_res["dns"] == {"nameservers": ["10.88.0.1"], "search": ["dns.pynet"]}
    web_ip, db_ip = ip_of(web_res), ip_of(db_res)
    for name in ("web", "web.dns.pynet", "www", "frontend.dns.pynet", WEB_ID[:12], "WEB.DNS.PYNET"):
        reply = ask(db, "10.88.0.1", name)
        assert reply.rcode() == dns.rcode.NOERROR and answers(reply) == [web_ip], name
    assert answers(ask(web, "10.88.0.1", "db", tcp=True)) == [db_ip]
    # a name with no IPv6 address: NOERROR, no answer
    reply = ask(web, "10.88.0.1", "db.dns.pynet", "AAAA")
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer == []
    assert ask(web, "10.88.0.1", "nosuch.dns.pynet").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.skipif(not os.access(BUSYBOX, os.X_OK), reason="busybox-static not installed")
def test_busybox_nslookup_in_the_container_finds_the_other_container(two):
    net, ctrs = two
    (web, web_res), (db, _) = ctrs["web"], ctrs["db"]
    proc = db.run([BUSYBOX, "nslookup", "web.dns.pynet", "10.88.0.1"], timeout=20)
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert ip_of(web_res) in out


def test_reverse_lookup_gives_the_container_name(two):
    net, ctrs = two
    (web, web_res), (db, _) = ctrs["web"], ctrs["db"]
    reverse = dns.reversename.from_address(ip_of(web_res))
    assert answers(ask(db, "10.88.0.1", reverse, "PTR")) == ["web.dns.pynet."]


def test_a_container_on_another_network_cannot_resolve_them(two, cni, make_netns, tmp_path, dns_dir):
    other_net = conflist(tmp_path / "other", dns_dir, name="othernet", bridge="dnsbr1", subnet="10.89.0.0/24")
    other = make_netns("pynt-oth")
    result = attach(cni, other_net, other, "c" * 64, "lonely")
    try:
        assert ask(other, "10.89.0.1", "web.dns.pynet").rcode() == dns.rcode.NXDOMAIN
        assert ask(other, "10.89.0.1", "web").answer == []   # forwarded (no upstream here): never its address
        assert answers(ask(other, "10.89.0.1", "lonely")) == [ip_of(result)]
        # the first network's resolver is reachable through the host, but keeps its names to its own
        reply = ask(other, "10.88.0.1", "web.dns.pynet")
        assert reply.rcode() == dns.rcode.REFUSED and reply.answer == []
        assert ask(other, "10.88.0.1", "web").answer == []
    finally:
        detach(cni, other_net, other, "c" * 64, result)


def test_removed_container_name_is_gone_and_delete_is_idempotent(two, cni):
    net, ctrs = two
    (web, _), (db, db_res) = ctrs["web"], ctrs["db"]
    assert answers(ask(web, "10.88.0.1", "db.dns.pynet")) == [ip_of(db_res)]   # (now a cached answer too)
    detach(cni, net, db, DB_ID, db_res)
    assert ask(web, "10.88.0.1", "db.dns.pynet").rcode() == dns.rcode.NXDOMAIN
    assert ask(web, "10.88.0.1", DB_ID[:12] + ".dns.pynet").rcode() == dns.rcode.NXDOMAIN
    cni.delete("dnsname", dict(net["plugins"][1], name=net["name"], cniVersion="1.0.0"), db, container_id=DB_ID)


def test_container_on_two_networks_is_resolved_per_network(cni, make_netns, tmp_path, dns_dir):
    net_a = conflist(tmp_path / "a", dns_dir, name="neta", bridge="dnsbra", subnet="10.90.0.0/24")
    net_b = conflist(tmp_path / "b", dns_dir, name="netb", bridge="dnsbrb", subnet="10.91.0.0/24")
    both, only_a, only_b = make_netns("pynt-both"), make_netns("pynt-a"), make_netns("pynt-b")
    res_both_a = attach(cni, net_a, both, WEB_ID, "app", ifname="eth0")
    res_both_b = attach(cni, net_b, both, WEB_ID, "app", ifname="eth1")
    res_a = attach(cni, net_a, only_a, "a" * 64, "client-a")
    res_b = attach(cni, net_b, only_b, "b" * 64, "client-b")
    try:
        assert answers(ask(only_a, "10.90.0.1", "app")) == [ip_of(res_both_a, "eth0")]
        assert answers(ask(only_b, "10.91.0.1", "app")) == [ip_of(res_both_b, "eth1")]
        assert ask(only_a, "10.90.0.1", "client-b.dns.pynet").rcode() == dns.rcode.NXDOMAIN
    finally:
        detach(cni, net_b, only_b, "b" * 64, res_b)
        detach(cni, net_a, only_a, "a" * 64, res_a)
        detach(cni, net_b, both, WEB_ID, res_both_b, ifname="eth1")
        detach(cni, net_a, both, WEB_ID, res_both_a, ifname="eth0")
    assert resolver_pid(dns_dir, "neta") is None and resolver_pid(dns_dir, "netb") is None


class Upstream:
    """A dnspython resolver in ``ns`` on UPSTREAM:53: every A query gets 192.0.2.7 (TTL 30), names
    starting with ``nx`` NXDOMAIN with an SOA (TTL 3600, MINIMUM 120), ``nosoa`` NXDOMAIN without one.
    ``asked`` counts the questions it got, by lower-case name."""

    def __init__(self, ns):
        self.address = UPSTREAM
        self.asked: dict[str, int] = {}
        self.stop = threading.Event()
        with ns.entered():
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((UPSTREAM, 53))
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        with self.sock:
            while not self.stop.is_set():
                try:
                    wire, peer = self.sock.recvfrom(4096)
                except socket.timeout:
                    continue
                query = dns.message.from_wire(wire)
                name = query.question[0].name
                label = name.to_text().lower()
                self.asked[label] = self.asked.get(label, 0) + 1
                reply = dns.message.make_response(query)
                if label.startswith("nx"):
                    reply.set_rcode(dns.rcode.NXDOMAIN)
                    reply.authority.append(dns.rrset.from_text(
                        name.parent(), 3600, "IN", "SOA", "ns.example. host.example. 1 7200 900 1209600 120"))
                elif label.startswith("nosoa"):
                    reply.set_rcode(dns.rcode.NXDOMAIN)
                else:
                    reply.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.7"))
                self.sock.sendto(reply.to_wire(), peer)

    def close(self):
        self.stop.set()
        self.thread.join(2)


@pytest.fixture
def upstream(host_ns, make_netns):
    """A test upstream resolver in its own namespace, cabled to the sandbox host."""
    ns = make_netns("pynt-up")
    veth_link(host_ns, "up0", ns, "up1", a_addresses=["10.53.0.1/24"], b_addresses=[UPSTREAM + "/24"])
    server = Upstream(ns)
    yield server
    server.close()


def test_other_names_are_forwarded_to_the_upstream_and_servfail_when_it_fails(cni, make_netns, tmp_path, dns_dir,
                                                                             upstream):
    net = conflist(tmp_path, dns_dir, upstreams=[upstream.address])
    ctr = make_netns("pynt-fwd")
    result = attach(cni, net, ctr, WEB_ID, "web")
    try:
        reply = ask(ctr, "10.88.0.1", "example.org")
        assert reply.rcode() == dns.rcode.NOERROR and answers(reply) == ["192.0.2.7"]
        assert answers(ask(ctr, "10.88.0.1", "example.org", tcp=False)) == ["192.0.2.7"]
        # a container whose runtime asked for other servers (the dns capability) forwards to those
        other = make_netns("pynt-fwd2")
        res2 = attach(cni, net, other, DB_ID, "db", caps={"dns": {"servers": ["10.53.0.99"]}})
        try:
            assert ask(other, "10.88.0.1", "example.org", timeout=10).rcode() == dns.rcode.SERVFAIL
            assert answers(ask(other, "10.88.0.1", "web")) == [ip_of(result)]   # local names still local
        finally:
            detach(cni, net, other, DB_ID, res2)
    finally:
        detach(cni, net, ctr, WEB_ID, result)


def ttl_of(reply) -> int:
    return min(rrset.ttl for rrset in reply.answer + reply.authority)


def test_forwarded_answers_are_cached_for_their_ttl_and_negative_ones_per_rfc2308(cni, make_netns, tmp_path,
                                                                                 dns_dir, upstream):
    net = conflist(tmp_path, dns_dir, upstreams=[upstream.address])
    ctr = make_netns("pynt-fwd")
    result = attach(cni, net, ctr, WEB_ID, "web")
    try:
        first = ask(ctr, "10.88.0.1", "cached.example.org")
        time.sleep(1.1)
        again = ask(ctr, "10.88.0.1", "CACHED.Example.ORG")   # other case: the same name
        assert answers(again) == ["192.0.2.7"] and upstream.asked["cached.example.org."] == 1
        assert again.question[0].name.to_text() == "CACHED.Example.ORG."   # the asker's spelling back
        assert ttl_of(first) == 30 and 27 <= ttl_of(again) <= 29   # counted down while cached
        # NXDOMAIN with an SOA: cached (for min(SOA TTL, MINIMUM), capped); without one: asked again
        for _ in range(2):
            assert ask(ctr, "10.88.0.1", "nxname.example.org").rcode() == dns.rcode.NXDOMAIN
            assert ask(ctr, "10.88.0.1", "nosoa.example.org").rcode() == dns.rcode.NXDOMAIN
        assert upstream.asked["nxname.example.org."] == 1 and upstream.asked["nosoa.example.org."] == 2
        # the same question over TCP still reaches the resolver's TCP side
        assert answers(ask(ctr, "10.88.0.1", "cached.example.org", tcp=True)) == ["192.0.2.7"]
    finally:
        detach(cni, net, ctr, WEB_ID, result)


def test_a_bare_name_forwarded_before_is_the_new_container_once_it_comes(cni, make_netns, tmp_path, dns_dir,
                                                                        upstream):
    net = conflist(tmp_path, dns_dir, upstreams=[upstream.address])
    web, later = make_netns("pynt-web"), make_netns("pynt-later")
    res_web = attach(cni, net, web, WEB_ID, "web")
    try:
        assert answers(ask(web, "10.88.0.1", "later")) == ["192.0.2.7"]   # the upstream's, now cached
        res_later = attach(cni, net, later, DB_ID, "later")
        try:
            assert answers(ask(web, "10.88.0.1", "later")) == [ip_of(res_later)]
        finally:
            detach(cni, net, later, DB_ID, res_later)
    finally:
        detach(cni, net, web, WEB_ID, res_web)


def test_resolver_is_never_its_own_upstream(cni, container_ns, tmp_path, dns_dir):
    net = conflist(tmp_path, dns_dir, upstreams=["10.88.0.1"])
    result = attach(cni, net, container_ns, WEB_ID, "web")
    try:
        assert ask(container_ns, "10.88.0.1", "example.org").rcode() == dns.rcode.SERVFAIL
    finally:
        detach(cni, net, container_ns, WEB_ID, result)


def wait_until(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def ask_until_answered(ns, server, name, seconds=10.0):
    """Asks again while the resolver is not answering (restarting); the last reply."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return ask(ns, server, name, timeout=0.5)
        except dns.exception.Timeout:
            if time.monotonic() > deadline:
                raise


def test_killed_serving_process_is_replaced_without_any_cni_call(two, dns_dir):
    net, ctrs = two
    (web, web_res), (db, db_res) = ctrs["web"], ctrs["db"]
    assert answers(ask(db, "10.88.0.1", "www")) == [ip_of(web_res)]
    info = serving(dns_dir)
    os.kill(info["server"], signal.SIGKILL)
    assert wait_until(lambda: json.loads((dns_dir / "dnsnet.pid").read_text())["server"] != info["server"])
    assert answers(ask_until_answered(db, "10.88.0.1", "www")) == [ip_of(web_res)]
    assert answers(ask(web, "10.88.0.1", "db", tcp=True)) == [ip_of(db_res)]
    new = json.loads((dns_dir / "dnsnet.pid").read_text())
    assert new["pid"] == info["pid"] and not syscalls.is_alive(info["server"], info["serverStartTime"])
    assert resolvers_of(dns_dir) == resolver_processes(dns_dir)


def test_resolver_survives_kill_and_restart_with_its_records(two, cni, dns_dir):
    net, ctrs = two
    (web, web_res), (db, db_res) = ctrs["web"], ctrs["db"]
    assert answers(ask(db, "10.88.0.1", "www")) == [ip_of(web_res)]
    old = resolver_processes(dns_dir)
    pid = resolver_pid(dns_dir)
    os.kill(pid, signal.SIGKILL)   # the watchdog: its serving process goes with it, no orphan
    assert wait_until(lambda: not resolvers_of(dns_dir), 5)
    assert resolver_pid(dns_dir) is None
    # the next request for the network (here CHECK) starts it again, from the records on disk
    cni.check_chain(net, db, db_res, container_id=DB_ID, args="IgnoreUnknown=1;K8S_POD_NAME=db")
    new_pid = resolver_pid(dns_dir)
    assert new_pid not in (None, pid) and resolvers_of(dns_dir) == resolver_processes(dns_dir)
    assert not set(old) & set(resolvers_of(dns_dir))
    assert answers(ask(db, "10.88.0.1", "www")) == [ip_of(web_res)]


def test_plugin_run_in_a_private_mount_namespace_supervises_and_stops_its_resolver(host_ns, make_netns, tmp_path,
                                                                                  dns_dir):
    """As `ip netns exec` runs a plugin: a mount namespace of its own, which ends with the plugin."""
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    script = wrappers / "dnsname"
    script.write_text(f"#!/bin/sh\nexec unshare --mount --propagation private {OUR_PLUGINS}/dnsname \"$@\"\n")
    script.chmod(0o755)
    cni = CNI(host_ns, str(wrappers), OUR_PLUGINS)
    net = conflist(tmp_path, dns_dir)
    with web_and_db(cni, net, make_netns) as ctrs:
        (_web, res_web), (db, _res_db) = ctrs["web"], ctrs["db"]
        watchdog = resolver_pid(dns_dir)
        assert os.readlink(f"/proc/{watchdog}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        assert answers(ask(db, "10.88.0.1", "web")) == [ip_of(res_web)]
        server = serving(dns_dir)["server"]
        os.kill(server, signal.SIGKILL)
        assert answers(ask_until_answered(db, "10.88.0.1", "web")) == [ip_of(res_web)]
    assert stopped(dns_dir, watchdog, server)


def _raw_udp(ns, server, payload: bytes, timeout=1.0) -> bytes | None:
    with ns.entered():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (server, 53))
        try:
            return sock.recv(4096)
        except socket.timeout:
            return None


def test_malformed_queries_get_formerr_or_are_dropped_and_the_server_keeps_answering(two):
    net, ctrs = two
    (web, web_res), (db, _) = ctrs["web"], ctrs["db"]
    garbage = struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\xff\xfe\x00garbage"
    reply = _raw_udp(db, "10.88.0.1", garbage)
    assert reply is not None and reply[:2] == b"\x42\x42"
    assert dns.rcode.from_flags(struct.unpack("!H", reply[2:4])[0], 0) == dns.rcode.FORMERR
    assert _raw_udp(db, "10.88.0.1", b"\x01\x02\x03") is None   # a truncated header: dropped
    assert _raw_udp(db, "10.88.0.1", os.urandom(7)) is None
    # two questions in one query: FORMERR
    two_q = dns.message.make_query("web", "A")
    two_q.question.append(dns.rrset.RRset(dns.name.from_text("db"), 1, 1))
    reply = _raw_udp(db, "10.88.0.1", two_q.to_wire())
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    # over TCP: garbage gets FORMERR on the same connection
    with db.entered():
        conn = socket.create_connection(("10.88.0.1", 53), timeout=3)
    with conn:
        conn.sendall(struct.pack("!H", len(garbage)) + garbage)
        head = conn.recv(2)
        reply = conn.recv(struct.unpack("!H", head)[0])
    assert reply[:2] == b"\x42\x42" and dns.rcode.from_flags(struct.unpack("!H", reply[2:4])[0], 0) == dns.rcode.FORMERR
    assert answers(ask(db, "10.88.0.1", "web")) == [ip_of(web_res)]
    assert answers(ask(db, "10.88.0.1", "web", tcp=True)) == [ip_of(web_res)]


@pytest.mark.parametrize("where", ["K8S_POD_NAME", "alias", "domainName"])
def test_names_that_are_not_dns_labels_are_refused_naming_the_value(cni, container_ns, tmp_path, dns_dir, where):
    bad = "bad name!"
    net = conflist(tmp_path, dns_dir, **({"domainName": "bad..domain"} if where == "domainName" else {}))
    with pytest.raises(PluginFailed) as failed:
        attach(cni, net, container_ns, WEB_ID, bad if where == "K8S_POD_NAME" else "web",
               aliases=[bad] if where == "alias" else None)
    assert failed.value.code == 7
    assert (repr(bad) if where != "domainName" else "bad..domain") in failed.value.msg
    assert resolver_pid(dns_dir) is None
    assert not (dns_dir / "dnsnet.json").exists()


@pytest.mark.parametrize("key,value", [("upstreams", ["not-an-ip"]), ("dataDir", "relative/dir"),
                                       ("domainName", 5)])
def test_bad_options_are_refused_naming_key_and_value(cni, container_ns, tmp_path, dns_dir, key, value):
    net = conflist(tmp_path, dns_dir, **{key: value})
    with pytest.raises(PluginFailed) as failed:
        attach(cni, net, container_ns, WEB_ID, "web")
    assert failed.value.code == 7
    assert key in failed.value.msg and repr(value[0] if isinstance(value, list) else value) in failed.value.msg
    assert resolver_pid(dns_dir) is None


def test_add_without_a_gateway_in_prev_result_is_refused(cni, container_ns, tmp_path, dns_dir):
    net = conflist(tmp_path, dns_dir)
    conf = dict(net["plugins"][1], name=net["name"], cniVersion="1.0.0",
                prevResult={"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": container_ns.path}],
                            "ips": [{"address": "10.88.0.5/24", "interface": 0}]})
    inv = cni.invoke("dnsname", "ADD", conf, container=container_ns, args="K8S_POD_NAME=web")
    assert inv.rc != 0 and inv.reply["code"] == 7 and "gateway" in inv.reply["msg"]
    assert resolver_pid(dns_dir) is None and not (dns_dir / "dnsnet.json").exists()


def test_last_delete_stops_the_resolver_and_leaves_nothing_behind(cni, make_netns, tmp_path, dns_dir):
    net = conflist(tmp_path, dns_dir)
    a, b = make_netns("pynt-a"), make_netns("pynt-b")
    res_a = attach(cni, net, a, WEB_ID, "web")
    pid = resolver_pid(dns_dir)
    assert pid is not None
    res_b = attach(cni, net, b, DB_ID, "db")
    assert resolver_pid(dns_dir) == pid   # one resolver per network
    detach(cni, net, a, WEB_ID, res_a)
    assert resolver_pid(dns_dir) == pid
    detach(cni, net, b, DB_ID, res_b)
    assert stopped(dns_dir, pid)
    assert sorted(os.listdir(dns_dir)) == ["dnsname.lock"]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_the_first_query_sent_as_add_returns_is_answered_without_a_retry(cni, make_netns, tmp_path, dns_dir, tcp):
    net = conflist(tmp_path, dns_dir)
    web = make_netns("pynt-web")
    res = attach(cni, net, web, WEB_ID, "web")
    try:
        # ADD did not wait for the resolver: no serving process before a client asks
        assert resolver_pid(dns_dir) is not None
        assert json.loads((dns_dir / "dnsnet.pid").read_text()).get("server") is None
        # one query, sent once: it waits in the socket the plugin bound until the resolver reads it
        assert answers(ask(web, "10.88.0.1", "web", tcp=tcp, timeout=30)) == [ip_of(res)]
        assert resolvers_of(dns_dir) == resolver_processes(dns_dir)
    finally:
        detach(cni, net, web, WEB_ID, res)


def test_an_add_right_after_the_last_delete_gets_a_new_resolver_on_the_same_port(cni, make_netns, tmp_path,
                                                                                  dns_dir):
    net = conflist(tmp_path, dns_dir)
    web = make_netns("pynt-web")
    res = attach(cni, net, web, WEB_ID, "web")
    assert answers(ask(web, "10.88.0.1", "web")) == [ip_of(res)]
    old = resolver_processes(dns_dir)
    detach(cni, net, web, WEB_ID, res)
    res = attach(cni, net, web, DB_ID, "db")   # (the killed resolver may hold port 53 a moment longer)
    try:
        assert answers(ask(web, "10.88.0.1", "db", timeout=30)) == [ip_of(res)]
        assert ask(web, "10.88.0.1", "web.dns.pynet").rcode() == dns.rcode.NXDOMAIN   # today's records
        assert wait_until(lambda: not any(syscalls.is_alive(pid, None) for pid in old))
    finally:
        detach(cni, net, web, DB_ID, res)


def test_a_gateway_port_held_by_another_server_fails_add_naming_it(cni, host_ns, container_ns, tmp_path, dns_dir):
    net = conflist(tmp_path, dns_dir)
    with host_ns.entered():
        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with squatter:
        squatter.setsockopt(socket.SOL_IP, 15, 1)   # IP_FREEBIND: the bridge is not there yet
        squatter.bind(("10.88.0.1", 53))
        with pytest.raises(PluginFailed) as failed:
            attach(cni, net, container_ns, WEB_ID, "web")
    assert "10.88.0.1 port 53" in failed.value.msg
    assert resolver_pid(dns_dir) is None and not (dns_dir / "dnsnet.json").exists()


def test_gc_removes_records_of_invalid_attachments(two, cni, dns_dir):
    net, ctrs = two
    (web, web_res), (db, _) = ctrs["web"], ctrs["db"]
    conf = dict(net["plugins"][1], name=net["name"], cniVersion="1.1.0")
    cni.gc("dnsname", conf, [{"containerID": WEB_ID, "ifname": "eth0"}])
    assert ask(web, "10.88.0.1", "db.dns.pynet").rcode() == dns.rcode.NXDOMAIN
    assert answers(ask(web, "10.88.0.1", "web")) == [ip_of(web_res)]
    cni.gc("dnsname", conf, [])
    assert resolver_pid(dns_dir) is None


def test_check_fails_when_the_records_are_gone(two, cni, dns_dir):
    net, ctrs = two
    db, db_res = ctrs["db"]
    cni.check_chain(net, db, db_res, container_id=DB_ID, args="IgnoreUnknown=1")
    data = json.loads((dns_dir / "dnsnet.json").read_text())
    del data["records"][f"{DB_ID}/eth0"]
    (dns_dir / "dnsnet.json").write_text(json.dumps(data))
    inv = cni.invoke("dnsname", "CHECK", dict(net["plugins"][1], name=net["name"], cniVersion="1.0.0",
                                              prevResult=db_res), container=db, container_id=DB_ID)
    assert inv.rc != 0 and "no records" in inv.reply["msg"]


def test_concurrent_adds_share_one_resolver_and_every_name_resolves(cni, make_netns, tmp_path, dns_dir):
    net = conflist(tmp_path, dns_dir)
    ctrs = [(make_netns(f"pynt-p{i}"), f"{i:02x}" * 32, f"c{i}") for i in range(6)]
    results: dict[str, dict] = {}

    def add(ns, cid, name):
        results[name] = attach(cni, net, ns, cid, name)

    threads = [threading.Thread(target=add, args=c) for c in ctrs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert sorted(results) == [name for _, _, name in ctrs]
        pid = resolver_pid(dns_dir)
        for ns, _, name in ctrs:
            assert answers(ask(ctrs[0][0], "10.88.0.1", name)) == [ip_of(results[name])]
        assert resolvers_of(dns_dir) == resolver_processes(dns_dir)
    finally:
        for ns, cid, name in ctrs:
            if name in results:
                detach(cni, net, ns, cid, results[name])
    assert stopped(dns_dir, pid)


def test_status_reports_ready(cni, tmp_path, dns_dir):
    cni.status("dnsname", dict(conflist(tmp_path, dns_dir)["plugins"][1], name="dnsnet", cniVersion="1.1.0"))


def test_through_the_daemon_the_resolver_runs_detached_and_answers(daemon_cni, make_netns, tmp_path, dns_dir,
                                                                  pynet_daemon):
    net = conflist(tmp_path, dns_dir)
    with web_and_db(daemon_cni, net, make_netns) as ctrs:
        (_web, res_web), (db, _res_db) = ctrs["web"], ctrs["db"]
        pid = resolver_pid(dns_dir)
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        assert int(fields[3]) == pid   # a session of its own: detached from the daemon that started it
        assert answers(ask(db, "10.88.0.1", "web")) == [ip_of(res_web)]
    assert resolver_pid(dns_dir) is None and stopped(dns_dir, pid)


def test_dual_stack_container_has_a_aaaa_and_ptr_records(cni, make_netns, tmp_path, dns_dir):
    net = conflist(tmp_path, dns_dir, subnet="10.92.0.0/24,fd92::/64")
    with web_and_db(cni, net, make_netns) as ctrs:
        (_web, res_web), (db, _res_db) = ctrs["web"], ctrs["db"]
        assert res_web["dns"]["nameservers"] == ["10.92.0.1", "fd92::1"]
        v4, v6 = sorted((ip["address"].split("/")[0] for ip in res_web["ips"]), key=lambda a: ":" in a)
        assert answers(ask(db, "10.92.0.1", "web", "A")) == [v4]
        assert answers(ask(db, "10.92.0.1", "web.dns.pynet", "AAAA")) == [v6]
        assert answers(ask(db, "10.92.0.1", dns.reversename.from_address(v6), "PTR")) == ["web.dns.pynet."]
        assert answers(ask(db, "10.92.0.1", "web", "ANY")) == sorted([v4, v6])
        assert answers(ask(db, "fd92::1", "web", "AAAA", timeout=5)) == [v6]   # over IPv6 too


# -- podman 4.3 (CNI backend) with dnsname in its conflist ------------------------------------------------------
from tests.test_podman import plugin_dir, podman  # noqa: E402,F401  (the isolated podman of test_podman)
from tests.podman.harness import IMAGE  # noqa: E402


@pytest.fixture
def podman_dns(podman):
    """The podman fixture, and the dnsname dataDir inside its temp dir; a resolver left there by a failed
    test is killed by PID before podman's teardown looks for leftover processes."""
    yield podman, podman.path("dns")
    pid_file = podman.path("dns", "pmdns.pid")
    if os.path.exists(pid_file):
        info = json.loads(open(pid_file).read())
        if syscalls.is_alive(info.get("pid"), info.get("startTime")):
            os.kill(info["pid"], signal.SIGKILL)


def test_podman_containers_resolve_each_other_through_dnsname(podman_dns, host_ns):
    pm, data_dir = podman_dns
    pm.import_busybox()
    conflist = pm.write_conflist("pmdns", "cni-pmdns", "10.89.12.0/24", "10.89.12.1")
    conflist["plugins"].append({"type": "dnsname", "domainName": "dns.podman", "dataDir": data_dir,
                                "upstreams": [], "capabilities": {"aliases": True}})
    with open(pm.path("net.d", "pmdns.conflist"), "w") as f:
        json.dump(conflist, f)
    pm("run", "-d", "--name", "web", "--network", "pmdns", "--network-alias", "www", "--cgroup-parent",
       pm.cgroup_parent, IMAGE, "httpd", "-f", "-p", "80", "-h", "/www")
    web_ip = json.loads(pm.out("inspect", "web"))[0]["NetworkSettings"]["Networks"]["pmdns"]["IPAddress"]
    for name in ("web", "web.dns.podman", "www"):
        out = pm.out("run", "--rm", "--network", "pmdns", "--cgroup-parent", pm.cgroup_parent, IMAGE,
                     "/bin/busybox", "nslookup", name)   # the server from resolv.conf
        assert web_ip in out, (name, out)
    # podman sees dnsname in the conflist: its containers' resolv.conf names the gateway
    resolv = pm.out("run", "--rm", "--network", "pmdns", "--cgroup-parent", pm.cgroup_parent, IMAGE,
                    "cat", "/etc/resolv.conf")
    assert "nameserver 10.89.12.1" in resolv and "dns.podman" in resolv, resolv
    resolver = json.loads(open(os.path.join(data_dir, "pmdns.pid")).read())["pid"]
    pm("rm", "-f", "-t", "0", "web")
    assert wait_until(lambda: not syscalls.is_alive(resolver, None))
    assert not os.path.exists(os.path.join(data_dir, "pmdns.json"))


DNS_BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "dns_bench.py")


@pytest.mark.skipif(not os.access("/usr/sbin/dnsmasq", os.X_OK), reason="dnsmasq not installed")
def test_dns_bench_prints_every_row_and_cleans_up():
    before = set(os.listdir("/run/netns"))
    proc = subprocess.run([sys.executable, DNS_BENCH, "--local", "30", "--forwarded", "10"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=120)
    stdout, stderr = proc.stdout, proc.stderr
    assert proc.returncode == 0, stderr
    rows = [line.split() for line in stdout.splitlines()[1:9]]
    assert [(r[0], r[1]) for r in rows] == [(q, s) for q in ("local", "local-0x20", "fwd-first", "fwd-cached")
                                           for s in ("pynet", "dnsmasq")], stdout
    assert all(r[3] == "0" for r in rows), stdout   # no failed query
    assert "fwd-cached: pynet/dnsmasq qps" in stdout
    # this run's namespaces and processes are gone
    left = set(os.listdir("/run/netns")) - before
    assert not [n for n in left if n.startswith(("pynt-dbh-", "pynt-dbc-", "pynt-dbu-"))]
    assert subprocess.run(["pgrep", "-f", "pynet-dnsbench-"], stdout=subprocess.PIPE).stdout == b""
