"""nftables state of the bridge plugin: ipMasq and macspoofchk, each a fixed rule set plus owner-tagged elements.

``table inet pynet-bridge`` (ipMasq; the reference's per-container iptables chain, as set lookups)::

    set masq4 { type ipv4_addr }                                   container address
    set local4 { type ipv4_addr . ipv4_addr; flags interval }      container address . its subnet
    (masq6, local6 the same for IPv6)
    chain postrouting { type nat hook postrouting priority srcnat;
        ip saddr . ip daddr @local4 return       traffic to the container's own subnet keeps its source
        ip daddr 224.0.0.0/4 return              multicast keeps its source
        ip saddr @masq4 masquerade
        (the same three for ip6, multicast ff00::/8)
    }

``table bridge pynet-bridge`` (macspoofchk; frames entering the bridge from a guarded port must carry the
container's MAC)::

    set guarded { type ifname }                                     host veth
    set allowed { type ifname . ether_addr }                        host veth . container MAC
    chain prerouting { type filter hook prerouting priority -300;
        iifname . ether saddr @allowed return
        iifname @guarded drop
    }

Each element's comment is its owner tag ``<containerID>/<ifname>@<network>``: DEL removes its own elements
by tag (no need for the container netns or the addresses), and GC of one network removes that network's
elements whose attachment is no longer valid without touching other networks sharing the table.

The rules are written only when a set is missing (the first ADD, or after someone removed the table): an
ADD first tries to add just its elements, and only on ENOENT writes the whole table, flushing and rewriting
its chain in the same transaction so racing first ADDs still leave exactly one copy of the rules.
"""

from __future__ import annotations

from cni_plugins.nft import Nft, NftError
from cni_plugins.skel import network_suffix

TABLE = "pynet-bridge"
MASQ_FAMILY = "inet"
SPOOF_FAMILY = "bridge"
MASQ_SETS = ("masq4", "local4", "masq6", "local6")
SPOOF_SETS = ("guarded", "allowed")

_MULTICAST = {4: ("224.0.0.0", 4), 6: ("ff00::", 8)}


# -- rule sets ----------------------------------------------------------------------------------------------
def _addr(version: int, field: str) -> dict:
    return {"payload": {"protocol": "ip" if version == 4 else "ip6", "field": field}}


def _match(left, right) -> dict:
    return {"match": {"op": "==", "left": left, "right": right}}


def _masq_skeleton() -> list[dict]:
    t = {"family": MASQ_FAMILY, "table": TABLE}
    cmds: list[dict] = [{"add": {"table": {"family": MASQ_FAMILY, "name": TABLE}}}]
    for version, addr_type in ((4, "ipv4_addr"), (6, "ipv6_addr")):
        cmds.append({"add": {"set": dict(t, name=f"masq{version}", type=addr_type)}})
        cmds.append({"add": {"set": dict(t, name=f"local{version}", type=[addr_type, addr_type],
                                         flags=["interval"])}})
    cmds.append({"add": {"chain": dict(t, name="postrouting", type="nat", hook="postrouting", prio=100,
                                       policy="accept")}})
    cmds.append({"flush": {"chain": dict(t, name="postrouting")}})
    for version in (4, 6):
        net, plen = _MULTICAST[version]
        for expr in (
            [_match({"concat": [_addr(version, "saddr"), _addr(version, "daddr")]}, f"@local{version}"),
             {"return": None}],
            [_match(_addr(version, "daddr"), {"prefix": {"addr": net, "len": plen}}), {"return": None}],
            [_match(_addr(version, "saddr"), f"@masq{version}"), {"masquerade": None}],
        ):
            cmds.append({"add": {"rule": dict(t, chain="postrouting", expr=expr)}})
    return cmds


def _spoof_skeleton() -> list[dict]:
    t = {"family": SPOOF_FAMILY, "table": TABLE}
    iifname = {"meta": {"key": "iifname"}}
    return [
        {"add": {"table": {"family": SPOOF_FAMILY, "name": TABLE}}},
        {"add": {"set": dict(t, name="guarded", type="ifname")}},
        {"add": {"set": dict(t, name="allowed", type=["ifname", "ether_addr"])}},
        {"add": {"chain": dict(t, name="prerouting", type="filter", hook="prerouting", prio=-300,
                               policy="accept")}},
        {"flush": {"chain": dict(t, name="prerouting")}},
        {"add": {"rule": dict(t, chain="prerouting", expr=[
            _match({"concat": [iifname, {"payload": {"protocol": "ether", "field": "saddr"}}]}, "@allowed"),
            {"return": None}])}},
        {"add": {"rule": dict(t, chain="prerouting", expr=[_match(iifname, "@guarded"), {"drop": None}])}},
    ]


