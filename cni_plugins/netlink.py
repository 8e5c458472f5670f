"""Link, address and route operations shared by the plugins. Every function takes the IPRoute handle of
the namespace it works in; none of them switches namespaces."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import struct

from .errors import CNIError, INTERNAL
from .results import IPConfig, Result, Route

IFA_F_NODAD = 0x02


def netlink_error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if code is not None else getattr(exc, "errno", None)


def dump(request, *args, attempts: int = 10, **kwargs) -> list:
    """A netlink dump (``ipr.get_addr``, ``ipr.get_routes``, ...) as a list, retried when the kernel flags it
    interrupted: on a busy host (other plugins adding veths at the same moment) the address and route tables
    change mid-dump, and pyroute2 then raises NetlinkDumpInterrupted instead of returning a torn listing."""
    from pyroute2.netlink.exceptions import NetlinkDumpInterrupted

    for attempt in range(attempts):
        try:
            return list(request(*args, **kwargs))
        except NetlinkDumpInterrupted:
            if attempt == attempts - 1:
                raise
    return []


def link(ipr, name: str):
    """The link message of ``name``, or None.

    Asked of the kernel by name (RTM_GETLINK with IFLA_IFNAME): pyroute2's link_lookup dumps every link
    and filters here, which on a host with 500 containers' veths costs more than the rest of an ADD."""
    try:
        return ipr.link("get", ifname=name)[0]
    except Exception as exc:
        if netlink_error_code(exc) in (errno.ENODEV, errno.ENOENT):
            return None
        raise


SIOCGIFINDEX = 0x8933
SIOCGIFHWADDR = 0x8927
IFNAMSIZ = 16
ARPHRD_ETHER = 1
_NO_IOCTL = b""  # the ioctl cannot answer: ask over netlink


def _ifreq(ipr, request: int, name: str) -> bytes | None:
    """An interface ioctl (struct ifreq) on the netlink socket of ``ipr``, or None when there is no such link.

    The kernel answers interface ioctls in the netns of the socket they are made on, so this sees what
    RTM_GETLINK on ``ipr`` sees, at ~1 us instead of ~200 us of pyroute2 message building and parsing.
    Names the ioctl cannot carry (too long: the kernel would truncate them) go the netlink way."""
    raw = name.encode()
    fileno = getattr(ipr, "fileno", None)
    if fileno is None or not raw or len(raw) >= IFNAMSIZ or b"\0" in raw:
        return _NO_IOCTL
    try:
        return fcntl.ioctl(fileno(), request, struct.pack("16s16x", raw))
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return None
        return _NO_IOCTL


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def ioctl_flags(sock, name: str) -> int | None:
    """The IFF_* flags of ``name`` through an interface ioctl on ``sock`` (any socket made in the namespace:
    the kernel answers in the socket's netns), or None when there is no such link. For plugins that touch
    one flag of one link (loopback): no netlink library to import at all."""
    try:
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, struct.pack("16sH14x", name.encode(), 0))
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    return struct.unpack_from("H", reply, IFNAMSIZ)[0]


def ioctl_set_up(sock, name: str, up: bool = True) -> bool:
    """Sets ``name`` up (or down) through SIOCSIFFLAGS; False when there is no such link."""
    flags = ioctl_flags(sock, name)
    if flags is None:
        return False
    wanted = flags | IFF_UP if up else flags & ~IFF_UP
    if wanted != flags:
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", name.encode(), wanted))
    return True


def link_index(ipr, name: str) -> int | None:
    reply = _ifreq(ipr, SIOCGIFINDEX, name)
    if reply is None:
        return None
    if reply:
        return struct.unpack_from("i", reply, IFNAMSIZ)[0]
    msg = link(ipr, name)
    return msg["index"] if msg is not None else None


SIOCGIFADDR = 0x8915
SIOCGIFNETMASK = 0x891B
AF_INET = 2


