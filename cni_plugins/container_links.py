"""What the link-type plugins (macvlan, ipvlan, vlan, dummy) share: a link of some kind made for the container,
on a master interface or on none, named CNI_IFNAME there, given the IPAM result, undone when the ADD fails.

- ``link_options``: the ``master`` / ``mtu`` / ``linkInContainer`` keys every master-based plugin reads.
- ``find_master``: the master in the host netns (or the container's with ``linkInContainer``); without a
  ``master`` key, the interface of that namespace's default route (as the reference). The ``mtu`` asked for
  must not exceed the master's.
- ``create_link``: one RTM_NEWLINK. On the host it carries ``net_ns_fd`` so the link is born in the container
  under a temporary name (no clash with a host link called CNI_IFNAME) and is renamed there; with the master
  in the container (or no master) it is made there under its final name. A kernel without the driver for the
  kind answers EOPNOTSUPP: that is code 50 naming the missing driver.
- ``add``: the whole ADD around ``create_link``: IPAM (or a chained prevResult's IPs), addresses and routes,
  or just the link up for an L2-only network; every step undone in reverse on failure, so a failed ADD
  leaves no link and no lease.
- ``delete`` / ``check`` / ``status`` / ``gc``: the DEL (idempotent; the netns may be gone, the lease is
  released anyway), CHECK against prevResult, and STATUS / GC forwarded to IPAM.

Nothing here enters a namespace: the host and container handles do all the work.
"""

from __future__ import annotations

import contextlib
import errno
import os
from dataclasses import dataclass
from typing import Callable

from . import delegate, netlink, sysctl
from .config import option_bool, option_int, parse_dns, validate_link_name
from .errors import CNIError, INTERNAL, INVALID_CONFIG, PLUGIN_NOT_AVAILABLE, invalid_config
from .handles import Handles, NetnsHandle
from .netlink import netlink_error_code
from .skel import Request
from .results import DNS, Interface, Result
from .undo import undo_on_failure

AF_INET, AF_INET6 = 2, 10
MAIN_TABLE = 254
MAX_MTU = 65535
# The kernel modules that implement each link kind (what an administrator would load).
DRIVERS = {"macvlan": "macvlan", "ipvlan": "ipvlan", "vlan": "8021q", "dummy": "dummy", "vrf": "vrf"}


# -- config ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkOptions:
    """The keys of a plugin whose link hangs off a master interface."""
    master: str | None = None     # None: the interface of the default route
    mtu: int = 0                  # 0: the kernel's choice (the master's MTU)
    in_container: bool = False    # linkInContainer: the master is in the container netns


def link_options(req: Request, master_required: bool = False, why_required: str = "") -> LinkOptions:
    conf = req.config
    master = conf.get("master")
    if master in (None, ""):
        if master_required:
            raise invalid_config("master", master, why_required or "required: the interface to create the link on")
        master = None
    else:
        master = validate_link_name("master", master)
    mtu = option_int(conf, "mtu", 0, minimum=0, maximum=MAX_MTU)
    return LinkOptions(master, mtu, option_bool(conf, "linkInContainer"))


def ipam_options(req: Request, required: str = "") -> str | None:
    """The IPAM plugin's type; ``required``: why this plugin cannot go without one (code 7 then)."""
    ipam = delegate.ipam_type(req)
    if ipam is None and required:
        raise invalid_config("ipam", req.config.get("ipam"), required)
    return ipam


def dns_option(req: Request) -> DNS:
    return parse_dns(req.config.get("dns"))


@dataclass(frozen=True)
class Teardown:
    """What DEL and GC need of the config: only the IPAM plugin. A master that is gone, an MTU now too large
    or any other key gone bad since ADD must not keep a DEL from releasing the lease."""
    ipam: str | None = None


def teardown_config(req: Request) -> Teardown:
    return Teardown(delegate.ipam_type(req))


# -- the master -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Master:
    """The host link a container link hangs off, and the namespace it lives in."""
    name: str
    index: int
    mtu: int
    ns: NetnsHandle   # the namespace it lives in


def _where(in_container: bool) -> str:
    return "the container network namespace" if in_container else "the host network namespace"


def default_route_interface(ipr, where: str = "the host network namespace") -> str:
    """The interface of the first default route of the main table (IPv4 first, then IPv6), as the reference's
    getDefaultRouteInterfaceName. Code 7: without a ``master`` key there is nothing else to go by."""
    for family in (AF_INET, AF_INET6):
        for msg in netlink.dump(ipr.get_routes, family=family, table=MAIN_TABLE):
            oif = msg.get_attr("RTA_OIF")
            if msg["dst_len"] != 0 or msg.get_attr("RTA_DST") or not oif:
                continue
            try:
                return ipr.link("get", index=oif)[0].get_attr("IFLA_IFNAME")
            except Exception as exc:
                if netlink_error_code(exc) not in (errno.ENODEV, errno.ENOENT):
                    raise
    raise CNIError(INVALID_CONFIG, f"invalid master None: not set, and {where} has no default route whose "
                   "interface could be the master")