def _elements(family: str, set_name: str, values: list, tag: str) -> list[dict]:
    """Commands that leave exactly these elements owned by ``tag``. A plain add keeps the comment of an element
    already there (an address re-used while a stale owner's element lingers); add + delete + add in one
    transaction replaces it and cannot fail on presence or absence."""
    where = {"family": family, "table": TABLE, "name": set_name}
    return [{"add": {"element": dict(where, elem=list(values))}},
            {"delete": {"element": dict(where, elem=list(values))}},
            {"add": {"element": dict(where, elem=[{"elem": {"val": v, "comment": tag}} for v in values])}}]


def _created(commands: list[dict]) -> list[dict]:
    """The common case of ``_elements`` commands, when none of the elements is there yet: one ``create`` each.

    Deleting an element makes libnftables fetch every element of the set first, which costs ~4 us per
    container on the host; creating does not. A create that meets anything present fails as a whole."""
    return [{"create": cmd["add"]} for cmd in commands[2::3]]


def _add(nft: Nft, skeleton: list[dict], elements: list[dict], what: str) -> None:
    try:
        nft.apply(_created(elements), what)
        return
    except NftError as exc:
        if exc.missing:
            nft.apply(skeleton + elements, what)
            return
        # Some element is there already (or the create failed otherwise): the replacing transaction decides.
    try:
        nft.apply(elements, what)
    except NftError as exc:
        if not exc.missing:
            raise
        nft.apply(skeleton + elements, what)


# -- per-container state ------------------------------------------------------------------------------------
def add_masquerade(nft: Nft, tag: str, addresses) -> None:
    """Masquerades traffic from each container address (an ip_interface) leaving its subnet."""
    elements = []
    for version in (4, 6):
        mine = [a for a in addresses if a.version == version]
        if not mine:
            continue
        elements += _elements(MASQ_FAMILY, f"masq{version}", [str(a.ip) for a in mine], tag)
        elements += _elements(MASQ_FAMILY, f"local{version}", [
            {"concat": [str(a.ip), {"prefix": {"addr": str(a.network.network_address),
                                               "len": a.network.prefixlen}}]} for a in mine], tag)
    _add(nft, _masq_skeleton(), elements, "ipMasq setup")


def add_spoofcheck(nft: Nft, tag: str, host_ifname: str, mac: str) -> None:
    """Lets frames from ``host_ifname`` into the bridge only with source MAC ``mac``."""
    _add(nft, _spoof_skeleton(),
         _elements(SPOOF_FAMILY, "guarded", [host_ifname], tag)
         + _elements(SPOOF_FAMILY, "allowed", [{"concat": [host_ifname, mac]}], tag),
         "macspoofchk setup")


def remove_owned(nft: Nft, tag: str, masq: bool = True, spoof: bool = True) -> None:
    if masq:
        nft.delete_owned(MASQ_FAMILY, TABLE, MASQ_SETS, keep=lambda owner: owner != tag)
    if spoof:
        nft.delete_owned(SPOOF_FAMILY, TABLE, SPOOF_SETS, keep=lambda owner: owner != tag)


def collect_garbage(nft: Nft, network: str, valid_tags: set[str]) -> list:
    """Removes this network's elements whose owner is not a valid attachment; other networks' stay."""
    suffix = network_suffix(network)

    def keep(owner: str) -> bool:
        return not owner.endswith(suffix) or owner in valid_tags

    return (nft.delete_owned(MASQ_FAMILY, TABLE, MASQ_SETS, keep=keep)
            + nft.delete_owned(SPOOF_FAMILY, TABLE, SPOOF_SETS, keep=keep))


def masqueraded(nft: Nft, tag: str) -> set[str]:
    """The container addresses ``tag`` owns in the masquerade sets (for CHECK)."""
    return {str(e["elem"]["val"]) for name in ("masq4", "masq6")
            for e in nft.list_elements(MASQ_FAMILY, TABLE, name)
            if isinstance(e, dict) and e["elem"].get("comment") == tag}
