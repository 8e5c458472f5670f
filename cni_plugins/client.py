"""The plugin executables' front door, stdlib only (it runs on every invocation, so it must be cheap).

VERSION is answered from a constant. Other verbs go to the resident pynet daemon when one is listening
(pynet/daemon), together with this process's network namespace as a file descriptor, so the daemon does
the work in the namespace the runtime called us in. Without a daemon, or when it goes away mid-request,
the same plugin code runs here (standalone): nothing depends on a service being up.
"""

import os
import sys

DEFAULT_SOCKET = "/run/pynet/pynetd.sock"
_VERSION_REPLY = '{"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}\n'
_HEADER = 4  # big-endian length prefix on every message


def socket_path(environ) -> str:
    return environ.get("PYNET_SOCKET") or DEFAULT_SOCKET


def _send_msg(sock, payload: bytes, fds=()) -> None:
    import array
    import socket

    data = len(payload).to_bytes(_HEADER, "big") + payload
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


def _recv_exact(sock, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ConnectionError("daemon closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_msg(sock) -> bytes:
    return _recv_exact(sock, int.from_bytes(_recv_exact(sock, _HEADER), "big"))


def _via_daemon(plugin_module: str, stdin: bytes, path: str):
    """(exit code, reply text) from the daemon; None when no daemon answers the connect."""
    import json
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.connect(path)
        except OSError:
            return None
        request = json.dumps({"plugin": plugin_module, "env": dict(os.environ),
                              "stdin": stdin.decode("utf-8", "surrogateescape")}).encode("utf-8", "surrogateescape")
        netns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _send_msg(sock, request, [netns])
        finally:
            os.close(netns)
        raw = recv_msg(sock)
        reply = json.loads(raw)
        return reply["code"], reply["reply"]
    except (ConnectionError, OSError, ValueError, KeyError):
        return "lost"
    finally:
        sock.close()


def _standalone(plugin_module: str, stdin: bytes) -> tuple:
    from .skel import handle
    import json

    code, reply = handle(plugin_module, os.environ, stdin)
    return code, (json.dumps(reply) + "\n") if reply is not None else ""


def run(plugin_module: str) -> None:
    if os.environ.get("CNI_COMMAND") == "VERSION":
        sys.stdout.write(_VERSION_REPLY)
        sys.stdout.flush()
        sys.exit(0)
    stdin = sys.stdin.buffer.read()
    outcome = None
    path = socket_path(os.environ)
    if os.environ.get("PYNET_DAEMON", "auto") != "off" and os.path.exists(path):
        outcome = _via_daemon(plugin_module, stdin, path)
    if outcome == "lost":
        # The daemon died mid-request: whatever it half did is undone by a standalone DEL (idempotent),
        # then the request is served here, so the runtime sees one clean answer.
        if os.environ.get("CNI_COMMAND") == "ADD":
            saved = os.environ["CNI_COMMAND"]
            os.environ["CNI_COMMAND"] = "DEL"
            _standalone(plugin_module, stdin)
            os.environ["CNI_COMMAND"] = saved
        outcome = None
    if outcome is None:
        outcome = _standalone(plugin_module, stdin)
    code, text = outcome
    if text:
        sys.stdout.write(text)
    sys.stdout.flush()
    sys.exit(code)