def primary_ipv4(sock, name: str):
    """The first IPv4 address labelled ``name`` on the link (what ``ip addr`` lists first), as an
    ip_interface, by two interface ioctls on ``sock``, an AF_INET socket of the namespace (IPv4's ioctls
    are answered by IPv4 sockets only); None when the link has none or the ioctls cannot tell."""
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"\0" in raw:
        return None
    try:
        address = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, struct.pack("16s16x", raw))
        mask = fcntl.ioctl(sock.fileno(), SIOCGIFNETMASK, struct.pack("16s16x", raw))
    except OSError:
        return None   # EADDRNOTAVAIL: no IPv4 address; ENODEV: no such link
    if struct.unpack_from("H", address, IFNAMSIZ)[0] != AF_INET:
        return None
    ip = ipaddress.IPv4Address(address[IFNAMSIZ + 4:IFNAMSIZ + 8])
    netmask = ipaddress.IPv4Address(mask[IFNAMSIZ + 4:IFNAMSIZ + 8])
    return ipaddress.ip_interface(f"{ip}/{netmask}")


def mac_by_name(ipr, name: str) -> str | None:
    """The MAC address of ``name`` as mac_of would give it ("" when the link has none), or None when there
    is no such link."""
    reply = _ifreq(ipr, SIOCGIFHWADDR, name)
    if reply is None:
        return None
    if reply:
        family = struct.unpack_from("H", reply, IFNAMSIZ)[0]
        if family == ARPHRD_ETHER:
            return ":".join(f"{b:02x}" for b in reply[IFNAMSIZ + 2:IFNAMSIZ + 8])
    msg = link(ipr, name)
    return mac_of(msg) if msg is not None else None



SIOCETHTOOL = 0x8946
ETHTOOL_GDRVINFO = 3
_DRVINFO_SIZE = 196   # struct ethtool_drvinfo; the driver name is bytes 4..36


def driver_of(ipr, name: str) -> str | None:
    """The ethtool driver name of ``name`` ("bridge", "veth", ...) through SIOCETHTOOL on the netlink socket of
    ``ipr``, or None when the link is absent or the ioctl cannot tell (then ask over netlink)."""
    import array

    raw = name.encode()
    fileno = getattr(ipr, "fileno", None)
    if fileno is None or not raw or len(raw) >= IFNAMSIZ or b"\0" in raw:
        return None
    # ifr_data points at the struct: an array's buffer has a stable address while ``info`` lives
    info = array.array("B", bytes(_DRVINFO_SIZE))
    struct.pack_into("I", info, 0, ETHTOOL_GDRVINFO)
    try:
        fcntl.ioctl(fileno(), SIOCETHTOOL, struct.pack("16sP8x", raw, info.buffer_info()[0]))
    except OSError:
        return None
    return info.tobytes()[4:36].split(b"\0", 1)[0].decode(errors="replace")


