"""The node's side of the pod network, kept in step with the peers' records.

Everything here works on a NetnsHandle of the node's own network namespace (netlink through ``.ipr``,
nftables through ``.nft``, sysctls), and every change is a reconcile: what a peer list wants is written
with ``replace``, and what the agent made earlier for a peer that is gone is found again by its marks
(routes carry protocol RTPROT_PYNET; neighbour and FDB entries live on the agent's own VXLAN device) and
removed. Running it twice changes nothing.
"""

from __future__ import annotations

import errno
import ipaddress

from cni_plugins import netlink
from cni_plugins.nft.layout import Chain, Table
from cni_plugins.nft.ownership import write_skeleton

from .records import NodeRecord

VXLAN_DEVICE = "pynet-vxlan"
VXLAN_ID = 1
VXLAN_PORT = 8472          # Linux's and flannel's default VXLAN port
VXLAN_OVERHEAD = 50        # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
RTPROT_PYNET = 99          # marks the routes this agent owns
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
MASQ_TABLE = "pynet-node"


class DataplaneError(RuntimeError):
    pass


def underlay(host, ifname: str) -> tuple[int, str, int]:
    """(index, first IPv4 address, MTU) of the underlay interface."""
    msg = netlink.link(host.ipr, ifname)
    if msg is None:
        raise DataplaneError(f"underlay interface {ifname!r} not found")
    addresses = netlink.addresses(host.ipr, msg["index"], 4)
    if not addresses:
        raise DataplaneError(f"underlay interface {ifname!r} has no IPv4 address")
    return msg["index"], str(addresses[0].ip), msg.get_attr("IFLA_MTU")


def ensure_vxlan(host, underlay_index: int, local_ip: str, underlay_mtu: int, own: NodeRecord) -> str:
    """The node's VXLAN device, up, with its subnet's .0/32; returns its MAC. An existing device is kept
    (its MAC is what peers have in their FDB)."""
    ipr = host.ipr
    msg = netlink.link(ipr, VXLAN_DEVICE)
    if msg is None:
        try:
            ipr.link("add", ifname=VXLAN_DEVICE, kind="vxlan", vxlan_id=VXLAN_ID, vxlan_local=local_ip,
                     vxlan_port=VXLAN_PORT, vxlan_learning=0, vxlan_link=underlay_index,
                     mtu=underlay_mtu - VXLAN_OVERHEAD)
        except Exception as exc:
            if netlink.netlink_error_code(exc) != errno.EEXIST:
                raise DataplaneError(f"cannot create {VXLAN_DEVICE}: {exc}") from None
        msg = netlink.link(ipr, VXLAN_DEVICE)
    index = msg["index"]
    netlink.add_address(ipr, index, ipaddress.ip_interface(f"{own.vtep_ip}/32"))
    netlink.set_up(ipr, index)
    return netlink.mac_of(msg)


def enable_forwarding(host) -> None:
    host.sysctl_write("net/ipv4/ip_forward", "1")


def masquerade_outside(host, subnet: str, cluster: str) -> None:
    """Pods' traffic leaving the cluster CIDR is masqueraded; traffic to other pods keeps its source."""
    table = Table("ip", MASQ_TABLE, chains=(Chain("postrouting", hook="nat postrouting", priority="srcnat",
                                                  rules=(f"ip saddr {subnet} ip daddr != {cluster} masquerade",)),))
    write_skeleton(host.nft, table)


def remove_masquerade(host) -> None:
    try:
        host.nft.apply([{"delete": {"table": {"family": "ip", "name": MASQ_TABLE}}}])
    except Exception:
        pass   # not there


# -- peers --------------------------------------------------------------------------------------------
def reconcile(host, own: NodeRecord, peers: list[NodeRecord], underlay_index: int) -> None:
    """Routes (and for vxlan, neighbour and FDB entries) to exactly these peers."""
    ipr = host.ipr
    vxlan = netlink.link_index(ipr, VXLAN_DEVICE)
    wanted_routes = {}
    for peer in peers:
        if peer.name == own.name or peer.subnet == own.subnet:
            continue
        if own.backend == "vxlan":
            if vxlan is None or not peer.vtep_mac:
                continue
            ipr.fdb("replace", ifindex=vxlan, lladdr=peer.vtep_mac, dst=peer.public_ip, state=NUD_PERMANENT,
                    flags=NTF_SELF)
            ipr.neigh("replace", ifindex=vxlan, dst=peer.vtep_ip, lladdr=peer.vtep_mac, state=NUD_PERMANENT)
            wanted_routes[peer.subnet] = dict(gateway=peer.vtep_ip, oif=vxlan, flags=RTNH_F_ONLINK)
        else:
            wanted_routes[peer.subnet] = dict(gateway=peer.public_ip, oif=underlay_index)
    for subnet, via in wanted_routes.items():
        net = ipaddress.ip_network(subnet)
        ipr.route("replace", dst=str(net.network_address), dst_len=net.prefixlen, proto=RTPROT_PYNET, **via)
    for msg in netlink.dump(ipr.get_routes, family=2, table=254):
        if msg["proto"] != RTPROT_PYNET:
            continue
        dst = f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}"
        if dst not in wanted_routes:
            _quietly(ipr.route, "del", dst=msg.get_attr("RTA_DST"), dst_len=msg["dst_len"], proto=RTPROT_PYNET)
    if vxlan is not None:
        _prune_vxlan(ipr, vxlan, {p.vtep_mac for p in peers if p.name != own.name and p.vtep_mac},
                     {p.vtep_ip for p in peers if p.name != own.name})


def _prune_vxlan(ipr, vxlan: int, macs: set[str], vtep_ips: set[str]) -> None:
    for msg in netlink.dump(ipr.get_neighbours, ifindex=vxlan, family=2):
        if msg.get_attr("NDA_DST") not in vtep_ips:
            _quietly(ipr.neigh, "del", ifindex=vxlan, dst=msg.get_attr("NDA_DST"))
    for msg in netlink.dump(ipr.fdb, "dump", ifindex=vxlan):
        mac = msg.get_attr("NDA_LLADDR")
        if msg["ifindex"] == vxlan and msg.get_attr("NDA_DST") and mac not in macs:
            _quietly(ipr.fdb, "del", ifindex=vxlan, lladdr=mac, dst=msg.get_attr("NDA_DST"))


def routes_to_peers(host) -> dict[str, str]:
    """subnet → gateway of the routes this agent owns (for `pynet node ls` and tests)."""
    out = {}
    for msg in netlink.dump(host.ipr.get_routes, family=2, table=254):
        if msg["proto"] == RTPROT_PYNET:
            out[f"{msg.get_attr('RTA_DST')}/{msg['dst_len']}"] = msg.get_attr("RTA_GATEWAY")
    return out


def _quietly(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except Exception as exc:
        if netlink.netlink_error_code(exc) not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
            raise
