"""macvlan: the container gets a macvlan link on a master interface (the reference's `macvlan`).

ADD: master (config, else the default route's interface) -> macvlan born in the container netns under a
temporary name, renamed to CNI_IFNAME -> IPAM (optional) -> addresses and routes, or just up. A failed ADD
removes the link it made and releases the lease. DEL, CHECK, STATUS and GC: cni_plugins/container_links.py.
"""

from __future__ import annotations

from cni_plugins import container_links
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config as macvlan_config
from .config import MacvlanConfig

_registered = False


def _register_bc_queue_len() -> None:
    """pyroute2 0.7 knows macvlan attributes up to IFLA_MACVLAN_MACADDR_COUNT; the broadcast queue length
    (Linux 5.11+) comes after it. Registered once per process: a fresh class (not a subclass, whose
    compiled attribute map pyroute2 would take from the parent) with the full map."""
    global _registered
    if _registered:
        return
    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg, macvx_data

    class macvlan_data(nla):
        prefix = "IFLA_"
        nla_map = macvx_data.nla_map + (("IFLA_MACVLAN_BC_QUEUE_LEN", "uint32"),
                                         ("IFLA_MACVLAN_BC_QUEUE_LEN_USED", "uint32"),
                                         ("IFLA_MACVLAN_BC_CUTOFF", "int32"))
        mode = macvx_data.mode
        flags = macvx_data.flags
        macaddr_mode = macvx_data.macaddr_mode
        macaddr_data = macvx_data.macaddr_data

    ifinfmsg.ifinfo.register_link_kind(module={"macvlan": macvlan_data})
    _registered = True


def link_data(conf: MacvlanConfig) -> dict:
    """The IFLA_INFO_DATA of the new link, as pyroute2 keys."""
    data: dict = {"macvlan_mode": conf.mode}
    if conf.bcqueuelen:
        _register_bc_queue_len()
        data["macvlan_bc_queue_len"] = conf.bcqueuelen
    return data


def add(req: Request, conf: MacvlanConfig, handles: Handles) -> Result:
    master = container_links.find_master(handles, conf.link)
    return container_links.add(
        req, handles, "macvlan",
        lambda container: container_links.create_link(req, container, "macvlan", master, conf.link.mtu, conf.mac,
                                                      **link_data(conf)),
        conf.ipam, conf.dns)


def check(req: Request, conf: MacvlanConfig, handles: Handles) -> None:
    container_links.check(req, handles, "macvlan", "macvlan", conf.ipam,
                          {"IFLA_MACVLAN_MODE": ("mode", conf.mode)},
                          master=lambda: container_links.find_master(handles, conf.link))


PLUGIN = Plugin(name="macvlan", load_config=macvlan_config.load, add=add, delete=container_links.delete,
                check=check, status=container_links.status, gc=container_links.gc,
                load_teardown_config=container_links.teardown_config)
