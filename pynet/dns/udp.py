"""The resolver's UDP side: one thread, one epoll over the listening sockets and the forwarding sockets.

A plain query (wire.scan) is answered from bytes where it can be: the network's own names from answers
rendered once per records version (Records.answers), other names from the forwarded-answer cache
(cache.AnswerCache). A name that is surely not ours goes to the upstream as the client's own bytes under a
fresh random ID from one of a few randomly bound sockets; the reply is matched by socket, ID, source and
question, and sent back under the client's ID. No thread hop, no dnspython on these paths. Names that may
be ours on a miss, and every unusual query, go through dnspython (server.Resolver).
"""

from __future__ import annotations

import collections
import logging
import random
import select
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import dns.rcode

from cni_plugins import syscalls

from . import wire
from .cache import AnswerCache

FORWARD_SOCKETS = 4   # per address family: the upstream sees a few source ports, chosen per query
LOCAL_ANSWERS = 4096
QUERY_MAX = 4096   # a longer query is cut and gets FORMERR (a smaller buffer: less to allocate per query)
RECORDS_EVENTS = syscalls.IN_CLOSE_WRITE | syscalls.IN_MOVED_TO | syscalls.IN_MOVED_FROM | syscalls.IN_DELETE

log = logging.getLogger("pynet.dns")


def forwarded_key(records, key: tuple, client: str) -> tuple:
    """The cache key of a forwarded question: the client's upstreams (its own, or the network's) too."""
    return records.client_upstreams.get(client) or records.upstreams, key


def _remember(table: dict, key, data: bytes) -> None:
    """Keeps a local answer; a full table starts again (names are few, a full one means odd queries)."""
    if len(table) >= LOCAL_ANSWERS:
        table.clear()
    table[key] = data


class _Pending:
    __slots__ = ("listener", "peer", "query", "qend", "cache_key", "upstreams", "tried", "upstream")

    def __init__(self, listener, peer, query, qend, cache_key, upstreams):
        self.listener, self.peer, self.query, self.qend = listener, peer, query, qend
        self.cache_key, self.upstreams, self.tried, self.upstream = cache_key, upstreams, 0, None


