"""vlan: the container gets an 802.1q VLAN link on a master interface (the reference's `vlan`).

ADD: master -> vlan link (``vlanId``) born in the container netns under a temporary name, renamed to
CNI_IFNAME -> IPAM -> addresses and routes. A kernel without the 8021q driver: code 50 naming it, nothing
left behind. DEL, STATUS, GC: cni_plugins/container_links.py.
"""

from __future__ import annotations

from cni_plugins import container_links
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config as vlan_config
from .config import VlanConfig


def add(req: Request, conf: VlanConfig, handles: Handles) -> Result:
    master = container_links.find_master(handles, conf.link)
    return container_links.add(
        req, handles, "vlan",
        lambda container: container_links.create_link(req, container, "vlan", master, conf.link.mtu,
                                                      vlan_id=conf.vlan_id),
        conf.ipam, conf.dns)


def check(req: Request, conf: VlanConfig, handles: Handles) -> None:
    expected = {"IFLA_VLAN_ID": ("vlanId", conf.vlan_id)}
    if conf.link.mtu:
        expected["IFLA_MTU"] = ("mtu", conf.link.mtu)
    container_links.check(req, handles, "vlan", "vlan", conf.ipam, expected,
                          master=lambda: container_links.find_master(handles, conf.link))


PLUGIN = Plugin(name="vlan", load_config=vlan_config.load, add=add, delete=container_links.delete, check=check,
                status=container_links.status, gc=container_links.gc,
                load_teardown_config=container_links.teardown_config)
