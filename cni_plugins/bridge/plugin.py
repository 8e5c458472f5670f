"""bridge: containers on a Linux bridge in the host netns, each through a veth pair (the reference's `bridge`).

ADD: validate config -> bridge (created or adopted) -> veth pair, host end enslaved -> macspoofchk ->
IPAM ADD -> container addresses/routes -> gateway addresses on the bridge -> ipMasq -> result.
Every step that changes something registers its undo; a failed ADD runs them in reverse, so it leaves
no veth, bridge port, lease or nft element behind (the bridge itself stays: concurrent ADDs may be using it).
Host-side changes go through ``handles.host``, container-side ones through ``handles.container()``.
"""

from __future__ import annotations

import contextlib
import ipaddress

from cni_plugins import delegate, netlink, sysctl
from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.undo import undo_on_failure
from cni_plugins.handles import Handles, NetnsHandle
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Interface, Result, Route

from . import config as bridge_config
from . import links, nft_rules
from .config import BridgeConfig

BRIDGE, HOST_VETH, CONTAINER = 0, 1, 2


def _tag(req: Request) -> str:
    return req.network_owner()



# -- ADD ----------------------------------------------------------------------------------------------------
def add(req: Request, conf: BridgeConfig, handles: Handles) -> Result:
    ns, host = handles.container(), handles.host
    with undo_on_failure("bridge") as undo:
        links.require_absent(ns.ipr, req.ifname)
        bridge = links.ensure_bridge(host, conf)
        port = links.add_veth(host.ipr, ns.ipr, ns.fd, req.ifname, conf, bridge)
        undo.append(("host veth", lambda: links.delete(host.ipr, port.name)))
        container_index = netlink.link_index(ns.ipr, req.ifname)
        if container_index is None:
            raise CNIError(INTERNAL, f"container interface {req.ifname!r} vanished after it was created")

        result = Result(interfaces=[Interface(bridge.name), Interface(port.name),
                                    Interface(req.ifname, netlink.mac_by_name(ns.ipr, req.ifname) or "", req.netns)])
        if conf.macspoofchk:
            nft_rules.add_spoofcheck(host.nft, _tag(req), port.name, result.interfaces[CONTAINER].mac)
            undo.append(("macspoofchk elements", lambda: nft_rules.remove_owned(host.nft, _tag(req), masq=False)))

        if conf.ipam:
            ipam = delegate.ipam_add(req, handles)
            undo.append(("IPAM lease", lambda: delegate.ipam_del(req, handles)))
            _configure_l3(req, conf, ns, host, bridge, result, ipam, undo, container_index)
        elif not conf.disable_container_interface:
            netlink.set_up(ns.ipr, container_index)

        if not conf.disable_container_interface:
            port = links.wait_oper_up(host.ipr, port)
        else:
            port.mac = netlink.mac_by_name(host.ipr, port.name) or ""
        result.interfaces[HOST_VETH].mac = port.mac
        result.interfaces[BRIDGE].mac = links.refresh_mac(host.ipr, bridge)
        if conf.dns:
            result.dns = conf.dns
        return result


def _configure_l3(req: Request, conf: BridgeConfig, ns: NetnsHandle, host: NetnsHandle, bridge: links.Link,
                  result: Result, ipam: Result, undo: list, container_index: int) -> None:
    if not ipam.ips:
        raise CNIError(INTERNAL, f"IPAM plugin {conf.ipam!r} returned no IP configuration")
    result.ips, result.routes, result.dns = ipam.ips, ipam.routes, ipam.dns
    gateways = _gateways(conf, result)

    # Best effort, as the reference: IPv6 may be disabled in the container.
    for key, value in ((sysctl.iface_key(6, req.ifname, "accept_dad"), "1" if conf.enable_dad else "0"),
                       (sysctl.iface_key(4, req.ifname, "arp_notify"), "1")):
        with contextlib.suppress(OSError):
            ns.sysctl_write(key, value)
    if conf.enable_dad:
        with contextlib.suppress(OSError):
            ns.sysctl_write(sysctl.iface_key(6, req.ifname, "enhanced_dad"), "1")
    netlink.configure_interface(ns.ipr, req.ifname, result, nodad=not conf.enable_dad, index=container_index)

    if gateways:
        target = bridge
        if conf.vlan:
            target = links.ensure_vlan_gateway(host, bridge, conf)
            result.interfaces.append(Interface(target.name, target.mac))
        for address in gateways:
            links.ensure_gateway_address(host, target, address, conf.force_address)
        for version in sorted({a.version for a in gateways}):
            links.enable_forwarding(host, version)

    if conf.ip_masq:
        nft_rules.add_masquerade(host.nft, _tag(req), [ip.address for ip in result.ips])
        undo.append(("ipMasq elements", lambda: nft_rules.remove_owned(host.nft, _tag(req), spoof=False)))


def _gateways(conf: BridgeConfig, result: Result) -> list:
    """The reference's calcGateways: every IP belongs to the container interface; with isGateway a missing
    gateway is the subnet's first address, and the gateway (with the subnet's prefix) goes on the bridge;
    isDefaultGateway adds a default route per family unless the IPAM result already has one."""
    gateways = []
    for ip in result.ips:
        ip.interface = CONTAINER
        if ip.gateway is None and conf.is_gateway:
            ip.gateway = links.gateway_for(ip.address)
        if conf.is_default_gateway:
            default = ipaddress.ip_network("0.0.0.0/0" if ip.family == 4 else "::/0")
            if not any(r.dst == default and r.gw is not None for r in result.routes):
                result.routes.append(Route(default, ip.gateway))
        if conf.is_gateway:
            gw = ipaddress.ip_interface(f"{ip.gateway}/{ip.address.network.prefixlen}")
            if gw not in gateways:
                gateways.append(gw)
    return gateways


