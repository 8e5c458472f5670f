"""Cables between namespaces: one veth pair, each end born in its namespace, addressed and up."""

from __future__ import annotations

import ipaddress
import os

from cni_plugins import netlink

from .namespaces import Netns


def veth_link(a: Netns, a_ifname: str, b: Netns, b_ifname: str,
              a_addresses=(), b_addresses=(), mtu: int | None = None) -> None:
    """Connects ``a`` and ``b``; addresses are 'ip/prefix' strings. IPv6 addresses skip DAD, so the
    first packets of a test are not dropped while an address is still tentative."""
    fd = os.open(b.path, os.O_RDONLY)
    try:
        netlink.create_veth(a.ipr, a_ifname, b_ifname, fd, mtu=mtu)
    finally:
        os.close(fd)
    for ns, ifname, addresses in ((a, a_ifname, a_addresses), (b, b_ifname, b_addresses)):
        index = netlink.link_index(ns.ipr, ifname)
        for address in addresses:
            netlink.add_address(ns.ipr, index, ipaddress.ip_interface(address), nodad=True)
        netlink.set_up(ns.ipr, index)