def find_master(handles: Handles, opts: LinkOptions, fallback: str | None = None) -> Master:
    """The master link (``opts.master``, else ``fallback``, else the default route's interface) and the check
    that ``mtu`` fits on it (the reference: 0 <= mtu <= the master's MTU)."""
    ns = handles.container() if opts.in_container else handles.host
    where = _where(opts.in_container)
    name = opts.master or fallback or default_route_interface(ns.ipr, where)
    msg = netlink.link(ns.ipr, name)
    if msg is None:
        raise invalid_config("master", name, f"no such interface in {where}")
    mtu = msg.get_attr("IFLA_MTU") or 0
    if opts.mtu > mtu:
        raise invalid_config("mtu", opts.mtu, f"larger than the MTU {mtu} of master {name!r} (must be 0..{mtu})")
    return Master(name, msg["index"], mtu, ns)


# -- links ----------------------------------------------------------------------------------------------------
def _strerror(exc: BaseException) -> str:
    code = netlink_error_code(exc)
    return os.strerror(code) if isinstance(code, int) and code > 0 else str(exc)


def link_refused(kind: str, exc: BaseException, on: str = "") -> CNIError:
    """The CNI error for a refused RTM_NEWLINK. EOPNOTSUPP for a new link is the kernel saying it has no
    driver for the kind (rtnl_newlink finds no rtnl_link_ops): the plugin cannot serve any ADD on this
    kernel, which the spec's code 50 (plugin not available) says."""
    if netlink_error_code(exc) == errno.EOPNOTSUPP:
        return CNIError(PLUGIN_NOT_AVAILABLE, f"the kernel has no {kind} driver (creating a link of kind {kind!r} "
                        f"failed: {_strerror(exc)}; module {DRIVERS.get(kind, kind)!r} is not loaded or not built)")
    return CNIError(INTERNAL, f"failed to create the {kind} link{on}: {_strerror(exc)}")


def require_absent(ipr, ifname: str) -> None:
    if netlink.link_index(ipr, ifname) is not None:
        raise CNIError(INTERNAL, f"container interface {ifname!r} already exists")


def create_link(req: Request, container: NetnsHandle, kind: str, master: Master | None = None,
                mtu: int = 0, mac: str | None = None, **data) -> Interface:
    """Creates CNI_IFNAME as a link of ``kind`` in the container (see the module doc); ``data`` are the kind's
    IFLA_INFO_DATA keys as pyroute2 spells them (``macvlan_mode``, ``vlan_id``, ...). Returns the container
    interface of the result, with the MAC the kernel gave it."""
    creator = master.ns if master is not None else container
    from_host = creator is not container
    name = netlink.random_veth_name("cni") if from_host else req.ifname
    kwargs: dict = {"ifname": name, "kind": kind, **data}
    if master is not None:
        kwargs["link"] = master.index
    if mtu:
        kwargs["mtu"] = mtu
    if mac:
        kwargs["address"] = mac
    if from_host:
        kwargs["net_ns_fd"] = container.fd
    try:
        creator.ipr.link("add", **kwargs)
    except Exception as exc:
        raise link_refused(kind, exc, f" on master {master.name!r}" if master is not None else "") from None
    if from_host:
        index = netlink.link_index(container.ipr, name)
        try:
            if index is None:
                raise CNIError(INTERNAL, f"the new {kind} link {name!r} is not in the container")
            container.ipr.link("set", index=index, ifname=req.ifname)
        except Exception as exc:
            with contextlib.suppress(Exception):
                netlink.delete_link(container.ipr, name)
            if isinstance(exc, CNIError):
                raise
            raise CNIError(INTERNAL, f"failed to rename the {kind} link to {req.ifname!r}: {_strerror(exc)}") from None
    return Interface(req.ifname, netlink.mac_by_name(container.ipr, req.ifname) or "", req.netns)



def _notify_neighbours(ns: NetnsHandle, ifname: str) -> None:
    """Gratuitous ARP / unsolicited NA when the addresses come up (best effort, as the reference)."""
    for family, key in ((4, "arp_notify"), (6, "ndisc_notify")):
        with contextlib.suppress(OSError):
            ns.sysctl_write(sysctl.iface_key(family, ifname, key), "1")


