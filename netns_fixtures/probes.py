"""Traffic between namespaces: ICMP echo over a raw socket (this image has no `ping`), TCP and UDP.

Sockets are created inside the source namespace and then used from this thread; a socket stays in the
namespace it was born in. Every probe is bounded in time and only ever aims at addresses the caller put
inside namespaces it created.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import struct
import threading
import time

from .namespaces import Netns


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_echo(src: Netns, dst: str, timeout: float = 2.0, attempts: int = 3) -> bool:
    """True when ``dst`` answers an ICMP (v4 or v6) echo sent from inside ``src``.

    Sends up to ``attempts`` echo requests spread over ``timeout`` and, as ping does, accepts a reply to any
    of them: a slow first reply (neighbour resolution along a busy path) still counts. A reply must carry
    this call's identifier and payload, so concurrent probes (raw sockets see every echo reply) never
    count each other's answers.
    """
    addr = ipaddress.ip_address(dst)
    v6 = addr.version == 6
    with src.entered():
        sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                             socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    ident = int.from_bytes(os.urandom(2), "big")
    echo_request, echo_reply = (128, 129) if v6 else (8, 0)
    payload = os.urandom(16)
    deadline = time.monotonic() + timeout
    try:
        for seq in range(attempts):
            header = struct.pack("!BBHHH", echo_request, 0, 0, ident, seq)
            csum = 0 if v6 else _checksum(header + payload)  # the kernel fills ICMPv6 checksums
            sock.sendto(struct.pack("!BBHHH", echo_request, 0, csum, ident, seq) + payload, (str(addr), 0))
            next_send = min(deadline, time.monotonic() + timeout / attempts)
            while (left := next_send - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                data, peer = sock.recvfrom(4096)
                icmp = data if v6 else data[(data[0] & 0x0F) * 4:]
                if len(icmp) < 8 or ipaddress.ip_address(peer[0].split("%")[0]) != addr:
                    continue
                kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
                if kind == echo_reply and rid == ident and rseq <= seq and icmp[8:] == payload:
                    return True
            if time.monotonic() >= deadline:
                break
        return False
    finally:
        sock.close()


@contextlib.contextmanager
def _serving(srv: socket.socket, serve_one):
    """Runs ``serve_one(srv)`` in a thread until the block ends; yields the bound port. The short socket
    timeout lets the loop notice the end; a failed exchange (timeout, reset peer) just moves on."""
    srv.settimeout(0.2)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                serve_one(srv)
            except OSError:
                continue

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        srv.close()


def _family(ip: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(ip).version == 6 else socket.AF_INET


@contextlib.contextmanager
def tcp_listener(ns: Netns, ip: str = "0.0.0.0", port: int = 0, banner: bytes = b"pynet\n"):
    """A TCP server inside ``ns`` answering every connection with ``banner``; yields the bound port."""
    with ns.entered():
        srv = socket.socket(_family(ip), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((ip, port))
    srv.listen(64)

    def answer(srv):
        conn, _ = srv.accept()
        with conn:
            conn.sendall(banner)

    with _serving(srv, answer) as bound:
        yield bound


def tcp_connect(src: Netns, dst: str, port: int, timeout: float = 2.0, expect: bytes | None = b"pynet\n",
                source: str | None = None) -> bool:
    """True when a TCP connection from ``src`` to dst:port succeeds (and reads ``expect``)."""
    with src.entered():
        sock = socket.socket(_family(dst), socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if source:
            sock.bind((source, 0))
        sock.connect((dst, port))
        if expect is None:
            return True
        data = b""
        while len(data) < len(expect):
            chunk = sock.recv(64)
            if not chunk:
                break
            data += chunk
        return data == expect
    except OSError:
        return False
    finally:
        sock.close()


@contextlib.contextmanager
def udp_echo_server(ns: Netns, ip: str = "0.0.0.0", port: int = 0, bufsize: int = 2048):
    """A UDP server inside ``ns`` echoing each datagram (up to ``bufsize`` bytes); yields the bound port."""
    with ns.entered():
        srv = socket.socket(_family(ip), socket.SOCK_DGRAM)
    srv.bind((ip, port))

    def echo(srv):
        data, peer = srv.recvfrom(bufsize)
        srv.sendto(data, peer)

    with _serving(srv, echo) as bound:
        yield bound


def udp_exchange(src: Netns, dst: str, port: int, timeout: float = 2.0, attempts: int = 3) -> bool:
    """True when a datagram from ``src`` to dst:port comes back."""
    with src.entered():
        sock = socket.socket(_family(dst), socket.SOCK_DGRAM)
    sock.settimeout(timeout / attempts)
    try:
        for _ in range(attempts):
            payload = os.urandom(8)
            try:
                sock.sendto(payload, (dst, port))
                data, _ = sock.recvfrom(2048)
                if data == payload:
                    return True
            except OSError:
                continue
        return False
    finally:
        sock.close()
