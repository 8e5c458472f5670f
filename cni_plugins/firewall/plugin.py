"""firewall: admits a container's addresses in pynet's nftables table (chained after bridge/ptp).

Per-container state is one owner-tagged element per container address in the table's ``ctr4``/``ctr6``
sets; the rules are fixed and written once per table (see firewall.table for the table and for how these
semantics relate to the reference's iptables rules). ADD and CHECK need a prevResult; DEL and GC work from
the owner tags alone, so they succeed after the netns and the cached result are gone.

Tags are ``<containerID>/<ifname> <network>``: the table is shared by every network, and GC (sent per
network with that network's valid attachments) must only collect elements of its own network.
"""

from __future__ import annotations

from cni_plugins.errors import CNIError, INVALID_CONFIG, INTERNAL, PLUGIN_NOT_AVAILABLE
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request
from cni_plugins.results import Result

from . import table
from .config import INGRESS_SAME_BRIDGE, FirewallConfig, parse

def _bridge_name(cfg: FirewallConfig, prev: Result) -> str | None:
    if cfg.ingress_policy != INGRESS_SAME_BRIDGE:
        return None
    # As the reference: the first interface of the result is the bridge when firewall follows bridge.
    if not prev.interfaces or not prev.interfaces[0].name:
        raise CNIError(INVALID_CONFIG, f"ingressPolicy {cfg.ingress_policy!r} needs the bridge name in prevResult "
                       "interfaces[0]: chain the firewall plugin after the bridge plugin")
    return prev.interfaces[0].name


def _addresses(prev: Result) -> list:
    seen = []
    for ip in prev.ips:
        if ip.address.ip not in seen:
            seen.append(ip.address.ip)
    return seen


def add(req: Request, cfg: FirewallConfig, handles: Handles) -> Result:
    prev = req.require_prev_result("firewall")
    bridge = _bridge_name(cfg, prev)
    owner = req.network_owner()
    table.admit(handles.host.nft, owner, _addresses(prev), bridge, what=f"firewall ADD for {req.owner()}")
    return prev


def delete(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    table.revoke(handles.host.nft, req.network_owner())


def check(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    prev = req.require_prev_result("firewall")
    bridge = _bridge_name(cfg, prev)
    nft = handles.host.nft
    if not table.rules_in_place(nft):
        raise CNIError(INTERNAL, f"the rules of nftables chain {table.FAMILY} {table.TABLE} {table.CHAIN} are "
                       "missing or were changed")
    owner = req.network_owner()
    owners = table.holders(nft, _addresses(prev))
    for address in _addresses(prev):
        name = table.addr_set(address)
        if owners.get(str(address)) != owner:
            raise CNIError(INTERNAL, f"address {address} of {req.owner()} is not in set {table.TABLE} {name}"
                           + (f" (held by {owners[str(address)]!r})" if str(address) in owners else ""))
    missing = table.foreign_missing(nft, owner, _addresses(prev))
    if missing:
        raise CNIError(INTERNAL, f"addresses {missing} of {req.owner()} are not admitted in iptables-nft's "
                       "drop-policy filter FORWARD chain")
    if bridge and bridge not in table.isolated_bridges(nft):
        raise CNIError(INTERNAL, f"bridge {bridge!r} is not in set {table.TABLE} {table.ISOLATED}")


def status(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    try:
        handles.host.nft.apply([{"list": {"tables": {"family": table.FAMILY}}}], "list nftables tables")
    except Exception as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"firewall cannot use nftables: {exc}") from None


def gc(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    nft = handles.host.nft
    if not nft.table_exists(table.FAMILY, table.TABLE):
        return
    # Elements of other networks (and untagged ones) are not this GC's business.
    table.collect_garbage(nft, req.network_name, req.valid_network_owners())
    table.forget_bridges(nft, {msg.get_attr("IFLA_IFNAME") for msg in handles.host.ipr.get_links()})


PLUGIN = Plugin(name="firewall", load_config=lambda req: parse(req.config), add=add, delete=delete, check=check,
                status=status, gc=gc)
