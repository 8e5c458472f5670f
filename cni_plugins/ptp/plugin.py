"""ptp: the container on a veth pair to the host, routed, not bridged (the reference's `ptp`; kind's default).

ADD: IPAM -> forwarding on in the host -> veth pair (the container end born in the container netns as
CNI_IFNAME, the host end a random ``veth…`` name, up) -> container side -> host side -> ipMasq -> result.
As the reference lays it out, for each IPAM address A (prefix P) with gateway G:

- container: A/P on CNI_IFNAME, IPAM's routes, then the connected route P is replaced by ``G/32 dev
  CNI_IFNAME scope link src A`` and ``P via G src A``: everything, the subnet included, goes through G;
- host: G/32 (/128) on the host veth and ``A/32 dev <host veth> scope host``.

Every step that changes something registers its undo: a failed ADD leaves no veth, lease or nft element.
ipMasq is owner-tagged elements of the masquerade table bridge uses (cni_plugins/masquerade.py).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress

from cni_plugins import container_links, delegate, masquerade, netlink, sysctl
from cni_plugins.errors import CNIError, INTERNAL, INVALID_CONFIG
from cni_plugins.handles import Handles, NetnsHandle
from cni_plugins.netlink import netlink_error_code
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Interface, IPConfig, Result, Route
from cni_plugins.undo import undo_on_failure

from . import config as ptp_config
from .config import PtpConfig

CONTAINER = 1  # the result's interfaces: the host veth, then the container end
MAIN_TABLE = 254
SCOPE_LINK, SCOPE_HOST, SCOPE_NOWHERE = 253, 254, 255  # NOWHERE: any scope, when deleting


def _family(version: int) -> int:
    return 10 if version == 6 else 2


def _host_prefix(address) -> int:
    return 32 if address.version == 4 else 128


def _route(ipr, verb: str, dst, dst_len: int, index: int, **extra) -> None:
    """One main-table route; adding one that is there, or deleting one that is gone, is fine."""
    try:
        ipr.route(verb, family=_family(ipaddress.ip_address(dst).version), dst=str(dst), dst_len=dst_len,
                  oif=index, table=MAIN_TABLE, **{k: str(v) if k in ("gateway", "prefsrc") else v
                                                  for k, v in extra.items()})
    except Exception as exc:
        code = netlink_error_code(exc)
        if (verb == "add" and code == errno.EEXIST) or (verb == "del" and code in (errno.ESRCH, errno.ENOENT)):
            return
        via = f" via {extra['gateway']}" if "gateway" in extra else ""
        raise CNIError(INTERNAL, f"failed to {verb} route {dst}/{dst_len}{via}: {container_links._strerror(exc)}") \
            from None


# -- ADD ----------------------------------------------------------------------------------------------------
def add(req: Request, conf: PtpConfig, handles: Handles) -> Result:
    ns, host = handles.container(), handles.host
    container_links.require_absent(ns.ipr, req.ifname)
    with undo_on_failure("ptp") as undo:
        ipam = delegate.ipam_add(req, handles)
        undo.append(("IPAM lease", lambda: delegate.ipam_del(req, handles)))
        if not ipam.ips:
            raise CNIError(INTERNAL, f"IPAM plugin {conf.ipam!r} returned no IP configuration")
        for ip in ipam.ips:
            if ip.gateway is None:
                raise CNIError(INVALID_CONFIG, f"invalid ipam result: address {ip.address} has no gateway (ptp "
                               "routes the container through its gateway, the host end of the link)")
        for version in sorted({ip.address.version for ip in ipam.ips}):
            host.sysctl_write("net/ipv4/ip_forward" if version == 4 else "net/ipv6/conf/all/forwarding", "1")

        host_name = _create_veth(req, conf, ns, host)
        undo.append(("veth pair", lambda: netlink.delete_link(ns.ipr, req.ifname)))
        result = Result(interfaces=[Interface(host_name, netlink.mac_by_name(host.ipr, host_name) or ""),
                                    Interface(req.ifname, netlink.mac_by_name(ns.ipr, req.ifname) or "", req.netns)],
                        ips=ipam.ips, routes=ipam.routes, dns=ipam.dns)
        for ip in result.ips:
            ip.interface = CONTAINER
        _configure_container(req, ns, result)
        _configure_host(host, host_name, result.ips)

        if conf.ip_masq:
            tag = req.network_owner()
            masquerade.add_masquerade(host.nft, tag, [ip.address for ip in result.ips])
            undo.append(("ipMasq elements", lambda: masquerade.remove_masquerade(host.nft, tag)))
        if conf.dns:
            result.dns = conf.dns
        return result


def _create_veth(req: Request, conf: PtpConfig, ns: NetnsHandle, host: NetnsHandle) -> str:
    """The pair, its container end born in the container as CNI_IFNAME, its host end up under a random
    name; a name another ADD took meanwhile is tried again with another one (as the reference)."""
    for _ in range(10):
        name = netlink.random_veth_name()
        try:
            netlink.create_veth(host.ipr, name, req.ifname, ns.fd, mtu=conf.mtu, up=True)
        except Exception as exc:
            if netlink_error_code(exc) == errno.EEXIST:
                container_links.require_absent(ns.ipr, req.ifname)
                continue
            raise container_links.link_refused("veth", exc, f" for {req.ifname!r}") from None
        with contextlib.suppress(OSError):
            # The plugin owns the routes of this interface; router advertisements must not add any.
            host.sysctl_write(sysctl.iface_key(6, name, "accept_ra"), "0")
        return name
    raise CNIError(INTERNAL, "could not find a free host veth name")


def _configure_container(req: Request, ns: NetnsHandle, result: Result) -> None:
    index = netlink.link_index(ns.ipr, req.ifname)
    if index is None:
        raise CNIError(INTERNAL, f"container interface {req.ifname!r} vanished after it was created")
    if any(ip.address.version == 6 for ip in result.ips):
        # As the reference's ConfigureIface: IPv6 on for lo and the interface, addresses kept while it is down.
        for key in (sysctl.iface_key(6, "lo", "disable_ipv6"), sysctl.iface_key(6, req.ifname, "disable_ipv6")):
            with contextlib.suppress(OSError):
                ns.sysctl_write(key, "0")
        with contextlib.suppress(OSError):
            ns.sysctl_write(sysctl.iface_key(6, req.ifname, "keep_addr_on_down"), "1")
    # No DAD: the only other end of the link is the host, whose addresses are the gateways; a tentative
    # address could not be the source of the routes below.
    netlink.configure_interface(ns.ipr, req.ifname, result, nodad=True, index=index)
    for ip in result.ips:
        subnet, gw, src = ip.address.network, ip.gateway, ip.address.ip
        _route(ns.ipr, "del", subnet.network_address, subnet.prefixlen, index, scope=SCOPE_NOWHERE)
        _route(ns.ipr, "add", gw, _host_prefix(gw), index, scope=SCOPE_LINK, prefsrc=src)
        _route(ns.ipr, "add", subnet.network_address, subnet.prefixlen, index, gateway=gw, prefsrc=src)


def _configure_host(host: NetnsHandle, host_name: str, ips: list[IPConfig]) -> None:
    index = netlink.link_index(host.ipr, host_name)
    if index is None:
        raise CNIError(INTERNAL, f"host veth {host_name!r} vanished after it was created")
    for ip in ips:
        gw = ipaddress.ip_interface(f"{ip.gateway}/{_host_prefix(ip.gateway)}")
        try:
            netlink.add_address(host.ipr, index, gw, nodad=True)
        except Exception as exc:
            raise CNIError(INTERNAL, f"failed to add {gw} to host veth {host_name!r}: "
                           f"{container_links._strerror(exc)}") from None
        _route(host.ipr, "add", ip.address.ip, _host_prefix(ip.address), index, scope=SCOPE_HOST)


# -- DEL ----------------------------------------------------------------------------------------------------
def delete(req: Request, conf: PtpConfig, handles: Handles) -> None:
    """Idempotent, also with the netns gone: the container end goes (its peer, the host veth, with it) after
    the host routes to its addresses; the masquerade elements go by owner tag; IPAM releases the lease."""
    ns = handles.container_if_present()
    host = handles.host
    if ns is not None:
        msg = netlink.link(ns.ipr, req.ifname)
        if msg is not None and netlink.kind_of(msg) == "veth":
            peer = msg.get_attr("IFLA_LINK")
            # The host routes go now: the address may be leased again before the pair is gone.
            for address in netlink.addresses(ns.ipr, msg["index"]):
                _route(host.ipr, "del", address.ip, _host_prefix(address), peer, scope=SCOPE_NOWHERE)
            with contextlib.suppress(Exception):
                ns.ipr.link("set", index=msg["index"], state="down")
            # Deleting a veth waits ~20 ms on the kernel (RCU): after the reply where a daemon serves it.
            req.after_reply(lambda: netlink.delete_link(ns.ipr, req.ifname))
    else:
        _delete_orphaned_host_veth(req, host)
    if conf.ip_masq:
        masquerade.remove_masquerade(host.nft, req.network_owner())
    delegate.ipam_del(req, handles)


def _delete_orphaned_host_veth(req: Request, host: NetnsHandle) -> None:
    """Without the container netns (its path gone, the namespace perhaps still alive), the host veth of
    prevResult goes when it is still the one routing to the container's addresses (never a stranger's)."""
    prev = None
    with contextlib.suppress(CNIError):
        prev = req.prev_result
    if prev is None:
        return
    for iface, msg in _host_veths(host, prev):
        if any(netlink.has_route(host.ipr, _host_route(ip), msg["index"]) for ip in prev.ips):
            netlink.delete_link(host.ipr, iface.name)


def _host_veths(host: NetnsHandle, prev: Result):
    """(interface, link message) of each host-side interface of prevResult that is a veth in the host."""
    for iface in prev.interfaces:
        if iface.sandbox:
            continue
        msg = netlink.link(host.ipr, iface.name)
        if msg is not None and netlink.kind_of(msg) == "veth":
            yield iface, msg


def _host_route(ip: IPConfig) -> Route:
    return Route(ipaddress.ip_network(f"{ip.address.ip}/{_host_prefix(ip.address)}"))


# -- CHECK --------------------------------------------------------------------------------------------------
def check(req: Request, conf: PtpConfig, handles: Handles) -> None:
    """IPAM's CHECK; the container end of prevResult is a veth with its MAC, addresses and routes; its peer
    is the host veth of prevResult, holding the gateways, with a host route to each container address."""
    prev = req.require_prev_result("ptp", "CHECK needs the result of the ADD")
    delegate.ipam_verb(req, handles, "CHECK")
    ns, host = handles.container(), handles.host
    iface = container_links.container_interface(req, prev)
    msg = netlink.link(ns.ipr, req.ifname)
    if msg is None:
        raise CNIError(INTERNAL, f"container interface {req.ifname!r} was not found")
    if netlink.kind_of(msg) != "veth":
        raise CNIError(INTERNAL, f"container interface {req.ifname!r} is not a veth (kind {netlink.kind_of(msg)!r})")
    if iface.mac and iface.mac != netlink.mac_of(msg):
        raise CNIError(INTERNAL, f"container interface {req.ifname!r} MAC {netlink.mac_of(msg)} does not match "
                       f"{iface.mac}")
    netlink.check_interface(ns.ipr, req.ifname, prev)
    peer = _check_host_veth(host, prev, msg)
    for ip in prev.ips:
        if ip.gateway is not None:
            gw = ipaddress.ip_interface(f"{ip.gateway}/{_host_prefix(ip.gateway)}")
            if gw not in netlink.addresses(host.ipr, peer["index"], gw.version):
                raise CNIError(INTERNAL, f"gateway address {gw} is missing on host veth "
                               f"{peer.get_attr('IFLA_IFNAME')!r}")
        if not netlink.has_route(host.ipr, _host_route(ip), peer["index"]):
            raise CNIError(INTERNAL, f"host route to {ip.address.ip} via {peer.get_attr('IFLA_IFNAME')!r} is missing")
    if conf.ip_masq:
        owned = masquerade.masqueraded(host.nft, req.network_owner())
        for ip in prev.ips:
            if str(ip.address.ip) not in owned:
                raise CNIError(INTERNAL, f"ipMasq for container address {ip.address.ip} is missing")


def _check_host_veth(host: NetnsHandle, prev: Result, container):
    for iface, msg in _host_veths(host, prev):
        if msg["index"] != container.get_attr("IFLA_LINK") or msg.get_attr("IFLA_LINK") != container["index"]:
            continue
        if iface.mac and iface.mac != netlink.mac_of(msg):
            raise CNIError(INTERNAL, f"host veth {iface.name!r} MAC {netlink.mac_of(msg)} does not match {iface.mac}")
        return msg
    raise CNIError(INTERNAL, "the host veth of the container interface was not found among prevResult's "
                   f"interfaces {[i.name for i in prev.interfaces if not i.sandbox]}")


# -- STATUS / GC --------------------------------------------------------------------------------------------
def status(req: Request, conf: PtpConfig, handles: Handles) -> None:
    delegate.ipam_verb(req, handles, "STATUS")


def gc(req: Request, conf: PtpConfig, handles: Handles) -> None:
    """Removes this network's masquerade elements whose attachment is not valid any more; IPAM's GC."""
    masquerade.collect_garbage(handles.host.nft, req.network_name, req.valid_network_owners())
    delegate.ipam_verb(req, handles, "GC")


PLUGIN = Plugin(name="ptp", load_config=ptp_config.load, add=add, delete=delete, check=check, status=status, gc=gc,
                load_teardown_config=ptp_config.load_teardown)