def kind_of(msg) -> str:
    """The IFLA_INFO_KIND of a link message ("" for a link without one)."""
    info = msg.get_attr("IFLA_LINKINFO")
    return (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""


def info_data(msg, attr: str):
    """One IFLA_INFO_DATA attribute of a link message (``IFLA_MACVLAN_MODE``, ``IFLA_BR_VLAN_FILTERING``, ...)."""
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    return data.get_attr(attr) if data is not None and hasattr(data, "get_attr") else None


def mac_of(msg) -> str:
    return msg.get_attr("IFLA_ADDRESS") or ""


def random_veth_name(prefix: str = "veth") -> str:
    return prefix + os.urandom(4).hex()


def create_veth(host_ipr, host_name: str, peer_name: str, peer_netns_fd: int,
                mtu: int | None = None, peer_mac: str | None = None,
                master: int | None = None, up: bool = False) -> None:
    """One veth pair whose peer is born inside the container netns (no window in which it sits on the host).

    ``master`` and ``up`` apply to the host end in the same request (the kernel enslaves and opens it as part
    of the creation, and undoes the creation when that fails), which saves a round trip each."""
    peer: dict = {"ifname": peer_name, "net_ns_fd": peer_netns_fd}
    if mtu:
        peer["mtu"] = mtu
    if peer_mac:
        peer["address"] = peer_mac
    kwargs: dict = {"ifname": host_name, "kind": "veth", "peer": peer}
    if mtu:
        kwargs["mtu"] = mtu
    if master is not None:
        kwargs["master"] = master
    if up:
        kwargs["state"] = "up"
    host_ipr.link("add", **kwargs)


def set_up(ipr, index: int) -> None:
    ipr.link("set", index=index, state="up")


def set_state_by_name(ipr, name: str, up: bool, index: int | None = None) -> bool:
    """Sets ``name`` up or down (False: no such link). By SIOCSIFFLAGS on the netlink socket when the name
    fits an ifreq and ``ipr`` is a socket (the same dev_change_flags as RTM_NEWLINK, at a few us instead of
    ~0.3 ms of pyroute2 message work), else over netlink."""
    raw = name.encode()
    if getattr(ipr, "fileno", None) is not None and raw and len(raw) < IFNAMSIZ and b"\0" not in raw:
        return ioctl_set_up(ipr, name, up)
    if index is None:
        index = link_index(ipr, name)
        if index is None:
            return False
    ipr.link("set", index=index, state="up" if up else "down")
    return True


def delete_link(ipr, name: str) -> bool:
    """Deletes a link if it is there; False when it already was gone."""
    index = link_index(ipr, name)
    if index is None:
        return False
    try:
        ipr.link("del", index=index)
    except Exception as exc:
        code = netlink_error_code(exc)
        if code in (errno.ENODEV, errno.ENOENT):
            return False
        if isinstance(code, int):   # e.g. EOPNOTSUPP: CNI_IFNAME names the loopback
            raise CNIError(INTERNAL, f"cannot delete link {name!r}: {os.strerror(code)}") from None
        raise
    return True


def add_address(ipr, index: int, address, nodad: bool = False) -> None:
    """Adds ``address`` (an ip_interface); an address that is already there is fine."""
    kwargs: dict = {"index": index, "address": str(address.ip), "prefixlen": address.network.prefixlen}
    if address.version == 4:
        kwargs["broadcast"] = str(address.network.broadcast_address) if address.network.prefixlen < 31 else None
        if kwargs["broadcast"] is None:
            del kwargs["broadcast"]
    if nodad and address.version == 6:
        kwargs["flags"] = IFA_F_NODAD
    try:
        ipr.addr("add", **kwargs)
    except Exception as exc:
        if netlink_error_code(exc) != errno.EEXIST:
            raise


SOL_NETLINK = 270
NETLINK_GET_STRICT_CHK = 12


def _addresses_of(ipr, index: int) -> list:
    """RTM_GETADDR dump filtered by the kernel to one link.

    pyroute2's get_addr(index=) dumps every address of the namespace and filters here; on a container host
    that is one IPv6 link-local address per veth, hundreds of messages to parse per ADD. With strict
    checking (Linux 4.20+) the kernel honours ifa_index in the dump request instead. The index test below
    keeps the answer right on kernels that ignore the filter."""
    from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_GETADDR
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg

    request = ifaddrmsg()
    request["index"] = index
    ipr.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
    try:
        msgs = dump(ipr.nlm_request, request, msg_type=RTM_GETADDR, msg_flags=NLM_F_REQUEST | NLM_F_DUMP)
    finally:
        ipr.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 0)
    return [msg for msg in msgs if msg["index"] == index]


def addresses(ipr, index: int, family: int | None = None) -> list:
    """ip_interface objects on a link (IPv6 link-local ones left out)."""
    out = []
    for msg in _addresses_of(ipr, index):
        value = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
        if value.version == 6 and value.ip.is_link_local:
            continue
        if family is None or value.version == family:
            out.append(value)
    return out


