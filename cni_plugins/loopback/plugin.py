"""loopback: brings `lo` up in the container (ADD) and down again (DEL, which tolerates a vanished netns)."""

from __future__ import annotations

import ipaddress

from cni_plugins import netlink
from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin, no_config
from cni_plugins.skel import Request
from cni_plugins.types import Interface, IPConfig, Result


def add(req: Request, _conf, handles: Handles) -> Result:
    ns = handles.container()
    netlink.set_up(ns.ipr, netlink.link_index(ns.ipr, "lo"))
    result = Result(interfaces=[Interface("lo", "00:00:00:00:00:00", req.netns)])
    result.ips = [IPConfig(ipaddress.ip_interface("127.0.0.1/8"), interface=0),
                  IPConfig(ipaddress.ip_interface("::1/128"), interface=0)]
    return result


def delete(req: Request, _conf, handles: Handles) -> None:
    ns = handles.container_if_present()
    if ns is None:
        return
    index = netlink.link_index(ns.ipr, "lo")
    if index is not None:
        ns.ipr.link("set", index=index, state="down")


def check(req: Request, _conf, handles: Handles) -> None:
    msg = netlink.link(handles.container().ipr, "lo")
    if msg is None or not msg["flags"] & 1:
        raise CNIError(INTERNAL, "loopback interface is down")


PLUGIN = Plugin(name="loopback", load_config=no_config, add=add, delete=delete, check=check)
