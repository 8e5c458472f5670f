"""firewall: admits a container's addresses in pynet's nftables table (chained after bridge/ptp).

Per-container state is one owner-tagged element per container address in the table's ``ctr4``/``ctr6``
sets; the rules are fixed and written once per table (see firewall.table for the table and for how these
semantics relate to the reference's iptables rules). ADD and CHECK need a prevResult; DEL and GC work from
the owner tags alone, so they succeed after the netns and the cached result are gone.

Tags are ``<containerID>/<ifname> <network>``: the table is shared by every network, and GC (sent per
network with that network's valid attachments) must only collect elements of its own network.
"""

from __future__ import annotations

from cni_plugins import nft as nftlib
from cni_plugins.errors import CNIError, INVALID_CONFIG, INTERNAL, PLUGIN_NOT_AVAILABLE
from cni_plugins.handles import Handles
from cni_plugins.plugin import Plugin
from cni_plugins.skel import Request, network_suffix
from cni_plugins.types import Result

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
    nft = handles.host.nft
    skeleton = table.skeleton(rewrite_rules=not table.rules_in_place(nft))
    created, replaced = [], []
    for address in _addresses(prev):
        name = table.addr_set(address)
        value = str(address)
        created.append(table.element_cmd("create", name, [nftlib.element(value, owner)]))
        # add, delete, add: one transaction that replaces an element left by an earlier owner, so the tag
        # always names the attachment that holds the address now.
        replaced += [table.element_cmd("add", name, [value]), table.element_cmd("delete", name, [value]),
                     table.element_cmd("add", name, [nftlib.element(value, owner)])]
    extra = table.isolated_bridge(bridge) if bridge else []
    what = f"firewall ADD for {req.owner()}"
    try:
        # The common case, no element for these addresses yet, without the delete: deleting makes
        # libnftables fetch the whole set, a cost that grows with the number of containers.
        nft.apply(skeleton + created + extra, what)
    except nftlib.NftError:
        nft.apply(skeleton + replaced + extra, what)
    return prev


def delete(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    nft = handles.host.nft
    if not nft.table_exists(table.FAMILY, table.TABLE):
        return
    owner = req.network_owner()
    nft.delete_owned(table.FAMILY, table.TABLE, table.ADDR_SETS.values(), keep=lambda t: t != owner)


def check(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    prev = req.require_prev_result("firewall")
    bridge = _bridge_name(cfg, prev)
    nft = handles.host.nft
    if not table.rules_in_place(nft):
        raise CNIError(INTERNAL, f"the rules of nftables chain {table.FAMILY} {table.TABLE} {table.CHAIN} are "
                       "missing or were changed")
    owner = req.network_owner()
    for address in _addresses(prev):
        name = table.addr_set(address)
        owners = {str(nftlib.value_of(e)): nftlib.owner_of(e)
                  for e in nft.list_elements(table.FAMILY, table.TABLE, name)}
        if owners.get(str(address)) != owner:
            raise CNIError(INTERNAL, f"address {address} of {req.owner()} is not in set {table.TABLE} {name}"
                           + (f" (held by {owners[str(address)]!r})" if str(address) in owners else ""))
    if bridge and bridge not in [nftlib.value_of(e) for e in
                                 nft.list_elements(table.FAMILY, table.TABLE, table.ISOLATED)]:
        raise CNIError(INTERNAL, f"bridge {bridge!r} is not in set {table.TABLE} {table.ISOLATED}")


def status(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    try:
        handles.host.nft.apply([{"list": {"tables": {"family": table.FAMILY}}}], "list nftables tables")
    except Exception as exc:
        raise CNIError(PLUGIN_NOT_AVAILABLE, f"firewall cannot use nftables: {exc}") from None


def gc(req: Request, cfg: FirewallConfig, handles: Handles) -> None:
    keep_tags = req.valid_network_owners()
    suffix = network_suffix(req.network_name)
    nft = handles.host.nft
    if not nft.table_exists(table.FAMILY, table.TABLE):
        return

    def keep(t: str) -> bool:
        # Elements of other networks (and untagged ones) are not this GC's business.
        return t in keep_tags or not t.endswith(suffix)

    nft.delete_owned(table.FAMILY, table.TABLE, table.ADDR_SETS.values(), keep=keep)
    _gc_isolated_bridges(nft, handles.host.ipr)


def _gc_isolated_bridges(nft, ipr) -> None:
    present = {msg.get_attr("IFLA_IFNAME") for msg in ipr.get_links()}
    gone = [nftlib.value_of(e) for e in nft.list_elements(table.FAMILY, table.TABLE, table.ISOLATED)
            if nftlib.value_of(e) not in present]
    if gone:
        nft.apply([table.element_cmd("delete", table.ISOLATED, gone),
                   table.element_cmd("delete", table.ISOLATED_SELF, [{"concat": [b, b]} for b in gone])],
                  "firewall GC of isolated bridges")


PLUGIN = Plugin(name="firewall", load_config=lambda req: parse(req.config), add=add, delete=delete, check=check,
                status=status, gc=gc)
