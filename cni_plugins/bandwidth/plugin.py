"""bandwidth: traffic shaping of a container interface made by an earlier plugin (the reference's
``bandwidth``), chained after it and working from its prevResult.

Ingress (towards the container): a tbf qdisc at the root of the host-side veth, whose transmit direction
is the container's receive. Egress (from the container): what the container sends arrives on the host
veth's ingress; a u32 match-all filter there redirects it to an ifb device (``bwp`` + a hash of network
name and container ID, the reference's name) whose root tbf shapes it. Everything is made in the host
netns through ``handles.host.ipr``; the container netns is only read, to find the veth peer.
"""

from __future__ import annotations

import errno

from cni_plugins import netlink
from cni_plugins.undo import undo_on_failure
from cni_plugins.errors import CNIError, INTERNAL
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Interface, Result

from . import config as bwconfig
from . import tc
from .config import BandwidthConfig, Tbf

IFB_PREFIX = "bwp"
IFNAME_MAX = 15


def ifb_name(network: str, container_id: str) -> str:
    """The reference's getIfbDeviceName: ``bwp`` + SHA-512 of network name + container ID, 15 characters."""
    try:
        from _sha512 import sha512
    except ImportError:  # an interpreter built without it
        from hashlib import sha512
    return (IFB_PREFIX + sha512((network + container_id).encode()).hexdigest())[:IFNAME_MAX]



def _peer_index(ns, ifname: str) -> int:
    """The host-side ifindex of the container interface's veth peer (IFLA_LINK numbers it in the peer's
    netns), or a clear error when the interface is missing or no veth."""
    msg = netlink.link(ns.ipr, ifname)
    if msg is None:
        raise CNIError(INTERNAL, f"container interface {ifname!r} not found in {ns.path or 'the container netns'}")
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    peer = msg.get_attr("IFLA_LINK")
    if kind != "veth" or not peer:
        raise CNIError(INTERNAL, f"container interface {ifname!r} has no veth peer (it is a {kind or 'device'} "
                       "link): bandwidth shapes veth-attached containers only")
    return peer


def host_veth(req: Request, prev: Result, handles: Handles) -> tuple[str, int]:
    """The host end of the container interface's veth: found by the peer ifindex, and it must be an
    interface of prevResult without a sandbox (the reference's getHostInterface)."""
    peer = _peer_index(handles.container(), req.ifname)
    try:
        msg = handles.host.ipr.link("get", index=peer)[0]
    except Exception as exc:
        if netlink.netlink_error_code(exc) in (errno.ENODEV, errno.ENOENT):
            raise CNIError(INTERNAL, f"the veth peer (index {peer}) of {req.ifname!r} is not in the host netns") \
                from None
        raise
    name = msg.get_attr("IFLA_IFNAME")
    if not any(i.name == name and not i.sandbox for i in prev.interfaces):
        raise CNIError(INTERNAL, f"the veth peer {name!r} of {req.ifname!r} is not a host interface of prevResult")
    return name, peer


def _ensure_ifb(ipr, name: str, mtu: int) -> tuple[int, bool]:
    """The ifb device, created up with the host veth's MTU and txqlen 0 as the reference makes it; an ifb
    left by an earlier ADD of the same container is reused, any other link of that name is an error.
    Returns (index, created)."""
    created = True
    try:
        ipr.link("add", ifname=name, kind="ifb", mtu=mtu, txqlen=0, state="up")
    except Exception as exc:
        if netlink.netlink_error_code(exc) != errno.EEXIST:
            raise CNIError(INTERNAL, f"cannot create ifb device {name!r}: {exc}") from None
        msg = netlink.link(ipr, name)
        info = msg.get_attr("IFLA_LINKINFO") if msg is not None else None
        if info is None or info.get_attr("IFLA_INFO_KIND") != "ifb":
            raise CNIError(INTERNAL, f"cannot create ifb device {name!r}: another link of that name exists") \
                from None
        ipr.link("set", index=msg["index"], mtu=mtu, state="up")
        created = False
    index = netlink.link_index(ipr, name)
    if index is None:
        raise CNIError(INTERNAL, f"ifb device {name!r} vanished after it was created")
    return index, created


def _tc_failed(what: str, exc: Exception) -> CNIError:
    return CNIError(INTERNAL, f"cannot set up {what}: {exc}")


