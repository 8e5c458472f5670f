"""pynet's firewall table: its fixed shape (written once, the same for every container) and its elements.

``table inet pynet-firewall``::

    set ctr4 { type ipv4_addr }  set ctr6 { type ipv6_addr }     container addresses, owner-tagged
    set isolated { type ifname }                                  bridges with ingressPolicy same-bridge
    set isolated_self { type ifname . ifname }                    (br . br) for each isolated bridge
    chain admin                                                   the administrator's; pynet never writes it
    chain forward { type filter hook forward priority filter; policy accept;
        jump admin
        iifname @isolated oifname @isolated iifname . oifname != @isolated_self drop
        ip daddr @ctr4 ct state established,related accept;  ip saddr @ctr4 accept
        ip6 daddr @ctr6 ct state established,related accept; ip6 saddr @ctr6 accept
    }

How this relates to the reference (iptables FORWARD -> CNI-FORWARD -> CNI-ADMIN, and the
CNI-ISOLATION-STAGE-1/2 chains of ingressPolicy same-bridge):

- In nftables every base chain on a hook sees every packet, and an ``accept`` ends only the chain it is in;
  a ``drop`` anywhere is final. So pynet's accepts cannot open a hole in another table's drop-policy forward
  chain (the reference punches one by inserting into iptables' FORWARD). pynet's chain has policy accept and
  only ever takes traffic away: the isolation drop, and whatever the administrator puts in ``admin``
  (which, as CNI-ADMIN in the reference, runs first). The one foreign chain pynet writes into is
  iptables-nft's ``filter FORWARD`` when its policy is drop (as Docker leaves it; see FOREIGN below); a host
  that drops forwarded traffic in any other table must accept container traffic there. The accept rules
  state (and count) what the reference admits; the address sets are the per-container state that CHECK,
  DEL and GC work on. The config key ``backend`` ("", "iptables", "firewalld") is accepted for reference
  configs and always means this table.
- same-bridge isolation has the reference's (and Docker's) semantics: traffic routed from one isolated
  bridge into a different isolated bridge is dropped. Traffic from other interfaces (the uplink, published
  ports) still reaches the containers. nft cannot compare ``iifname`` with ``oifname`` directly, hence the
  ``isolated_self`` set of (br . br) pairs. With bridge-nf-call-iptables on (the default in a new netns
  on this kernel) frames bridged between two ports of one bridge also pass the forward hook, with
  iifname = oifname = the bridge, and ``isolated_self`` lets them through; for the same reason a host's
  drop-policy forward chain elsewhere blocks even same-bridge container traffic. Isolated bridges are
  per-bridge state, not per-container: DEL leaves them (as the reference does: other containers may still
  use the bridge) and GC drops the ones whose link no longer exists.
"""

from __future__ import annotations

import ipaddress

from cni_plugins import nft
from cni_plugins.nft import Chain, Set, Table

FAMILY = "inet"
TABLE = "pynet-firewall"
CHAIN = "forward"
ADMIN_CHAIN = "admin"
ADDR_SETS = {4: "ctr4", 6: "ctr6"}
ISOLATED = "isolated"
ISOLATED_SELF = "isolated_self"

LAYOUT = Table(FAMILY, TABLE, sets=(
    Set(ADDR_SETS[4], "ipv4_addr"),
    Set(ADDR_SETS[6], "ipv6_addr"),
    Set(ISOLATED, "ifname"),
    Set(ISOLATED_SELF, "ifname . ifname"),
), chains=(
    Chain(ADMIN_CHAIN),  # no rules declared: created, never flushed
    Chain(CHAIN, hook="filter forward", priority=0, rules=(
        f"jump {ADMIN_CHAIN}",
        f"iifname @{ISOLATED} oifname @{ISOLATED} iifname . oifname != @{ISOLATED_SELF} counter drop",
        f"ip daddr @{ADDR_SETS[4]} ct state established,related counter accept",
        f"ip saddr @{ADDR_SETS[4]} counter accept",
        f"ip6 daddr @{ADDR_SETS[6]} ct state established,related counter accept",
        f"ip6 saddr @{ADDR_SETS[6]} counter accept",
    )),
))


