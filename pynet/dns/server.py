"""The resolver of one network (aardvark-dns's shape): answers the network's container names on its gateway
addresses, port 53, UDP and TCP, and forwards everything else to upstream resolvers.

This module is the serving process: forked by the network's watchdog (watchdog.py, what the dnsname
plugin starts in the network namespace where the bridge lives) at the first query, with the sockets the
plugin bound. It reads ``DIR/NAME.json`` (cni_plugins/dnsname/records.py) and re-reads it when inotify
says it changed, so the plugin only rewrites the file. Wire format: dnspython; the hot paths (udp.py,
wire.py, cache.py) send stored bytes.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct
import threading

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from cni_plugins.dnsname import records as store

from . import tcp as tcp_service
from .cache import AnswerCache
from .udp import UdpService

TTL = 60
UPSTREAM_TIMEOUT = 2.0

log = logging.getLogger("pynet.dns")


class Records:
    """The network's names as last read from its records file (re-read when the file changes)."""

    def __init__(self, data_dir: str, network: str):
        self.data_dir = data_dir
        self.network = network
        self.path = store.records_path(data_dir, network)
        self._stamp = None
        self._lock = threading.Lock()
        self.domain = dns.name.from_text("dns.pynet")
        self.names: dict[str, dict[str, list]] = {}   # label -> {"A": [rdata], "AAAA": [rdata]}
        self.ptr: dict[str, object] = {}   # reverse name -> PTR rdata
        self.upstreams: tuple[str, ...] = ()
        self.client_upstreams: dict[str, tuple[str, ...]] = {}
        self.listen: list[str] = []
        self.loop_guard: set[str] = set()
        # Local answers by wire.scan key (same question, flags and EDNS: same answer), emptied whenever
        # the records are read again (a new ``generation``).
        self.answers: dict[tuple, bytes] = {}
        self.same_query: dict[bytes, bytes] = {}   # query bytes after the ID -> answer bytes after it
        self.generation = 0
        self.local_wire: frozenset[bytes] = frozenset()   # bare names and reverse names we answer
        self.domain_wire = self.domain.to_wire()
        self.subnets: set = set()
        self.client_allowed: dict[str, bool] = {}
        self.refresh()

    def serves(self, client: str) -> bool:
        """Whether ``client`` may see this network's names: an address of its subnets (its containers) or
        of this host's resolver addresses (the host itself, CHECK). Containers of other networks get none."""
        allowed = self.client_allowed.get(client)
        if allowed is None:
            try:
                address = ipaddress.ip_address(client.split("%")[0])
            except ValueError:
                return False
            if address.version == 6 and address.ipv4_mapped:
                address = address.ipv4_mapped
            allowed = (str(address) in self.listen or address.is_loopback
                       or any(address in subnet for subnet in self.subnets))
            self.client_allowed[client] = allowed
        return allowed

    def maybe_local(self, name_wire: bytes) -> bool:
        """Whether a lower-case wire name may be answered from the records (False: surely forwarded)."""
        return name_wire in self.local_wire or name_wire.endswith(self.domain_wire)

    def refresh(self) -> None:
        stamp = store.stamp(self.path)
        if stamp == self._stamp:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            self._load(store.load(self.data_dir, self.network))
            self._stamp = stamp

    def _load(self, data: dict) -> None:
        names: dict[str, dict[str, list]] = {}
        ptr: dict[str, object] = {}
        client_upstreams: dict[str, list[str]] = {}
        domain = dns.name.from_text(data.get("domain") or "dns.pynet")
        for record in data["records"].values():
            labels = [record.get("name"), *(record.get("aliases") or ()), record.get("shortId")]
            labels = [label.lower() for label in labels if label]
            ips = [ip for ip in record.get("ips") or () if _is_ip(ip)]
            for label in labels:
                entry = names.setdefault(label, {"A": [], "AAAA": []})
                for ip in ips:
                    kind = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
                    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(kind), ip)
                    if rdata not in entry[kind]:
                        entry[kind].append(rdata)
            if labels:
                target = f"{labels[0]}.{domain.to_text(omit_final_dot=True)}."
                for ip in ips:
                    ptr[store.reverse_name(ip)] = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.PTR, target)
                    if record.get("upstreams"):
                        client_upstreams[ip] = tuple(record["upstreams"])
        self.domain, self.names, self.ptr, self.client_upstreams = domain, names, ptr, client_upstreams
        self.domain_wire = domain.to_wire().lower()
        self.local_wire = frozenset([dns.name.from_text(label).to_wire().lower() for label in names]
                                    + [dns.name.from_text(reverse).to_wire().lower() for reverse in ptr])
        self.answers, self.same_query = {}, {}
        self.generation += 1
        subnets = set()
        for record in data["records"].values():
            for subnet in record.get("subnets") or ():
                try:
                    subnets.add(ipaddress.ip_network(subnet, strict=False))
                except ValueError:
                    pass
        self.subnets = subnets
        self.client_allowed = {}
        self.upstreams = tuple(u for u in data.get("upstreams") or () if _is_ip(u))
        self.listen = store.listen_addresses(data)
        # Never forward to a pynet resolver (this one or another network's): a forwarding loop.
        self.loop_guard = store.all_resolver_addresses(self.data_dir) | set(self.listen)


def _is_ip(value) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except (TypeError, ValueError):
        return False