class UdpService:
    def __init__(self, resolver, listeners: list[socket.socket], cache: AnswerCache):
        self.resolver = resolver
        self.records = resolver.records
        self.cache = cache
        self.epoll = select.epoll()
        self.listeners: dict[int, socket.socket] = {}
        self.uplinks: dict[int, socket.socket] = {}
        self.uplinks_by_family: dict[int, list[socket.socket]] = {}
        self.pending: dict[tuple[int, int], _Pending] = {}
        self.expiry: collections.deque = collections.deque()   # (deadline, pending key, pending), in order
        self.generation = self.records.generation
        self.odd_queries = ThreadPoolExecutor(max_workers=8, thread_name_prefix="forward")
        for sock in listeners:
            sock.setblocking(False)
            self.listeners[sock.fileno()] = sock
            self.epoll.register(sock.fileno(), select.EPOLLIN)
        # The records file changes only by the plugin's writes: inotify tells, so a query costs no stat.
        # (The event is queued before the plugin's rename returns, so before any client can ask after it;
        # each poll handles it first.)
        try:
            self.records_watch = syscalls.inotify_watch(self.records.data_dir, RECORDS_EVENTS)
            self.epoll.register(self.records_watch, select.EPOLLIN)
        except OSError as exc:
            log.warning("no inotify (%s): the records file is checked per query", exc)
            self.records_watch = -1
        self._refresh()   # (a write between the records' first read and the watch: no event told of it)

    def run(self) -> None:
        poll, handle, expiry = self.epoll.poll, self._handle, self.expiry
        while True:
            timeout = max(0.0, expiry[0][0] - time.monotonic()) if expiry else -1
            try:
                handle(poll(timeout))
                if expiry:
                    self._expire(time.monotonic())
            except Exception:   # one bad message must not end the process (and lose the cache)
                log.exception("udp loop")

    # One datagram per readiness (epoll is level-triggered: the rest are reported again); draining until
    # EAGAIN would cost a failing syscall per query when queries come one at a time.
    def _handle(self, events: list) -> None:
        if len(events) > 1:
            for fd, _events in events:
                if fd == self.records_watch:
                    self._records_changed()
        for fd, _events in events:
            listener = self.listeners.get(fd)
            if listener is not None:
                try:
                    query, peer = listener.recvfrom(QUERY_MAX)
                except OSError:
                    continue
                self.answer(listener, query, peer)
            elif fd in self.uplinks:
                self._reply_from(self.uplinks[fd])
            elif fd == self.records_watch and len(events) == 1:
                self._records_changed()

    # -- queries from clients ---------------------------------------------------------------------------

    def _records_changed(self) -> None:
        syscalls.drain(self.records_watch)
        self._refresh()

    def _refresh(self) -> None:
        recs = self.records
        recs.refresh()
        if recs.generation != self.generation:
            # a bare name or an address forwarded before may be a container's now
            self.generation = recs.generation
            self.cache.drop(lambda key: wire.is_single_label_or_ptr(key[1]))

    def answer(self, listener: socket.socket, query: bytes, peer) -> None:
        if self.records_watch < 0:
            self._refresh()
        recs = self.records
        client = peer[0]
        allowed = recs.serves(client)
        if allowed:
            # the same bytes as a query answered before (most stub resolvers repeat theirs exactly)
            same = recs.same_query.get(query[2:])
            if same is not None:
                listener.sendto(query[:2] + same, peer)
                return
        scanned = wire.scan(query)
        if scanned is None:
            self._answer_odd(listener, query, peer)
            return
        key, qend, limit = scanned
        if allowed:
            local = recs.answers.get(key)
            if local is not None and len(local) <= limit:
                data = wire.splice(query, qend, local)
                listener.sendto(data, peer)
                _remember(recs.same_query, query[2:], data[2:])
                return
        if recs.maybe_local(key[1]):
            if self._answer_local(listener, query, peer, key, allowed):
                return
        cache_key = forwarded_key(recs, key, client)
        cached = self.cache.get(cache_key, time.monotonic())
        if cached is not None and len(cached) <= limit:
            listener.sendto(wire.splice(query, qend, cached), peer)
            return
        candidates = [u for u in cache_key[0] if u not in recs.loop_guard]
        if not candidates:
            listener.sendto(wire.servfail(query, qend), peer)
            return
        self._send_upstream(_Pending(listener, peer, query, qend, cache_key, candidates))

    def _answer_local(self, listener, query: bytes, peer, key, allowed: bool) -> bool:
        """Answers a name that may be the network's through dnspython; False when it is not ours."""
        resolver = self.resolver
        message, immediate = resolver.parse(query)
        if message is None:
            if immediate:
                listener.sendto(immediate, peer)
            return True
        answers, same_query = self.records.answers, self.records.same_query   # (a reload replaces them)
        reply = resolver.local(message, peer[0])
        if reply is None:
            return False
        data = resolver.render(message, reply, tcp=False)
        listener.sendto(data, peer)
        if allowed and reply.rcode() != dns.rcode.REFUSED and not data[2] & wire.TC:
            _remember(answers, key, data)
            _remember(same_query, query[2:], data[2:])
        return True

    def _answer_odd(self, listener, query: bytes, peer) -> None:
        """A query wire.scan does not take (several questions, a compressed name, EDNS version 1...):
        dnspython, and a pool thread when it is forwarded."""
        resolver = self.resolver
        message, immediate = resolver.parse(query)
        if message is None:
            if immediate:
                listener.sendto(immediate, peer)
            return
        reply = resolver.local(message, peer[0])
        if reply is not None:
            listener.sendto(resolver.render(message, reply, tcp=False), peer)
            return

        def forward_and_send():
            listener.sendto(resolver.render(message, resolver.forward(message, peer[0], tcp=False), tcp=False), peer)

        self.odd_queries.submit(forward_and_send)

    # -- the upstream side ------------------------------------------------------------------------------
    def _uplink(self, upstream: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in upstream else socket.AF_INET
        socks = self.uplinks_by_family.get(family)
        if socks is None:
            socks = self.uplinks_by_family[family] = []
            for _ in range(FORWARD_SOCKETS):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                sock.setblocking(False)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))   # a random port each
                self.uplinks[sock.fileno()] = sock
                self.epoll.register(sock.fileno(), select.EPOLLIN)
                socks.append(sock)
        return random.choice(socks)

    def _send_upstream(self, pending: _Pending) -> None:
        while pending.tried < len(pending.upstreams):
            upstream = pending.upstreams[pending.tried]
            sock = self._uplink(upstream)
            fd = sock.fileno()
            qid = random.getrandbits(16)
            while (fd, qid) in self.pending:
                qid = random.getrandbits(16)
            try:
                sock.sendto(qid.to_bytes(2, "big") + pending.query[2:], (upstream, 53))
            except OSError as exc:
                log.info("upstream %s: %s", upstream, exc.strerror)
                pending.tried += 1
                continue
            pending.upstream = upstream
            self.pending[(fd, qid)] = pending
            self.expiry.append((time.monotonic() + self.resolver.timeout, (fd, qid), pending))
            return
        pending.listener.sendto(wire.servfail(pending.query, pending.qend), pending.peer)

    def _reply_from(self, sock: socket.socket) -> None:
        try:
            response, source = sock.recvfrom(65535)
        except OSError:
            return
        if len(response) < 12:
            return
        key = (sock.fileno(), response[0] << 8 | response[1])
        pending = self.pending.get(key)
        if pending is None or source[1] != 53 or source[0].split("%")[0] != pending.upstream:
            return
        qend = pending.qend
        if response[12:qend].lower() != pending.query[12:qend].lower() or not response[2] & 0x80:
            return   # not the answer to this question
        del self.pending[key]
        try:
            pending.listener.sendto(wire.splice(pending.query, qend, response), pending.peer)
        except OSError as exc:
            log.info("reply to %s: %s", pending.peer, exc.strerror)
        self.cache.put(pending.cache_key, response, time.monotonic())

    def _expire(self, now: float) -> None:
        while self.expiry and self.expiry[0][0] <= now:
            _deadline, key, pending = self.expiry.popleft()
            if self.pending.get(key) is not pending:
                continue   # answered
            del self.pending[key]
            log.info("upstream %s timed out", pending.upstream)
            pending.tried += 1
            try:
                self._send_upstream(pending)
            except OSError as exc:
                log.info("reply to %s: %s", pending.peer, exc.strerror)
