"""Between the dhcp plugin and its daemon: one request per connection on the daemon's unix socket, framed
as pynet's daemon protocol (cni_plugins/wire.py: length-prefixed fields, fds by SCM_RIGHTS).

Request: method, JSON arguments; fds: the container's network namespace when the plugin has it open (the
daemon never resolves CNI_NETNS itself: the path may exist only in the runtime's mount namespace).
Reply: CNI error code ("0" for success), JSON (the answer, or the error's msg and details).
"""

from __future__ import annotations

import json

from cni_plugins import wire
from cni_plugins.errors import CNIError, IO_FAILURE, TRY_AGAIN_LATER

ALLOCATE, RELEASE, CHECK, GC, STATUS = "DHCP.Allocate", "DHCP.Release", "DHCP.Check", "DHCP.GC", "DHCP.Status"
METHODS = (ALLOCATE, RELEASE, CHECK, GC, STATUS)


def call(socket_path: str, method: str, args: dict, fds=(), unavailable_code: int = TRY_AGAIN_LATER) -> dict:
    """The daemon's answer; its error as CNIError. No daemon listening is ``unavailable_code``, naming the
    socket (the reference: "error dialing DHCP daemon")."""
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.connect(socket_path)
        except OSError as exc:
            raise CNIError(unavailable_code, f"error dialing DHCP daemon: dial unix {socket_path}: "
                           f"{exc.strerror or exc}", "start it with `dhcp daemon` (the dhcp plugin executable "
                           "with the argument daemon; -socketpath for another socket than /run/cni/dhcp.sock)") from None
        try:
            wire.send_with_fds(sock, wire.pack(method.encode(), json.dumps(args).encode()), list(fds))
            code, body = wire.recv_fields(sock, 2)
        except (OSError, ConnectionError) as exc:
            raise CNIError(IO_FAILURE, f"error calling {method}: the DHCP daemon at {socket_path} went away "
                           f"({exc})") from None
    finally:
        sock.close()
    reply = json.loads(body) if body else {}
    if code != b"0":
        raise CNIError(int(code), f"error calling {method}: {reply.get('msg', '')}", reply.get("details", ""))
    return reply


def receive(sock) -> tuple[str, dict, list[int]]:
    """(method, args, fds) of one request; the fds are closed if it is malformed. EOFError: the client
    hung up without a request."""
    first, fds = wire.recv_with_fds(sock)
    try:
        if not first:
            raise EOFError("the client sent nothing")
        method, body = wire.recv_fields(sock, 2, first)
        args = json.loads(body)
        if not isinstance(args, dict):
            raise ValueError("arguments are not a JSON object")
        return method.decode("utf-8", "replace"), args, fds
    except BaseException:
        for fd in fds:
            wire.posix.close(fd)
        raise


def reply(sock, code: int, body: dict) -> None:
    sock.sendall(wire.pack(str(code).encode(), json.dumps(body).encode()))