def route_kwargs(route: Route, index: int | None, default_gw=None) -> dict:
    gw = route.gw if route.gw is not None else default_gw
    kwargs: dict = {"dst": str(route.dst.network_address), "dst_len": route.dst.prefixlen,
                    "family": 10 if route.dst.version == 6 else 2}
    if index is not None:
        kwargs["oif"] = index
    if gw is not None:
        kwargs["gateway"] = str(gw)
    metrics = {}
    if route.mtu:
        metrics["RTAX_MTU"] = route.mtu
    if route.advmss:
        metrics["RTAX_ADVMSS"] = route.advmss
    if metrics:
        kwargs["metrics"] = metrics
    if route.priority is not None:
        kwargs["priority"] = route.priority
    if route.table is not None:
        kwargs["table"] = route.table
    if route.scope is not None:
        kwargs["scope"] = route.scope
    return kwargs


def add_route(ipr, route: Route, index: int | None, default_gw=None) -> None:
    try:
        ipr.route("add", **route_kwargs(route, index, default_gw))
    except Exception as exc:
        if netlink_error_code(exc) != errno.EEXIST:
            raise CNIError(INTERNAL, f"failed to add route {route.dst} via {route.gw or default_gw}: {exc}") from None


def has_route(ipr, route: Route, index: int | None, default_gw=None) -> bool:
    kwargs = route_kwargs(route, index, default_gw)
    want_gw = kwargs.get("gateway")
    for msg in dump(ipr.get_routes, family=kwargs["family"], table=kwargs.get("table", 254)):
        dst = msg.get_attr("RTA_DST")
        if msg["dst_len"] != kwargs["dst_len"]:
            continue
        if kwargs["dst_len"] and dst != kwargs["dst"]:
            continue
        if index is not None and msg.get_attr("RTA_OIF") != index:
            continue
        if want_gw and msg.get_attr("RTA_GATEWAY") != want_gw:
            continue
        return True
    return False


def _ips_for(result: Result, ifname: str) -> list[IPConfig]:
    """The result's IPs that belong on ``ifname`` (or all of them when none names an interface)."""
    return [ip for ip in result.ips
            if ip.interface is None
            or (0 <= ip.interface < len(result.interfaces) and result.interfaces[ip.interface].name == ifname)]


def configure_interface(ipr, ifname: str, result: Result, nodad: bool = True, up: bool = True,
                        index: int | None = None) -> None:
    """Applies a result's addresses and routes to ``ifname`` in the namespace of ``ipr`` (as libcni's
    ipam.ConfigureIface does): addresses first, link up, then routes, whose gateway defaults to the gateway
    of an IP of the same family. ``index``: the link's index when the caller already knows it."""
    if index is None:
        index = link_index(ipr, ifname)
    if index is None:
        raise CNIError(INTERNAL, f"interface {ifname!r} not found while configuring it")
    ips = _ips_for(result, ifname)
    for ip in ips:
        add_address(ipr, index, ip.address, nodad=nodad)
    if up:
        set_state_by_name(ipr, ifname, True, index)
    gateways = {ip.family: ip.gateway for ip in ips if ip.gateway is not None}
    for route in result.routes:
        add_route(ipr, route, index, gateways.get(route.dst.version))


def check_interface(ipr, ifname: str, result: Result) -> None:
    """CHECK: the interface has every address and route the result says it should."""
    index = link_index(ipr, ifname)
    if index is None:
        raise CNIError(INTERNAL, f"interface {ifname!r} not found in the container")
    present = set(addresses(ipr, index))
    for ip in _ips_for(result, ifname):
        if ip.address not in present:
            raise CNIError(INTERNAL, f"address {ip.address} missing on {ifname!r}")
    gateways = {ip.family: ip.gateway for ip in _ips_for(result, ifname) if ip.gateway is not None}
    for route in result.routes:
        if not has_route(ipr, route, None, gateways.get(route.dst.version)):
            raise CNIError(INTERNAL, f"route {route.dst} missing in the container")
