"""The resolver's listening sockets: port 53 of a gateway address, UDP and TCP. The dnsname plugin binds
them (in the host namespace of its request) and hands them to the resolver's watchdog by inheritance, so a
query sent once ADD has returned waits in their buffers for the resolver, however long it takes to start.
No dnspython here: the plugin and the watchdog import this module."""

from __future__ import annotations

import errno
import ipaddress
import socket
import time

PORT = 53
IP_FREEBIND = 15   # bind before the address is up (an IPv6 gateway still in DAD)
BACKLOG = 64
STALE_WAIT = 2.0   # seconds an address in use may take to be freed (a resolver killed just before)


def _listen(address: str, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:   # (not UDP: there it would let a second resolver share the port)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        sock.bind((address, PORT))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def listen(address: str, wait: float = 0.0) -> list[socket.socket]:
    """[UDP, TCP] bound on ``address`` port 53 (in the caller's network namespace). An address in use is
    tried again for ``wait`` seconds: the resolver stopped by the last DEL is killed, not waited for, and
    frees its sockets a moment later. OSError naming the address when it stays taken."""
    deadline = time.monotonic() + wait
    while True:
        try:
            udp = _listen(address, socket.SOCK_DGRAM)
            try:
                return [udp, _listen(address, socket.SOCK_STREAM)]
            except BaseException:
                udp.close()
                raise
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                time.sleep(0.002)
                continue
            raise OSError(exc.errno, f"cannot listen on {address} port {PORT}: {exc.strerror}") from None


def adopt(fds: list[int]) -> dict[str, list[socket.socket]]:
    """The sockets inherited as descriptors ``fds``, by address: {address: [UDP, TCP]}."""
    out: dict[str, list[socket.socket]] = {}
    for fd in fds:
        sock = socket.socket(fileno=fd)
        pair = out.setdefault(sock.getsockname()[0], [None, None])
        pair[0 if sock.type == socket.SOCK_DGRAM else 1] = sock
    return out