def addr_set(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return ADDR_SETS[address.version]


def admit(handle: nft.Nft, owner: str, addresses, bridge: str | None = None, what: str = "") -> None:
    """Admits the container's addresses (owned by ``owner``; an element an earlier owner left is taken over)
    and, with ingressPolicy same-bridge, isolates ``bridge`` (per-bridge state, owned by nobody). The
    forward chain's rules are rewritten when they are missing or were changed. Where iptables-nft's
    ``filter FORWARD`` chain drops by policy, the addresses are admitted there too (``FOREIGN``)."""
    elements: dict[str, list] = {}
    for address in addresses:
        elements.setdefault(addr_set(address), []).append(str(address))
    shared = {ISOLATED: [bridge], ISOLATED_SELF: [nft.concat(bridge, bridge)]} if bridge else None
    nft.own(handle, LAYOUT, owner, elements, shared=shared, check_rules=True, what=what)
    try:
        policies = nft.base_chain_policies(handle)
        for version, chain in FOREIGN.items():
            mine = [a for a in addresses if a.version == version]
            if mine and policies.get(chain) == "drop":
                nft.add_tagged_rules(handle, *chain, owner, [r for a in mine for r in _foreign_rules(a)])
    except BaseException:
        revoke(handle, owner)  # a failed ADD leaves nothing behind
        raise


def revoke(handle: nft.Nft, owner: str) -> None:
    nft.remove_owned(handle, LAYOUT, owner)
    for chain in FOREIGN.values():
        nft.remove_tagged_rules(handle, *chain, lambda tag: tag == owner)


def collect_garbage(handle: nft.Nft, network: str, valid_owners: set[str]) -> None:
    nft.collect_garbage(handle, LAYOUT, network, valid_owners)
    suffix = nft.network_suffix(network)
    for chain in FOREIGN.values():
        nft.remove_tagged_rules(handle, *chain, lambda tag: tag.endswith(suffix) and tag not in valid_owners)


# -- iptables-nft's FORWARD chain -------------------------------------------------------------------------------
# A drop anywhere on the forward hook is final (see above), so where iptables-nft's ``filter`` table drops
# forwarded traffic by policy (as Docker leaves it), pynet's accepts alone do not let the containers out.
# There the firewall appends, per container address, ``ip saddr A accept`` and ``ip daddr A accept`` with the
# owner tag as comment: the same openness the container has on a host without that policy (pynet's own
# table decides what is dropped). Only expressions iptables-nft can read back are used (it shows them as
# ``-s A/32 -m comment --comment <tag> -j ACCEPT``; a native ``ct state`` would make the whole chain
# unreadable to iptables, and Docker with it). Appended, so that the administrator's DOCKER-USER runs first.
FOREIGN = {4: ("ip", "filter", "FORWARD"), 6: ("ip6", "filter", "FORWARD")}


def _foreign_rules(address) -> list[list]:
    ip = "ip" if address.version == 4 else "ip6"
    return [[{"match": {"op": "==", "left": {"payload": {"protocol": ip, "field": field}}, "right": str(address)}},
             {"counter": None}, {"accept": None}] for field in ("saddr", "daddr")]


def foreign_missing(handle: nft.Nft, owner: str, addresses) -> list[str]:
    """The addresses not admitted in a drop-policy iptables-nft FORWARD chain where one exists (for CHECK)."""
    policies = nft.base_chain_policies(handle)
    missing = []
    for version, chain in FOREIGN.items():
        mine = [a for a in addresses if a.version == version]
        if mine and policies.get(chain) == "drop":
            present = nft.tagged_rules(handle, *chain, owner)
            missing += [str(a) for a in mine if any(_canon(r) not in map(_canon, present) for r in _foreign_rules(a))]
    return missing


def _canon(expr: list) -> str:
    """A rule's expressions as comparable text (a listed counter carries its packets and bytes)."""
    return nft.canon([{"counter": None} if "counter" in e else e for e in expr])


def rules_in_place(handle: nft.Nft) -> bool:
    """True when the forward chain holds the rules (so an ADD only adds elements: counters stay)."""
    return nft.rules_in_place(handle, LAYOUT)


def holders(handle: nft.Nft, addresses) -> dict[str, str]:
    """str(address) -> owner tag of its element, for the addresses that have one (for CHECK)."""
    listing = nft.Listing(handle, LAYOUT)
    out = {}
    for address in addresses:
        tag = listing.owners(addr_set(address)).get(nft.canon(str(address)))
        if tag is not None:
            out[str(address)] = tag
    return out


def isolated_bridges(handle: nft.Nft) -> list[str]:
    return [nft.value_of(e) for e in handle.list_elements(FAMILY, TABLE, ISOLATED)]


def forget_bridges(handle: nft.Nft, present: set[str]) -> None:
    """Drops the isolated bridges whose link is not in ``present`` (GC)."""
    def select(listing: nft.Listing) -> dict[str, list]:
        return {ISOLATED: [e for e in listing.sets.get(ISOLATED, []) if nft.value_of(e) not in present],
                ISOLATED_SELF: [e for e in listing.sets.get(ISOLATED_SELF, [])
                                if nft.value_of(e)["concat"][0] not in present]}

    nft.remove_where(handle, LAYOUT, select, "firewall GC of isolated bridges")