def add(req: Request, handles: Handles, plugin: str, create: Callable[[NetnsHandle], Interface],
        ipam: str | None, dns: DNS, ips_from_prev: bool = False) -> Result:
    """One ADD: ``create(container)`` makes the link; then IPAM (or, with ``ips_from_prev`` and no IPAM, a
    chained prevResult's IPs) configures it, or it is only set up (no IPAM: an L2-only interface)."""
    container = handles.container()
    require_absent(container.ipr, req.ifname)
    with undo_on_failure(plugin) as undo:
        iface = create(container)
        undo.append((f"{plugin} link", lambda: netlink.delete_link(container.ipr, req.ifname)))
        result = Result(interfaces=[iface])
        source = None
        if ipam:
            source = delegate.ipam_add(req, handles)
            undo.append(("IPAM lease", lambda: delegate.ipam_del(req, handles)))
            if not source.ips:
                raise CNIError(INTERNAL, f"IPAM plugin {ipam!r} returned no IP configuration")
        elif ips_from_prev and req.prev_result is not None and req.prev_result.ips:
            source = req.prev_result
        if source is not None:
            result.ips, result.routes, result.dns = source.ips, source.routes, source.dns
            for ip in result.ips:
                ip.interface = 0   # every address belongs to the one container interface
            _notify_neighbours(container, req.ifname)
            netlink.configure_interface(container.ipr, req.ifname, result, nodad=False)
        else:
            index = netlink.link_index(container.ipr, req.ifname)
            if index is None:
                raise CNIError(INTERNAL, f"container interface {req.ifname!r} vanished after it was created")
            netlink.set_up(container.ipr, index)
        if dns:
            result.dns = dns
        return result


def delete(req: Request, conf, handles: Handles) -> None:
    """Idempotent DEL: IPAM releases the lease first, as the reference (dhcp sends its DHCPRELEASE through
    the container link), also when the netns is gone; then the link goes if the netns and the link are
    still there, also when IPAM failed."""
    ns = handles.container_if_present()
    try:
        if conf.ipam:
            delegate.ipam_del(req, handles)
    finally:
        if ns is not None:
            netlink.delete_link(ns.ipr, req.ifname)


def container_interface(req: Request, prev: Result) -> Interface:
    """The prevResult interface that is CNI_IFNAME in this CNI_NETNS."""
    for iface in prev.interfaces:
        if iface.name == req.ifname and iface.sandbox == req.netns:
            return iface
    raise CNIError(INTERNAL, f"interface {req.ifname!r} in sandbox {req.netns!r} is not in prevResult")


def check(req: Request, handles: Handles, plugin: str, kind: str, ipam: str | None,
          expected: dict | None = None, master: Callable[[], Master] | None = None) -> None:
    """CHECK: IPAM's CHECK, then the container link of prevResult exists in CNI_NETNS, is a ``kind`` with
    the MAC of the result and the ``expected`` IFLA_INFO_DATA values ({attr: (key, value)}), the master is
    still there, and the result's addresses and routes are in place."""
    prev = req.require_prev_result(plugin, "CHECK needs the result of the ADD")
    if ipam:
        delegate.ipam_verb(req, handles, "CHECK")
    iface = container_interface(req, prev)
    ns = handles.container()
    if master is not None:
        master()
    msg = netlink.link(ns.ipr, req.ifname)
    if msg is None:
        raise CNIError(INTERNAL, f"container interface {req.ifname!r} was not found")
    if netlink.kind_of(msg) != kind:
        raise CNIError(INTERNAL, f"container interface {req.ifname!r} is not a {kind} link "
                       f"(kind {netlink.kind_of(msg)!r})")
    for attr, (key, want) in (expected or {}).items():
        have = msg.get_attr("IFLA_MTU") if attr == "IFLA_MTU" else netlink.info_data(msg, attr)
        if have != want:
            raise CNIError(INTERNAL, f"container {kind} {req.ifname!r} has {key} {have!r}, the config says {want!r}")
    if iface.mac and iface.mac != netlink.mac_of(msg):
        raise CNIError(INTERNAL, f"container interface {req.ifname!r} MAC {netlink.mac_of(msg)} does not match "
                       f"{iface.mac}")
    netlink.check_interface(ns.ipr, req.ifname, prev)


def status(req: Request, conf, handles: Handles) -> None:
    if conf.ipam:
        delegate.ipam_verb(req, handles, "STATUS")


def gc(req: Request, conf, handles: Handles) -> None:
    if conf.ipam:
        delegate.ipam_verb(req, handles, "GC")