# -- DEL ----------------------------------------------------------------------------------------------------
def delete(req: Request, conf: BridgeConfig, handles: Handles) -> None:
    """Idempotent: the container interface goes if the netns is still there (its veth peer goes with it),
    the owned nft elements go by owner tag, and IPAM always releases the lease."""
    ns = handles.container_if_present()
    if ns is not None and links.set_down(ns.ipr, req.ifname):
        # Down first (cheap): the bridge port stops forwarding at once, so the address released below can
        # never be live on two ports. The delete itself waits ~15 ms on the kernel (RCU), so it runs
        # after the reply where a daemon serves the request (the handles are closed after it).
        req.after_reply(lambda: links.delete(ns.ipr, req.ifname))
    if conf.ip_masq or conf.macspoofchk:
        nft_rules.remove_owned(handles.host.nft, _tag(req), masq=conf.ip_masq, spoof=conf.macspoofchk)
    if conf.ipam:
        delegate.ipam_del(req, handles)


# -- CHECK --------------------------------------------------------------------------------------------------
def check(req: Request, conf: BridgeConfig, handles: Handles) -> None:
    prev = req.require_prev_result("bridge", "CHECK needs the result of the ADD")
    ns, host = handles.container(), handles.host
    if conf.ipam:
        delegate.ipam_verb(req, handles, "CHECK")
    bridge = _check_bridge(host.ipr, conf, prev)
    container = _check_container(ns.ipr, req, prev)
    _check_host_veth(host.ipr, prev, bridge, container)
    netlink.check_interface(ns.ipr, req.ifname, prev)
    if conf.ip_masq:
        owned = nft_rules.masqueraded(host.nft, _tag(req))
        for ip in prev.ips:
            if str(ip.address.ip) not in owned:
                raise CNIError(INTERNAL, f"ipMasq for container address {ip.address.ip} is missing")


def _check_bridge(host, conf: BridgeConfig, prev: Result):
    iface = next((i for i in prev.interfaces if i.name == conf.bridge and not i.sandbox), None)
    if iface is None:
        raise CNIError(INTERNAL, f"bridge {conf.bridge!r} is not in prevResult")
    msg = _check_link(host, iface, "bridge", "host interface")
    if bool(msg["flags"] & links.IFF_PROMISC) != conf.promisc_mode:
        raise CNIError(INTERNAL, f"bridge {conf.bridge!r} promiscuous mode does not match promiscMode "
                       f"{conf.promisc_mode}")
    return msg


def _check_container(ipr, req: Request, prev: Result):
    iface = next((i for i in prev.interfaces if i.name == req.ifname and i.sandbox), None)
    if iface is None or iface.sandbox != req.netns:
        raise CNIError(INTERNAL, f"interface {req.ifname!r} in sandbox {req.netns!r} is not in prevResult")
    return _check_link(ipr, iface, "veth", "container interface")


def _check_link(ipr, iface: Interface, kind: str, where: str):
    """The link of a prevResult interface: it exists, is a ``kind`` and has the MAC the result gave it."""
    msg = netlink.link(ipr, iface.name)
    if msg is None:
        raise CNIError(INTERNAL, f"{where} {iface.name!r} was not found")
    if netlink.kind_of(msg) != kind:
        raise CNIError(INTERNAL, f"{where} {iface.name!r} is not a {kind}")
    if iface.mac and iface.mac != netlink.mac_of(msg):
        raise CNIError(INTERNAL, f"{where} {iface.name!r} MAC {netlink.mac_of(msg)} does not match {iface.mac}")
    return msg


def _check_host_veth(host, prev: Result, bridge, container) -> None:
    """Some host interface of prevResult must be the veth peer of the container interface, on the bridge."""
    for iface in prev.interfaces:
        if iface.sandbox or iface.name == bridge.get_attr("IFLA_IFNAME"):
            continue
        msg = netlink.link(host, iface.name)
        if msg is None or netlink.kind_of(msg) != "veth":
            continue
        if msg["index"] != links.peer_index(container) or links.peer_index(msg) != container["index"]:
            continue
        if links.master_index(msg) != bridge["index"]:
            raise CNIError(INTERNAL, f"host veth {iface.name!r} is not attached to bridge "
                           f"{bridge.get_attr('IFLA_IFNAME')!r}")
        if iface.mac and iface.mac != netlink.mac_of(msg):
            raise CNIError(INTERNAL, f"host veth {iface.name!r} MAC {netlink.mac_of(msg)} does not match {iface.mac}")
        return
    raise CNIError(INTERNAL, f"the host veth of the container interface on bridge "
                   f"{bridge.get_attr('IFLA_IFNAME')!r} was not found")


# -- STATUS / GC --------------------------------------------------------------------------------------------
def status(req: Request, conf: BridgeConfig, handles: Handles) -> None:
    if conf.ipam:
        delegate.ipam_verb(req, handles, "STATUS")


def gc(req: Request, conf: BridgeConfig, handles: Handles) -> None:
    """Passes GC to IPAM and removes this network's nft elements whose attachment is not valid any more."""
    nft_rules.collect_garbage(handles.host.nft, req.network_name, req.valid_network_owners())
    if conf.ipam:
        delegate.ipam_verb(req, handles, "GC")


PLUGIN = Plugin(name="bridge", load_config=bridge_config.load, add=add, delete=delete, check=check,
                status=status, gc=gc)
