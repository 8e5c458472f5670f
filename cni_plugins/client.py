"""The plugin executables' front door. It runs on every invocation, so it imports nothing beyond what
the interpreter has already loaded (sys, and ``posix`` under it) and the C module ``_socket``: ``json``
alone would cost more (it pulls in ``re``) than the whole request takes in the daemon, and even ``os``
(~1 ms: collections.abc, posixpath) is a seventh of the client's life, so the C module ``posix`` it wraps
serves instead (its environ holds bytes, which is what goes on the wire anyway).

VERSION is answered from a constant. Other verbs go to the resident pynet daemon when one is listening
(pynet/daemon), together with this process's network namespace as a file descriptor, so the daemon does
the work in the namespace the runtime called us in. Without a daemon, or when it goes away mid-request,
the same plugin code runs here (standalone): nothing depends on a service being up.

Wire format (both directions): a sequence of length-prefixed fields, each a 4-byte big-endian length and
the bytes. Request: plugin module, environment (``KEY=VALUE`` joined by NUL), stdin; the netns fd rides
on the first bytes as SCM_RIGHTS. Reply: exit code (decimal text), stdout text.
"""

import posix
import sys

DEFAULT_SOCKET = "/run/pynet/pynetd.sock"
# Opt-in auto-start: this file exists, or PYNET_DAEMON=autostart (runtimes pass plugins a bare
# environment, so the file is the switch that reaches them).
AUTOSTART_MARKER = "/etc/pynet/daemon-autostart"
_VERSION_REPLY = '{"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}\n'
_LOST = object()


def socket_path() -> str:
    """PYNET_SOCKET, else the default."""
    path = posix.environ.get(b"PYNET_SOCKET")
    return path.decode("utf-8", "surrogateescape") if path else DEFAULT_SOCKET


def pack(*fields: bytes) -> bytes:
    return b"".join(len(f).to_bytes(4, "big") + f for f in fields)


def recv_exact(sock, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_fields(sock, count: int, first: bytes = b"") -> list[bytes]:
    """Reads ``count`` length-prefixed fields; ``first`` holds bytes already read from the stream."""
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


def encode_env(environ) -> bytes:
    """``environ``: posix.environ (bytes, as the kernel gave it)."""
    return b"\0".join(k + b"=" + v for k, v in environ.items())


def decode_env(blob: bytes) -> dict:
    """As os.environ would read it (os.fsdecode without importing os)."""
    env = {}
    for item in blob.split(b"\0") if blob else ():
        key, _, value = item.partition(b"=")
        env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


def exists(path: str) -> bool:
    """os.path.exists, without os."""
    try:
        posix.stat(path)
    except OSError:
        return False
    return True


def connect(path: str):
    """A connected unix socket to the daemon, or None when nobody listens there."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def send_with_fds(sock, request: bytes, fds) -> None:
    """Sends one request; the fds ride on its first bytes (SCM_RIGHTS)."""
    import _socket

    rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)
    sent = sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
    if sent < len(request):
        sock.sendall(request[sent:])


def _via_daemon(plugin_module: str, stdin: bytes, path: str):
    """(exit code, reply text) from the daemon; None when no daemon takes the connection; _LOST when it
    took the request and then went away."""
    sock = connect(path)
    if sock is None:
        return None
    try:
        netns = posix.open("/proc/thread-self/ns/net", posix.O_RDONLY)
        try:
            send_with_fds(sock, pack(plugin_module.encode(), encode_env(posix.environ), stdin), [netns])
        finally:
            posix.close(netns)
        code, text = recv_fields(sock, 2)
        return int(code), text.decode("utf-8", "surrogateescape")
    except (ConnectionError, OSError, ValueError):
        return _LOST
    finally:
        sock.close()


def daemon_mode() -> bytes:
    """PYNET_DAEMON: auto (use a listening daemon), off, or autostart."""
    return posix.environ.get(b"PYNET_DAEMON", b"auto")


def _autostart_wanted() -> bool:
    mode = daemon_mode()
    return mode == b"autostart" or (mode == b"auto" and exists(AUTOSTART_MARKER))


def _autostart(path: str) -> None:
    """Starts `pynet daemon` in the background for the requests to come; this one is served standalone.

    Double fork: the daemon must be neither the runtime's child nor hold its stdout (the runtime reads
    our reply until EOF). Two plugins starting it at once are fine: the daemon's lock file admits one."""
    import os

    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execv(sys.executable, [sys.executable, "-I", "-m", "pynet.cli", "daemon", "--socket", path])
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _standalone(plugin_module: str, stdin: bytes) -> tuple:
    import json
    import os

    from .skel import handle

    code, reply = handle(plugin_module, os.environ, stdin)
    return code, (json.dumps(reply) + "\n") if reply is not None else ""


def run(plugin_module: str) -> None:
    command = posix.environ.get(b"CNI_COMMAND")
    if command == b"VERSION":
        sys.stdout.write(_VERSION_REPLY)
        sys.stdout.flush()
        sys.exit(0)
    stdin = sys.stdin.buffer.read()
    outcome = None
    path = socket_path()
    if daemon_mode() != b"off":
        if exists(path):
            outcome = _via_daemon(plugin_module, stdin, path)
        elif _autostart_wanted():
            _autostart(path)
    if outcome is _LOST:
        # The daemon died mid-request: whatever it half did is undone by a standalone DEL (idempotent),
        # then the request is served here, so the runtime sees one clean answer.
        if command == b"ADD":
            import os

            os.environ["CNI_COMMAND"] = "DEL"
            _standalone(plugin_module, stdin)
            os.environ["CNI_COMMAND"] = "ADD"
        outcome = None
    if outcome is None:
        outcome = _standalone(plugin_module, stdin)
    code, text = outcome
    if text:
        sys.stdout.write(text)
    sys.stdout.flush()
    # Interpreter teardown (finalizers of netlink and nft handles) is work nobody waits for but the
    # runtime: everything a plugin writes is closed and synced before it returns, so leave at once.
    posix._exit(code)