# -- verbs ----------------------------------------------------------------------------------------------------
def add(req: Request, conf: BandwidthConfig, handles: Handles) -> Result:
    if not conf.shapes:
        prev = req.prev_result
        return prev if prev is not None else Result()
    prev = req.require_prev_result("bandwidth")
    ipr = handles.host.ipr
    veth, veth_index = host_veth(req, prev, handles)
    with undo_on_failure("bandwidth") as undo:
        if conf.ingress is not None:
            undo.append(("tbf on the host veth", lambda: tc.delete_qdisc(ipr, veth_index, tc.TC_H_ROOT)))
            try:
                tc.add_tbf(ipr, veth_index, conf.ingress)
            except Exception as exc:
                raise _tc_failed(f"ingress tbf on {veth!r}", exc) from None
        if conf.egress is not None:
            name = ifb_name(req.network_name, req.container_id)
            mtu = netlink.link(ipr, veth).get_attr("IFLA_MTU")
            ifb_index, created = _ensure_ifb(ipr, name, mtu)
            if created:
                undo.append(("ifb device", lambda: netlink.delete_link(ipr, name)))
            undo.append(("ingress qdisc on the host veth",
                         lambda: tc.delete_qdisc(ipr, veth_index, tc.TC_H_INGRESS)))
            try:
                tc.add_redirect(ipr, veth_index, ifb_index)
                tc.add_tbf(ipr, ifb_index, conf.egress)
            except Exception as exc:
                raise _tc_failed(f"egress redirect of {veth!r} to {name!r}", exc) from None
            if not any(i.name == name for i in prev.interfaces):
                prev.interfaces.append(Interface(name, netlink.mac_by_name(ipr, name) or ""))
    return prev


def delete(req: Request, conf: BandwidthConfig, handles: Handles) -> None:
    """Idempotent: the ifb goes (its qdiscs with it) and, when the container's veth is still there, its
    host end loses the tbf and ingress qdiscs. Nothing to find (netns or link gone) is success."""
    ipr = handles.host.ipr
    netlink.delete_link(ipr, ifb_name(req.network_name, req.container_id))
    ns = handles.container_if_present()
    if ns is None:
        return
    msg = netlink.link(ns.ipr, req.ifname)
    peer = msg.get_attr("IFLA_LINK") if msg is not None else None
    if not peer:
        return
    try:
        veth = ipr.link("get", index=peer)[0]
    except Exception as exc:
        if netlink.netlink_error_code(exc) in (errno.ENODEV, errno.ENOENT):
            return
        raise
    index = veth["index"]
    root = tc.qdisc_at(ipr, index, tc.TC_H_ROOT)
    if root is not None and root.get_attr("TCA_KIND") == "tbf":
        tc.delete_qdisc(ipr, index, tc.TC_H_ROOT)
    tc.delete_qdisc(ipr, index, tc.TC_H_INGRESS)


def _check_tbf(ipr, index: int, where: str, want: Tbf) -> None:
    have = tc.tbf_parms(tc.qdisc_at(ipr, index, tc.TC_H_ROOT))
    if have is None:
        raise CNIError(INTERNAL, f"no tbf qdisc at the root of {where}")
    for key in ("rate", "buffer", "limit"):
        if have[key] != getattr(want, key):
            raise CNIError(INTERNAL, f"tbf {key} on {where} is {have[key]}, configured {getattr(want, key)}")


def check(req: Request, conf: BandwidthConfig, handles: Handles) -> None:
    prev = req.require_prev_result("bandwidth", "CHECK needs the result of the ADD")
    if not conf.shapes:
        return
    ipr = handles.host.ipr
    veth, veth_index = host_veth(req, prev, handles)
    if conf.ingress is not None:
        _check_tbf(ipr, veth_index, f"host veth {veth!r}", conf.ingress)
    if conf.egress is not None:
        name = ifb_name(req.network_name, req.container_id)
        ifb_index = netlink.link_index(ipr, name)
        if ifb_index is None:
            raise CNIError(INTERNAL, f"ifb device {name!r} not found")
        _check_tbf(ipr, ifb_index, f"ifb device {name!r}", conf.egress)
        if tc.qdisc_at(ipr, veth_index, tc.TC_H_INGRESS) is None:
            raise CNIError(INTERNAL, f"no ingress qdisc on host veth {veth!r}")
        targets = [ifindex for f in tc.redirects(ipr, veth_index) for _, ifindex in f["mirred"]]
        if ifb_index not in targets:
            raise CNIError(INTERNAL, f"no filter on host veth {veth!r} redirects to ifb device {name!r}")


def status(req: Request, conf: BandwidthConfig, handles: Handles) -> None:
    """The config was valid (the skeleton loaded it); bandwidth has nothing else to report."""


def _load_teardown(req: Request) -> BandwidthConfig | None:
    """DEL needs only the names (network, container ID), never the rates: it cleans up even when the
    shaping keys went bad since ADD."""
    return None


PLUGIN = Plugin(name="bandwidth", load_config=bwconfig.parse, add=add, delete=delete, check=check, status=status,
                load_teardown_config=_load_teardown)
