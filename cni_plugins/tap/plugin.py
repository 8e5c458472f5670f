"""tap: a tap device created in the container netns (the reference's `tap`, for VMs run inside pods).

ADD: tap under a temporary name (a name collision must fail the rename, never attach to an existing tap)
-> MTU, MAC, renamed to CNI_IFNAME -> port of ``bridge`` (a bridge in the container netns) -> up -> IPAM
(optional) on the tap. A failed step deletes the tap and releases the lease.
DEL: the tap goes (only a tun/tap link of that name: another plugin's link is left alone), IPAM releases;
no link or no netns is fine.
"""

from __future__ import annotations

import contextlib
import os

from cni_plugins import delegate, netlink, sysctl
from cni_plugins.undo import undo_on_failure
from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Interface, Result

from cni_plugins.bridge.links import require_absent
from cni_plugins.host_device import attach

from . import config as tconf
from .config import TapConfig
from .tuntap import create_tap

NAME = "tap"
IFLA_TUN_TYPE_TAP = 2


def _set(ipr, index: int, what: str, **attrs) -> None:
    try:
        ipr.link("set", index=index, **attrs)
    except Exception as exc:
        raise CNIError(INTERNAL, f"failed to set the tap's {what}: {exc}") from None


def _bridge_index(ipr, name: str) -> int:
    msg = netlink.link(ipr, name)
    if msg is None or netlink.kind_of(msg) != "bridge":
        raise CNIError(INTERNAL, f"failed to get bridge {name!r}: "
                       + ("no such link" if msg is None else f"it is a {netlink.kind_of(msg) or 'device'}, not a bridge")
                       + " in the container network namespace")
    return msg["index"]


def add(req: Request, conf: TapConfig, handles: Handles) -> Result:
    ns = handles.container()
    require_absent(ns.ipr, req.ifname)
    with undo_on_failure(NAME) as undo:
        index = create_tap(ns, "tap" + os.urandom(5).hex(), conf.multi_queue, conf.owner, conf.group)
        undo.append(("the tap", lambda: ns.ipr.link("del", index=index)))
        if conf.mtu:
            _set(ns.ipr, index, f"mtu {conf.mtu}", mtu=conf.mtu)
        if conf.mac:
            _set(ns.ipr, index, f"MAC {conf.mac}", address=conf.mac)
        _set(ns.ipr, index, f"name {req.ifname!r}", ifname=req.ifname)
        if conf.bridge:
            _set(ns.ipr, index, f"master {conf.bridge!r}", master=_bridge_index(ns.ipr, conf.bridge))
        netlink.set_up(ns.ipr, index)
        result = Result(interfaces=[Interface(req.ifname, netlink.mac_by_name(ns.ipr, req.ifname) or "", req.netns)])
        if conf.ipam:
            with contextlib.suppress(OSError):  # best effort, as the reference
                ns.sysctl_write(sysctl.iface_key(4, req.ifname, "arp_notify"), "1")
            attach.ipam_onto(req, handles, ns.ipr, req.ifname, index, result, conf.ipam, undo)
        return attach.finish(result, conf.dns)


def _is_tun(msg) -> bool:
    return netlink.kind_of(msg) == "tun"


def delete(req: Request, conf: TapConfig, handles: Handles) -> None:
    ns = handles.container_if_present()
    if ns is not None:
        msg = netlink.link(ns.ipr, req.ifname)
        if msg is not None and _is_tun(msg):
            netlink.delete_link(ns.ipr, req.ifname)
    if conf.ipam:
        delegate.ipam_del(req, handles)


def check(req: Request, conf: TapConfig, handles: Handles) -> None:
    prev = req.require_prev_result(NAME, "CHECK needs the result of the ADD")
    ns = handles.container()
    if conf.ipam:
        delegate.ipam_verb(req, handles, "CHECK")
    iface = attach.sandbox_interface(req, prev, NAME)
    msg = attach.check_link(ns.ipr, iface, NAME)
    data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA") if _is_tun(msg) else None
    if data is None or data.get_attr("IFLA_TUN_TYPE") != IFLA_TUN_TYPE_TAP:
        raise CNIError(INTERNAL, f"{NAME}: interface {req.ifname!r} is not a tap device")
    netlink.check_interface(ns.ipr, req.ifname, prev)


PLUGIN = Plugin(name=NAME, load_config=tconf.load, add=add, delete=delete, check=check,
                status=attach.ipam_passthrough("STATUS"), gc=attach.ipam_passthrough("GC"),
                load_teardown_config=tconf.load_teardown)
