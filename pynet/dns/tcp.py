"""The resolver's TCP side: a thread per connection, length-prefixed messages (RFC 7766), answered through
dnspython (server.Resolver); forwarded questions are looked up in, and added to, the cache the UDP side
uses, so a name forwarded over one transport is cached for both."""

from __future__ import annotations

import socket
import struct
import threading
import time

from . import wire
from .udp import forwarded_key

IDLE_TIMEOUT = 10.0


def serve(sock: socket.socket, resolver, cache) -> None:
    while True:
        try:
            conn, peer = sock.accept()
        except OSError:
            continue
        threading.Thread(target=_connection, args=(conn, peer, resolver, cache), daemon=True).start()


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _answer(query_wire: bytes, client: str, resolver, cache) -> bytes | None:
    recs = resolver.records
    recs.refresh()
    scanned = wire.scan(query_wire)
    cache_key = None
    if scanned is not None and not recs.maybe_local(scanned[0][1]):
        cache_key = forwarded_key(recs, scanned[0], client)
        cached = cache.get(cache_key, time.monotonic())
        if cached is not None:
            return wire.splice(query_wire, scanned[1], cached)
    query, immediate = resolver.parse(query_wire)
    if query is None:
        return immediate
    data = resolver.respond(query, client, tcp=True)
    if cache_key is not None:
        cache.put(cache_key, data, time.monotonic())
    return data


def _connection(conn: socket.socket, peer, resolver, cache) -> None:
    conn.settimeout(IDLE_TIMEOUT)
    try:
        while True:
            head = _recv_exact(conn, 2)
            if head is None:
                return
            query = _recv_exact(conn, struct.unpack("!H", head)[0])
            if query is None:
                return
            data = _answer(query, peer[0], resolver, cache)
            if data is None:
                return
            conn.sendall(struct.pack("!H", len(data)) + data)
    except (OSError, socket.timeout):
        pass
    finally:
        conn.close()