def _formerr(wire: bytes) -> bytes | None:
    """A header-only FORMERR for bytes that are not a query dnspython can read; None (drop) when there is
    not even a whole header to answer."""
    if len(wire) < 12:
        return None
    (flags,) = struct.unpack("!H", wire[2:4])
    if flags & dns.flags.QR:
        return None   # a response sent to us: never answer one (no reflection loops)
    reply = dns.message.Message(id=struct.unpack("!H", wire[:2])[0])
    reply.flags = dns.flags.QR | (flags & dns.flags.RD)
    reply.set_rcode(dns.rcode.FORMERR)
    return reply.to_wire()


class Resolver:
    def __init__(self, records: Records, timeout: float = UPSTREAM_TIMEOUT):
        self.records = records
        self.timeout = timeout

    # -- answering ----------------------------------------------------------------------------------
    def local(self, query: dns.message.Message, client: str) -> dns.message.Message | None:
        """The answer from this network's records, or None when the name is not ours to answer."""
        question = query.question[0]
        rdtype = question.rdtype
        qname = question.name
        recs = self.records
        if question.rdclass != dns.rdataclass.IN:
            return None   # (CHAOS and the like: the upstream's business)
        if not recs.serves(client):
            if not qname.is_subdomain(recs.domain):
                return None
            reply = self._answer(query, {})
            reply.set_rcode(dns.rcode.REFUSED)
            return reply
        if rdtype == dns.rdatatype.PTR:
            target = recs.ptr.get(qname.to_text(omit_final_dot=True).lower())
            if target is None:
                return None
            return self._answer(query, {dns.rdatatype.PTR: [target]})
        if qname.is_subdomain(recs.domain):
            relative = qname.relativize(recs.domain)
            label = relative.to_text().lower() if len(relative) == 1 else None
            if relative == dns.name.empty:
                return self._answer(query, {})
            entry = recs.names.get(label) if label else None
            if entry is None:
                reply = self._answer(query, {})
                reply.set_rcode(dns.rcode.NXDOMAIN)
                return reply
        elif len(qname) == 2:   # a bare name ("web.")
            entry = recs.names.get(qname.labels[0].decode("ascii", "replace").lower())
            if entry is None:
                return None
        else:
            return None
        wanted = {dns.rdatatype.A: ("A",), dns.rdatatype.AAAA: ("AAAA",),
                  dns.rdatatype.ANY: ("A", "AAAA")}.get(rdtype, ())
        return self._answer(query, {dns.rdatatype.from_text(k): entry[k] for k in wanted if entry[k]})

    def _answer(self, query, data: dict) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.AA | dns.flags.RA
        name = query.question[0].name
        for rdtype, values in data.items():
            reply.answer.append(dns.rrset.from_rdata_list(name, TTL, values))
        return reply

    def forward(self, query: dns.message.Message, client: str, tcp: bool) -> dns.message.Message:
        # Imported here, by the first query that needs it (TCP, or one udp.py does not forward itself):
        # with the DoH clients it loads, it would double the serving process's start, which the first
        # query of a network waits for.
        import dns.query

        upstreams = self.records.client_upstreams.get(client) or self.records.upstreams
        for upstream in upstreams:
            if upstream in self.records.loop_guard:
                continue
            try:
                if tcp:
                    return dns.query.tcp(query, upstream, timeout=self.timeout)
                return dns.query.udp(query, upstream, timeout=self.timeout, ignore_unexpected=True)
            except (dns.exception.DNSException, OSError, ValueError) as exc:
                log.info("upstream %s failed for %s: %s", upstream, query.question[0].name, exc)
        reply = dns.message.make_response(query)
        reply.flags |= dns.flags.RA
        reply.set_rcode(dns.rcode.SERVFAIL)
        return reply

    def parse(self, wire: bytes) -> tuple[dns.message.Message | None, bytes | None]:
        """(query, None) for a query to answer, (None, reply-or-None) for anything else."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None, _formerr(wire)
        if query.flags & dns.flags.QR:
            return None, None
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            reply = dns.message.make_response(query)
            reply.question = query.question[:1]
            reply.set_rcode(dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR)
            return None, reply.to_wire()
        return query, None

    def respond(self, query: dns.message.Message, client: str, tcp: bool) -> bytes:
        try:   # (the records refreshed by the caller, which looked at them first: tcp._answer)
            reply = self.local(query, client)
            if reply is None:
                reply = self.forward(query, client, tcp)
        except Exception:
            log.exception("failed to answer %s", query.question[0].name)
            reply = dns.message.make_response(query)
            reply.set_rcode(dns.rcode.SERVFAIL)
        return self.render(query, reply, tcp)

    def render(self, query: dns.message.Message, reply: dns.message.Message, tcp: bool) -> bytes:
        reply.id = query.id
        if tcp:
            return reply.to_wire()
        limit = max(512, query.payload if query.edns >= 0 else 512)
        try:
            return reply.to_wire(max_size=limit)
        except dns.exception.TooBig:
            short = dns.message.make_response(query)
            short.flags |= dns.flags.TC | (reply.flags & dns.flags.AA)
            return short.to_wire()


class Server:
    def __init__(self, data_dir: str, network: str, sockets: dict[str, list[socket.socket]]):
        """``sockets``: {address: [UDP, TCP]}, bound by the plugin or the watchdog (sockets.py)."""
        self.records = Records(data_dir, network)
        self.resolver = Resolver(self.records)
        self.sockets = sockets

    def serve(self) -> None:
        """Answers on every bound address (in the serving process, watchdog.Watchdog's child)."""
        cache = AnswerCache()
        for _udp, tcp in self.sockets.values():
            threading.Thread(target=tcp_service.serve, args=(tcp, self.resolver, cache), daemon=True).start()
        UdpService(self.resolver, [udp for udp, _tcp in self.sockets.values()], cache).run()
