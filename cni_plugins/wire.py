"""The daemon's wire protocol, the one place it is written: framing, fd passing, request kinds and
socket discovery. Every party speaks it through this module: the plugin executables' front door
(cni_plugins/main.py), the daemon (pynet/daemon/server.py), the `pynet run` client (pynet/launcher/remote.py)
and the zygote (pynet/launcher/zygote.py).

It runs in every plugin invocation, so it imports nothing beyond ``sys`` and the C modules ``posix`` and
``_socket``: even ``os`` (~1 ms: collections.abc, posixpath) is a seventh of a thin client's life.

A message is a sequence of length-prefixed fields, each a 4-byte big-endian length and the bytes. The
first field of a request names its kind; file descriptors ride on the request's first bytes (SCM_RIGHTS).

``CNI`` request: kind, plugin name, environment (``KEY=VALUE`` joined by NUL), stdin, and the outcome of
opening ``CNI_NETNS`` on the client's side ("0": opened, its fd is the second one; else the errno in
decimal; "-" when there was no path). fds: the client's own network namespace (the plugin's "host"),
then, when opened, the container's. The client opens ``CNI_NETNS`` itself because the path may only
exist in its mount namespace (a runtime's private mount namespace, ``ip netns exec``).
Reply: exit code (decimal), stdout text.

``RUN`` request (`pynet run`, see pynet/launcher/remote.py): kind, argv (NUL-joined), environment, cwd,
umask (decimal), the names of the namespace fds; fds 0, 1, 2 and then those namespaces. Replies are
pairs: ``R`` reason (refused), ``A`` (accepted), ``X`` exit code; the client sends ``S`` signum.
"""

import posix
import sys

DEFAULT_SOCKET = "/run/pynet/pynetd.sock"
# Opt-in auto-start: this file exists, or PYNET_DAEMON=autostart (runtimes pass plugins a bare
# environment, so the file is the switch that reaches them).
AUTOSTART_MARKER = "/etc/pynet/daemon-autostart"

CNI = b"cni"
RUN = b"pynet-run"
# Fields after the kind, per kind.
FIELD_COUNT = {CNI: 4, RUN: 5}
MAX_FDS = 16
NETNS_NOT_GIVEN = b"-"
NETNS_OPENED = b"0"

# RUN replies and the client's signal message.
REFUSED, ACCEPTED, EXITED, SIGNAL = b"R", b"A", b"X", b"S"


# -- discovery ----------------------------------------------------------------------------------------------
def socket_path() -> str:
    """PYNET_SOCKET, else the default."""
    path = posix.environ.get(b"PYNET_SOCKET")
    return path.decode("utf-8", "surrogateescape") if path else DEFAULT_SOCKET


def daemon_mode() -> bytes:
    """PYNET_DAEMON: auto (use a listening daemon), off, or autostart."""
    return posix.environ.get(b"PYNET_DAEMON", b"auto")


def autostart_wanted() -> bool:
    mode = daemon_mode()
    return mode == b"autostart" or (mode == b"auto" and exists(AUTOSTART_MARKER))


def exists(path: str) -> bool:
    """os.path.exists, without os."""
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


def connect(path: str):
    """A connected unix stream socket, or None when nobody listens there."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


# -- framing ------------------------------------------------------------------------------------------------
def pack(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def unpack(blob: bytes, count: int) -> list:
    """``count`` fields of a message held whole (a SOCK_SEQPACKET datagram)."""
    out = []
    for _ in range(count):
        if len(blob) < 4:
            raise ValueError("truncated message")
        size = int.from_bytes(blob[:4], "big")
        if len(blob) < 4 + size:
            raise ValueError("truncated message")
        out.append(blob[4:4 + size])
        blob = blob[4 + size:]
    return out


def recv_exact(sock, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_fields(sock, count: int, first: bytes = b"") -> list:
    """Reads ``count`` length-prefixed fields from a stream; ``first`` holds bytes already read."""
    fields = []
    buffered = first
    for _ in range(count):
        if len(buffered) < 4:
            buffered += recv_exact(sock, 4 - len(buffered))
        size = int.from_bytes(buffered[:4], "big")
        body = buffered[4:4 + size]
        buffered = buffered[4 + size:]
        if len(body) < size:
            body += recv_exact(sock, size - len(body))
        fields.append(body)
    return fields


# -- fd passing ---------------------------------------------------------------------------------------------
def send_with_fds(sock, message: bytes, fds) -> None:
    """Sends one message; the fds ride on its first bytes (SCM_RIGHTS)."""
    import _socket

    rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    sent = sock.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)] if fds else [])
    if sent < len(message):
        sock.sendall(message[sent:])


def recv_with_fds(sock, size: int = 65536, max_fds: int = MAX_FDS, flags: int = 0) -> tuple:
    """(bytes, fds): one recvmsg; the fds are received close-on-exec."""
    import _socket

    msg, ancdata, _flags, _addr = sock.recvmsg(size, _socket.CMSG_SPACE(max_fds * 4),
                                               flags | _socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(int.from_bytes(data[i:i + 4], sys.byteorder, signed=True) for i in range(0, usable, 4))
    return msg, fds


def recv_request(sock) -> tuple:
    """(kind, the request's other fields, fds) from a stream connection; the fds are closed on failure."""
    first, fds = recv_with_fds(sock)
    try:
        if not first:
            raise ConnectionError("client went away")
        kind, rest = _take_field(sock, first)
        if kind not in FIELD_COUNT:
            raise ValueError(f"unknown request kind {kind[:32]!r}")
        return kind, recv_fields(sock, FIELD_COUNT[kind], rest), fds
    except BaseException:
        for fd in fds:
            posix.close(fd)
        raise


def _take_field(sock, buffered: bytes) -> tuple:
    """The first field of ``buffered`` (reading more from ``sock`` if needed), and the bytes after it."""
    if len(buffered) < 4:
        buffered += recv_exact(sock, 4 - len(buffered))
    end = 4 + int.from_bytes(buffered[:4], "big")
    if len(buffered) < end:
        buffered += recv_exact(sock, end - len(buffered))
    return buffered[4:end], buffered[end:]


# -- environments -------------------------------------------------------------------------------------------
def encode_env(environ) -> bytes:
    """``environ``: posix.environ (bytes, as the kernel gave it) or a str mapping."""
    return b"\0".join(_b(k) + b"=" + _b(v) for k, v in environ.items())


def decode_env(blob: bytes) -> dict:
    """As os.environ would read it (os.fsdecode without importing os)."""
    env = {}
    for item in blob.split(b"\0") if blob else ():
        key, _, value = item.partition(b"=")
        env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


def _b(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
