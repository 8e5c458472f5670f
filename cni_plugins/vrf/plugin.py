"""vrf: a chained plugin that puts CNI_IFNAME under a VRF device in the container netns (the reference's `vrf`).

ADD: the VRF ``vrfname`` is adopted (its table must be ``table`` when one is given) or created (``table``, or
the first table id no VRF of the namespace uses) and set up; the interface is enslaved to it, its global IPv6
addresses (which the kernel drops when the link is cycled) restored, and its non-connected routes moved to
the VRF's table. The result is prevResult unchanged. A failed ADD releases the interface and removes a VRF it
created. DEL: the interface leaves the VRF; the VRF goes with its last member. A kernel without the vrf
driver: code 50 naming it, nothing left behind.
"""

from __future__ import annotations

from cni_plugins import netlink
from cni_plugins.container_links import link_refused
from cni_plugins.undo import undo_on_failure
from cni_plugins.errors import CNIError, INTERNAL, invalid_config
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config as vrf_config
from .config import VrfConfig

AF_INET, AF_INET6 = 2, 10
MAIN_TABLE = 254
RT_SCOPE_UNIVERSE = 0


def _vrf(ipr, conf: VrfConfig):
    """The VRF link of ``vrfname``, or None; code 7 when the name is taken by a link of another kind."""
    msg = netlink.link(ipr, conf.vrfname)
    if msg is not None and netlink.kind_of(msg) != "vrf":
        raise invalid_config("vrfname", conf.vrfname, f"the container has a {netlink.kind_of(msg) or 'plain'!r} link "
                             "of that name, not a VRF")
    return msg


def _table(msg) -> int:
    return netlink.info_data(msg, "IFLA_VRF_TABLE") or 0


def first_free_table(ipr) -> int:
    """The reference's findFreeRoutingTableID: the lowest id from 1 that no VRF of the namespace uses."""
    taken = {_table(msg) for msg in netlink.dump(ipr.get_links) if netlink.kind_of(msg) == "vrf"}
    table = 1
    while table in taken:
        table += 1
    return table


def _members(ipr, vrf_index: int) -> list[str]:
    return [msg.get_attr("IFLA_IFNAME") for msg in netlink.dump(ipr.get_links)
            if msg.get_attr("IFLA_MASTER") == vrf_index]


def _global_routes(ipr, index: int) -> list[dict]:
    """Routes through the interface that are neither local nor connected (scope universe), as kwargs to put
    them back in another table."""
    out = []
    for family in (AF_INET, AF_INET6):
        for msg in netlink.dump(ipr.get_routes, family=family, table=MAIN_TABLE):
            if msg.get_attr("RTA_OIF") != index or msg["scope"] != RT_SCOPE_UNIVERSE:
                continue
            route = {"family": family, "dst_len": msg["dst_len"], "oif": index, "scope": msg["scope"],
                     "proto": msg["proto"], "type": msg["type"]}
            for attr, key in (("RTA_DST", "dst"), ("RTA_GATEWAY", "gateway"), ("RTA_PRIORITY", "priority"),
                              ("RTA_PREFSRC", "prefsrc")):
                if msg.get_attr(attr) is not None:
                    route[key] = msg.get_attr(attr)
            out.append(route)
    return out


def enslave(ipr, ifname: str, vrf_index: int, table: int, undo: list) -> None:
    """The reference's addInterface."""
    msg = netlink.link(ipr, ifname)
    if msg is None:
        raise CNIError(INTERNAL, f"interface {ifname!r} was not found in the container")
    if msg.get_attr("IFLA_MASTER"):
        raise CNIError(INTERNAL, f"interface {ifname!r} already has a master (index {msg.get_attr('IFLA_MASTER')})")
    index = msg["index"]
    before = netlink.addresses(ipr, index, family=6)
    routes = _global_routes(ipr, index)
    try:
        ipr.link("set", index=index, master=vrf_index)
    except Exception as exc:
        raise CNIError(INTERNAL, f"could not put {ifname!r} under VRF index {vrf_index}: {exc}") from None
    undo.append((f"{ifname} under the VRF", lambda: ipr.link("set", index=index, master=0)))
    after = set(netlink.addresses(ipr, index, family=6))
    for address in before:
        if address not in after:
            netlink.add_address(ipr, index, address, nodad=True)   # no DAD: the address was in use already
    for route in routes:
        try:
            ipr.route("replace", **dict(route, table=table))
        except Exception as exc:
            raise CNIError(INTERNAL, f"could not move route {route.get('dst', 'default')}/{route['dst_len']} of "
                           f"{ifname!r} to table {table}: {exc}") from None


def add(req: Request, conf: VrfConfig, handles: Handles) -> Result:
    prev = req.require_prev_result("vrf", f"it puts the interface {req.ifname!r} an earlier plugin created under "
                                          "a VRF")
    ipr = handles.container().ipr
    with undo_on_failure("vrf") as undo:
        msg = _vrf(ipr, conf)
        if msg is not None and conf.table and _table(msg) != conf.table:
            raise invalid_config("table", conf.table, f"VRF {conf.vrfname!r} already exists with table {_table(msg)}")
        if msg is None:
            table = conf.table or first_free_table(ipr)
            try:
                ipr.link("add", ifname=conf.vrfname, kind="vrf", vrf_table=table)
            except Exception as exc:
                raise link_refused("vrf", exc, f" {conf.vrfname!r}") from None
            undo.append(("VRF", lambda: netlink.delete_link(ipr, conf.vrfname)))
            msg = netlink.link(ipr, conf.vrfname)
            if msg is None:
                raise CNIError(INTERNAL, f"VRF {conf.vrfname!r} vanished after it was created")
            netlink.set_up(ipr, msg["index"])
        enslave(ipr, req.ifname, msg["index"], _table(msg), undo)
    return prev


def delete(req: Request, conf: VrfConfig, handles: Handles) -> None:
    ns = handles.container_if_present()
    if ns is None:
        return
    ipr = ns.ipr
    msg = netlink.link(ipr, conf.vrfname)
    if msg is None or netlink.kind_of(msg) != "vrf":
        return
    member = netlink.link(ipr, req.ifname)
    if member is not None and member.get_attr("IFLA_MASTER") == msg["index"]:
        ipr.link("set", index=member["index"], master=0)
    if not _members(ipr, msg["index"]):
        netlink.delete_link(ipr, conf.vrfname)


def check(req: Request, conf: VrfConfig, handles: Handles) -> None:
    req.require_prev_result("vrf", "CHECK needs the result of the ADD")
    ipr = handles.container().ipr
    msg = _vrf(ipr, conf)
    if msg is None:
        raise CNIError(INTERNAL, f"VRF {conf.vrfname!r} was not found in the container")
    if conf.table and _table(msg) != conf.table:
        raise CNIError(INTERNAL, f"VRF {conf.vrfname!r} has table {_table(msg)}, the config says {conf.table}")
    if req.ifname not in _members(ipr, msg["index"]):
        raise CNIError(INTERNAL, f"interface {req.ifname!r} is not under VRF {conf.vrfname!r}")


PLUGIN = Plugin(name="vrf", load_config=vrf_config.load, add=add, delete=delete, check=check)
