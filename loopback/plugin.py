"""loopback: brings `lo` up in the container (ADD) and down again (DEL, which tolerates a vanished netns)."""

from __future__ import annotations

import ipaddress

from cni_plugins import netlink
from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.netns import ContainerNetns
from cni_plugins.skel import Request
from cni_plugins.types import Interface, IPConfig, Result


def add(req: Request) -> Result:
    with ContainerNetns.open(req.netns) as ns:
        netlink.set_up(ns.ipr, netlink.link_index(ns.ipr, "lo"))
    result = Result(interfaces=[Interface("lo", "00:00:00:00:00:00", req.netns)])
    result.ips = [IPConfig(ipaddress.ip_interface("127.0.0.1/8"), interface=0),
                  IPConfig(ipaddress.ip_interface("::1/128"), interface=0)]
    return result


def delete(req: Request) -> None:
    ns = ContainerNetns.maybe_open(req.netns)
    if ns is None:
        return
    with ns:
        index = netlink.link_index(ns.ipr, "lo")
        if index is not None:
            ns.ipr.link("set", index=index, state="down")


def check(req: Request) -> None:
    with ContainerNetns.open(req.netns) as ns:
        msg = netlink.link(ns.ipr, "lo")
        if msg is None or not msg["flags"] & 1:
            raise CNIError(INTERNAL, "loopback interface is down")
