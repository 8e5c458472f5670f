"""portmap: host ports DNATed to the container, on nftables, as a chained plugin.

ADD  : validated config -> layout created once (rules.py) -> one transaction adding this attachment's
       owner-tagged elements (claims refuse a host port another attachment holds) -> route_localnet on the
       host interface towards the container (IPv4 localhost DNAT) -> UDP conntrack flush. Result: prevResult.
DEL  : with the same prevResult and portMappings as ADD, deletes exactly the computed elements plus the
       attachment's receipt in one transaction (which fails whole unless this owner added exactly those);
       otherwise (no prevResult, changed mappings, netns gone) lists the table and removes every element
       tagged with this attachment's owner, in one transaction.
CHECK: the profile's chains exist and every element this attachment needs is there with its owner tag,
       family by family (an IPv4-only container is checked for IPv4 only).
GC   : removes, in this network's profiles, the elements whose owner is not a valid attachment.
All of it in the host namespace of the request's handles, in table inet pynet-portmap only.
"""

from __future__ import annotations

import struct

from cni_plugins import sysctl
from cni_plugins.errors import CNIError, PLUGIN_NOT_AVAILABLE
from cni_plugins.handles import Handles
from cni_plugins.nft import NftError
from cni_plugins.plugin import Plugin, no_config
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import config, conntrack, rules
from .rules import FAMILY, Profile


# -- verbs -------------------------------------------------------------------------------------------------
def add(req: Request, cfg: config.PortMapConfig, handles: Handles) -> Result:
    prev = req.require_prev_result("portmap")
    addresses = config.container_addresses(prev)
    entries = config.dnat_entries(cfg.mappings, addresses)
    if not entries:
        return prev
    nft = handles.host.nft
    profile = Profile(cfg.network, cfg.options)
    # The first ADD of this network (or of the host) writes the layout first.
    rules.claim(nft, profile, entries, req.owner())
    try:
        if cfg.options.snat and any(e.family == 4 for e in entries):
            _enable_localnet_routing(handles.host, addresses[4].ip)
    except BaseException:
        owner = req.owner()  # a failed ADD leaves nothing behind
        rules.remove(nft, lambda name, tag: tag == owner, claims_too=lambda tag: tag == owner)
        raise
    conntrack.flush_udp(handles.host, _udp_ports((e.family, e.protocol, e.host_port) for e in entries))
    return prev


def delete(req: Request, _conf, handles: Handles) -> None:
    owner = req.owner()
    nft = handles.host.nft
    known = _entries_for_delete(req)
    if known:
        profile, entries = known
        try:  # exact: the receipt exists only if this owner added precisely these elements
            rules.release(nft, profile, entries, owner)
            conntrack.flush_udp(handles.host, _udp_ports((e.family, e.protocol, e.host_port) for e in entries))
            return
        except NftError as exc:
            if not exc.missing:
                raise
    removed = rules.remove(nft, lambda name, tag: tag == owner, claims_too=lambda tag: tag == owner)
    conntrack.flush_udp(handles.host, _udp_ports(rules.claim_ports(removed)))


def _entries_for_delete(req: Request):
    """(profile, entries) when DEL carries the same prevResult and portMappings as ADD; None otherwise."""
    try:
        prev = req.prev_result
        cfg = config.load(req)
        if prev is None or not cfg.mappings:
            return None
        entries = config.dnat_entries(cfg.mappings, config.container_addresses(prev))
    except CNIError:
        return None  # DEL never fails on config it could not have accepted at ADD: the scan cleans up
    return (Profile(cfg.network, cfg.options), entries) if entries else None


def check(req: Request, cfg: config.PortMapConfig, handles: Handles) -> None:
    prev = req.require_prev_result("portmap")
    entries = config.dnat_entries(cfg.mappings, config.container_addresses(prev))
    if not entries:
        return
    profile = Profile(cfg.network, cfg.options)
    rules.verify(handles.host.nft, profile, entries, req.owner())


def status(req: Request, _conf, handles: Handles) -> None:
    try:
        handles.host.nft.apply([{"list": {"tables": {"family": FAMILY}}}], "list nftables tables")
    except Exception as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"portmap cannot use nftables: {exc}") from None


def gc(req: Request, _conf, handles: Handles) -> None:
    keep = req.valid_owners()
    prefix = rules.network_prefix(req.network_name) + "_"
    removed = rules.remove(handles.host.nft, lambda name, tag: name.startswith(prefix) and tag not in keep)
    conntrack.flush_udp(handles.host, _udp_ports(rules.claim_ports(removed)))


PLUGIN = Plugin(name="portmap", load_config=config.load, add=add, delete=delete, check=check, status=status,
                gc=gc,
                # DEL reads the config only as a hint (see _entries_for_delete); GC needs none.
                load_teardown_config=no_config)


# -- helpers ------------------------------------------------------------------------------------------------
def _udp_ports(triples) -> dict[int, set[int]]:
    ports: dict[int, set[int]] = {4: set(), 6: set()}
    for family, protocol, port in triples:
        if protocol == "udp":
            ports[family].add(port)
    return ports


# -- host side -----------------------------------------------------------------------------------------------
def _enable_localnet_routing(host, container_ip) -> None:
    """route_localnet=1 on the host interface towards the container, so a DNATed 127.0.0.1 connection may
    leave through it (after masquerade) and its replies may come back (as the reference plugin does)."""
    ifname = _route_interface(host, container_ip)
    if ifname and ifname != "lo":
        host.sysctl_write(sysctl.iface_key(4, ifname, "route_localnet"), "1")


def _route_interface(host, ip) -> str | None:
    """The interface of the longest matching main-table route in ``host``, read from procfs (no netlink
    library to load on every IPv4 ADD; the container's connected route is what matters here)."""
    target = int(ip)
    best = None
    with host.open_proc("/proc/thread-self/net/route") as f:
        next(f)
        for line in f:
            fields = line.split()
            # addresses are printed as the kernel's __be32 read as a native integer
            dest, mask = (int.from_bytes(struct.pack("=I", int(v, 16)), "big") for v in (fields[1], fields[7]))
            if target & mask == dest and (best is None or mask > best[0]):
                best = (mask, fields[0])
    return best[1] if best else None

