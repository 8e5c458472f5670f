"""ipvlan: the container gets an ipvlan link on a master interface (the reference's `ipvlan`).

ADD: master (config; chained: prevResult's single interface; else the default route's interface) -> ipvlan
born in the container netns under a temporary name, renamed to CNI_IFNAME -> IPAM (or a chained prevResult's
IPs) -> addresses and routes. A kernel without the ipvlan driver: code 50 naming it, nothing left behind.
"""

from __future__ import annotations

from cni_plugins import container_links
from cni_plugins.errors import CNIError, INVALID_CONFIG
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config as ipvlan_config
from .config import IpvlanConfig


def _chained_master(req: Request, conf: IpvlanConfig) -> str | None:
    """Without ``master``, a chained ipvlan takes the single named interface of prevResult (as the reference)."""
    prev = req.prev_result
    if conf.link.master or prev is None:
        return None
    if len(prev.interfaces) == 1 and prev.interfaces[0].name:
        return prev.interfaces[0].name
    raise CNIError(INVALID_CONFIG, f"invalid master None: not set, and prevResult has {len(prev.interfaces)} "
                   "interfaces instead of the single named one a chained ipvlan takes as its master")


def link_data(conf: IpvlanConfig) -> dict:
    return {"ipvlan_mode": conf.mode_value}


def _master(req: Request, conf: IpvlanConfig, handles: Handles) -> container_links.Master:
    return container_links.find_master(handles, conf.link, _chained_master(req, conf))


def add(req: Request, conf: IpvlanConfig, handles: Handles) -> Result:
    master = _master(req, conf, handles)
    return container_links.add(
        req, handles, "ipvlan",
        lambda container: container_links.create_link(req, container, "ipvlan", master, conf.link.mtu,
                                                      **link_data(conf)),
        conf.ipam, conf.dns, ips_from_prev=True)


def check(req: Request, conf: IpvlanConfig, handles: Handles) -> None:
    container_links.check(req, handles, "ipvlan", "ipvlan", conf.ipam,
                          {"IFLA_IPVLAN_MODE": ("mode", conf.mode_value)},
                          master=lambda: _master(req, conf, handles))


PLUGIN = Plugin(name="ipvlan", load_config=ipvlan_config.load, add=add, delete=container_links.delete,
                check=check, status=container_links.status, gc=container_links.gc,
                load_teardown_config=container_links.teardown_config)
