"""Kernel links of the bridge plugin: the bridge, the veth pair and the bridge-port settings, over netlink only.

Every function takes the IPRoute handle of the namespace it works in (the host handle is the netns the plugin
was started in). Nothing here reads sysfs: /sys/class/net shows the netns of whoever mounted sysfs, not ours.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import ipaddress
import os
import socket
import time
from dataclasses import dataclass

from cni_plugins import netlink, sysctl
from cni_plugins.errors import CNIError, INTERNAL, INVALID_ENVIRONMENT, UNSUPPORTED_FIELD
from cni_plugins.netlink import netlink_error_code

from .config import BridgeConfig

IFF_PROMISC = 0x100
BRIDGE_VLAN_INFO_PVID = 0x2
BRIDGE_VLAN_INFO_UNTAGGED = 0x4
RTEXT_FILTER_BRVLAN = 0x2
AF_BRIDGE = 7
# How long a new port may take to become operationally up (the reference waits 2.55 s in total).
OPER_UP_TIMEOUT = 2.5


@dataclass
class Link:
    """A link of the host netns as the plugin uses it."""
    name: str
    index: int
    mac: str


def _fail(what: str, exc: BaseException) -> CNIError:
    code = netlink_error_code(exc)
    return CNIError(INTERNAL, f"{what}: {os.strerror(code) if isinstance(code, int) and code > 0 else exc}")




def _vlan_refused(conf: BridgeConfig, exc: BaseException) -> CNIError:
    key, value = ("vlan", conf.vlan) if conf.vlan else ("vlanTrunk", list(conf.vlan_trunk))
    return CNIError(UNSUPPORTED_FIELD, f"unsupported {key} {value!r}: the kernel refuses bridge VLAN filtering on "
                    f"bridge {conf.bridge!r} ({os.strerror(netlink_error_code(exc) or errno.EOPNOTSUPP)})")


# -- the bridge ---------------------------------------------------------------------------------------------
def ensure_bridge(host, conf: BridgeConfig) -> Link:
    """Creates the bridge in ``host`` (a NetnsHandle) or adopts the existing one. Many ADDs may race to
    create it: EEXIST means a concurrent ADD (or the administrator) made it first, and it is used as it is.
    It is looked up first, by interface ioctls (every ADD but the first), else over netlink."""
    ipr = host.ipr
    found = None if conf.vlan_filtering else _existing_bridge(ipr, conf.bridge)
    if found is not None:
        index, flags, mac = found
    else:
        msg = netlink.link(ipr, conf.bridge)
        if msg is None:
            msg = _create_bridge(ipr, conf)
        if netlink.kind_of(msg) != "bridge":
            raise CNIError(INTERNAL, f"{conf.bridge!r} already exists but is not a bridge "
                           f"(kind {netlink.kind_of(msg)!r})")
        index, flags, mac = msg["index"], msg["flags"], netlink.mac_of(msg)
        if conf.vlan_filtering and not netlink.info_data(msg, "IFLA_BR_VLAN_FILTERING"):
            try:
                ipr.link("set", index=index, kind="bridge", br_vlan_filtering=1)
            except Exception as exc:
                raise _vlan_refused(conf, exc) from None
    if conf.promisc_mode and not flags & IFF_PROMISC:
        ipr.link("set", index=index, flags=IFF_PROMISC, change=IFF_PROMISC)
    try:
        # The plugin owns the bridge's routes; router advertisements must not add any.
        host.sysctl_write(sysctl.iface_key(6, conf.bridge, "accept_ra"), "0")
    except OSError:
        pass  # IPv6 disabled in this netns
    if not flags & 1:
        netlink.set_up(ipr, index)
    return Link(conf.bridge, index, mac)


def _existing_bridge(ipr, name: str):
    """(index, IFF flags, MAC) of the bridge ``name`` by interface ioctls (~20 us; the RTM_GETLINK answer
    takes ~0.4 ms to parse), or None when it is absent, not a bridge, or the ioctls cannot tell: then the
    netlink path decides (and names the kind in its error)."""
    if netlink.driver_of(ipr, name) != "bridge":
        return None
    index = netlink.link_index(ipr, name)
    flags = netlink.ioctl_flags(ipr, name)
    mac = netlink.mac_by_name(ipr, name)
    if index is None or flags is None or mac is None:
        return None
    return index, flags, mac


def _create_bridge(ipr, conf: BridgeConfig):
    kwargs: dict = {"ifname": conf.bridge, "kind": "bridge"}
    if conf.mtu:
        kwargs["mtu"] = conf.mtu
    if conf.vlan_filtering:
        kwargs["br_vlan_filtering"] = 1
    try:
        ipr.link("add", **kwargs)
    except Exception as exc:
        code = netlink_error_code(exc)
        if code == errno.EOPNOTSUPP and conf.vlan_filtering:
            raise _vlan_refused(conf, exc) from None
        if code != errno.EEXIST:
            raise _fail(f"could not add bridge {conf.bridge!r}", exc) from None
    msg = netlink.link(ipr, conf.bridge)
    if msg is None:
        raise CNIError(INTERNAL, f"bridge {conf.bridge!r} vanished while it was being set up")
    return msg


def refresh_mac(ipr, link: Link) -> str:
    """A bridge takes the lowest port MAC until one is set, so its MAC is read again at the end of ADD."""
    mac = netlink.mac_by_name(ipr, link.name)
    return mac if mac is not None else link.mac


def ensure_gateway_address(host, link: Link, address, force: bool) -> None:
    """Puts the gateway address (with the subnet's prefix) on the bridge in ``host`` (a NetnsHandle), as the
    reference's ensureAddr: a different IPv4 address, or an overlapping IPv6 one, is an error unless
    forceAddress replaces it."""
    if address.version == 4 and _primary_ipv4(host, link.name) == address:
        return   # every ADD but the first: two ioctls (~0.1 ms) instead of an address dump (~0.4 ms)
    ipr = host.ipr
    present = netlink.addresses(ipr, link.index, address.version)
    if address in present:
        return
    for other in present:
        if address.version == 4 or address.ip in other.network or other.ip in address.network:
            if not force:
                raise CNIError(INTERNAL, f"{link.name!r} already has an IP address different from {address} "
                               f"({other}); set forceAddress to replace it")
            try:
                ipr.addr("del", index=link.index, address=str(other.ip), prefixlen=other.network.prefixlen)
            except Exception as exc:
                if netlink_error_code(exc) != errno.EADDRNOTAVAIL:
                    raise _fail(f"could not remove {other} from {link.name!r}", exc) from None
    try:
        netlink.add_address(ipr, link.index, address, nodad=True)
    except Exception as exc:
        raise _fail(f"could not add {address} to {link.name!r}", exc) from None
    # Pin the bridge's MAC to its current value, or it follows the lowest port MAC as containers come and go.
    mac = refresh_mac(ipr, link)
    if mac:
        ipr.link("set", index=link.index, address=mac)


def _primary_ipv4(host, name: str):
    with contextlib.closing(host.make(socket.socket, socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)) as sock:
        return netlink.primary_ipv4(sock, name)


def enable_forwarding(host, version: int) -> None:
    host.sysctl_write("net/ipv4/ip_forward" if version == 4 else "net/ipv6/conf/all/forwarding", "1")


# -- the veth pair ------------------------------------------------------------------------------------------
def require_absent(container_ipr, ifname: str) -> None:
    if netlink.link_index(container_ipr, ifname) is not None:
        raise CNIError(INVALID_ENVIRONMENT, f"invalid CNI_IFNAME {ifname!r}: an interface with that name "
                       "already exists in the container network namespace")


def add_veth(host_ipr, container_ipr, container_fd: int, ifname: str, conf: BridgeConfig, bridge: Link) -> Link:
    """A veth pair whose peer is born in the container as ``ifname``, its host end born enslaved to the
    bridge and up (no traffic flows before the peer comes up); then the port settings are applied. Returns
    the host end, its MAC not read yet (it is read once the port is up). A random host name can collide
    with another ADD's: then another name is tried."""
    for _ in range(5):
        host_name = netlink.random_veth_name()
        try:
            netlink.create_veth(host_ipr, host_name, ifname, container_fd, mtu=conf.mtu, peer_mac=conf.mac,
                                master=bridge.index, up=True)
        except Exception as exc:
            code = netlink_error_code(exc)
            if code == errno.EEXIST:
                require_absent(container_ipr, ifname)
                continue
            if code == errno.EADDRNOTAVAIL and conf.mac:
                raise CNIError(INTERNAL, f"the kernel refused MAC address {conf.mac} for {ifname!r}") from None
            raise _fail(f"could not create veth pair for {ifname!r} on bridge {bridge.name!r}", exc) from None
        index = netlink.link_index(host_ipr, host_name)
        if index is None:
            raise CNIError(INTERNAL, f"host veth {host_name!r} vanished after it was created")
        port = Link(host_name, index, "")
        try:
            _set_port_options(host_ipr, port, conf)
        except BaseException:
            with contextlib.suppress(Exception):
                delete(host_ipr, host_name)
            raise
        return port
    raise CNIError(INTERNAL, "could not find a free host veth name")


def attach_port(ipr, port: Link, bridge: Link, conf: BridgeConfig) -> None:
    """Enslaves an existing host veth to the bridge, applies the port settings and sets it up."""
    try:
        ipr.link("set", index=port.index, master=bridge.index)
    except Exception as exc:
        raise _fail(f"failed to connect {port.name!r} to bridge {bridge.name!r}", exc) from None
    _set_port_options(ipr, port, conf)
    netlink.set_up(ipr, port.index)


def _set_port_options(ipr, port: Link, conf: BridgeConfig) -> None:
    """Hairpin, isolation, VLANs of a bridge port."""
    settings = {}
    if conf.hairpin_mode:
        settings["mode"] = 1  # IFLA_BRPORT_MODE is the hairpin flag
    if conf.port_isolation:
        settings["isolated"] = 1
    if settings:
        try:
            ipr.brport("set", index=port.index, **settings)
        except Exception as exc:
            raise _fail(f"failed to set bridge port options {sorted(settings)} on {port.name!r}", exc) from None
    if conf.vlan_filtering:
        set_port_vlans(ipr, port, conf)


def _port_vlans(ipr, index: int) -> list[int]:
    vids = []
    for msg in ipr.get_links(index, family=AF_BRIDGE, ext_mask=RTEXT_FILTER_BRVLAN):
        spec = msg.get_attr("IFLA_AF_SPEC")
        for name, value in (spec["attrs"] if spec is not None else []):
            if name == "IFLA_BRIDGE_VLAN_INFO":
                vids.append(value["vid"])
    return vids


def set_port_vlans(ipr, port: Link, conf: BridgeConfig) -> None:
    """An access port (``vlan``: PVID, untagged) or a trunk port (``vlanTrunk``: tagged), as the reference."""
    try:
        if not conf.preserve_default_vlan:
            for vid in _port_vlans(ipr, port.index):
                ipr.vlan_filter("del", index=port.index, vlan_info={"vid": vid})
        if conf.vlan:
            ipr.vlan_filter("add", index=port.index, vlan_info={
                "vid": conf.vlan, "flags": BRIDGE_VLAN_INFO_PVID | BRIDGE_VLAN_INFO_UNTAGGED})
        for vid in conf.vlan_trunk:
            ipr.vlan_filter("add", index=port.index, vlan_info={"vid": vid})
    except Exception as exc:
        if netlink_error_code(exc) == errno.EOPNOTSUPP:
            raise _vlan_refused(conf, exc) from None
        raise _fail(f"failed to set up VLANs on {port.name!r}", exc) from None


def ensure_vlan_gateway(host, bridge: Link, conf: BridgeConfig) -> Link:
    """With ``vlan`` and a gateway the gateway address cannot sit on the (untagged) bridge: as the reference,
    a veth named ``<bridge>.<vlan>`` is made in the host netns, its peer an access port of that VLAN."""
    ipr = host.ipr
    name = f"{bridge.name}.{conf.vlan}"
    if len(name) > 15:
        raise CNIError(INTERNAL, f"VLAN gateway interface name {name!r} is longer than 15 characters")
    if netlink.link_index(ipr, name) is None:
        peer = netlink.random_veth_name()
        try:
            netlink.create_veth(ipr, name, peer, host.fd, mtu=conf.mtu)
        except Exception as exc:
            if netlink_error_code(exc) != errno.EEXIST:
                raise _fail(f"failed to create VLAN gateway {name!r}", exc) from None
        else:
            # The gateway's port is a plain access port of the VLAN, as the reference sets it up.
            access = dataclasses.replace(conf, hairpin_mode=False, port_isolation=False, vlan_trunk=())
            attach_port(ipr, Link(peer, netlink.link_index(ipr, peer), ""), bridge, access)
    msg = netlink.link(ipr, name)
    if msg is None:
        raise CNIError(INTERNAL, f"VLAN gateway {name!r} vanished while it was being set up")
    netlink.set_up(ipr, msg["index"])
    return Link(name, msg["index"], netlink.mac_of(msg))


def wait_oper_up(ipr, port: Link, timeout: float = OPER_UP_TIMEOUT) -> Link:
    """Waits until the host veth is operationally up (the kernel's linkwatch sets it shortly after the
    peer comes up) and returns it with its current MAC."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        msg = netlink.link(ipr, port.name)
        if msg is None:
            raise CNIError(INTERNAL, f"host veth {port.name!r} vanished")
        state = msg.get_attr("IFLA_OPERSTATE")
        if state == "UP":
            return Link(port.name, port.index, netlink.mac_of(msg))
        if time.monotonic() >= deadline:
            raise CNIError(INTERNAL, f"bridge port {port.name!r} in error state: {state}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def set_down(ipr, name: str) -> bool:
    """Sets ``name`` down; False when there is no such link."""
    try:
        return netlink.set_state_by_name(ipr, name, False)
    except Exception as exc:
        if netlink.netlink_error_code(exc) in (errno.ENODEV, errno.ENOENT):
            return False
        raise _fail(f"could not set {name!r} down", exc) from None


def delete(ipr, name: str) -> bool:
    try:
        return netlink.delete_link(ipr, name)
    except Exception as exc:
        raise _fail(f"could not delete {name!r}", exc) from None


# -- CHECK --------------------------------------------------------------------------------------------------
def peer_index(msg) -> int | None:
    """The ifindex of a veth's peer (IFLA_LINK; it numbers the peer's own netns)."""
    return msg.get_attr("IFLA_LINK")


def master_index(msg) -> int | None:
    return msg.get_attr("IFLA_MASTER")


def gateway_for(address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The reference's calcGatewayIP: the first address of the subnet."""
    return address.network.network_address + 1
