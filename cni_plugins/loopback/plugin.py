"""loopback: brings `lo` up in the container (ADD) and down again (DEL, which tolerates a vanished netns).

One flag of one link: an interface ioctl on a socket made in the container's namespace does it, so this
plugin never imports a netlink library (most of a standalone loopback run was that import)."""

from __future__ import annotations

import _socket
import contextlib
import ipaddress

from cni_plugins import netlink
from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin, no_config
from cni_plugins.skel import Request
from cni_plugins.results import Interface, IPConfig, Result


def _socket_in(ns):
    return contextlib.closing(ns.make(_socket.socket, _socket.AF_INET, _socket.SOCK_DGRAM))


def add(req: Request, _conf, handles: Handles) -> Result:
    with _socket_in(handles.container()) as sock:
        if not netlink.ioctl_set_up(sock, "lo"):
            raise CNIError(INTERNAL, "the container network namespace has no loopback interface")
    result = Result(interfaces=[Interface("lo", "00:00:00:00:00:00", req.netns)])
    result.ips = [IPConfig(ipaddress.ip_interface("127.0.0.1/8"), interface=0),
                  IPConfig(ipaddress.ip_interface("::1/128"), interface=0)]
    return result


def delete(req: Request, _conf, handles: Handles) -> None:
    ns = handles.container_if_present()
    if ns is None:
        return
    with _socket_in(ns) as sock:
        netlink.ioctl_set_up(sock, "lo", up=False)


def check(req: Request, _conf, handles: Handles) -> None:
    with _socket_in(handles.container()) as sock:
        flags = netlink.ioctl_flags(sock, "lo")
    if flags is None or not flags & netlink.IFF_UP:
        raise CNIError(INTERNAL, "loopback interface is down")


PLUGIN = Plugin(name="loopback", load_config=no_config, add=add, delete=delete, check=check)
