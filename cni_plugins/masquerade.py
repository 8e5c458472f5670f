"""ipMasq shared by bridge and ptp: masquerade a container's traffic leaving its subnet, as owner-tagged elements.

``table inet pynet-bridge`` (the reference's per-container iptables chain, as set lookups) is declared below
as data; ``cni_plugins.nft`` writes it. The name stays ``pynet-bridge`` for every plugin that masquerades
(bridge first had it alone): one table, one rule set, each container's elements tagged
``<containerID>/<ifname>@<network>``, so DEL removes its own elements by tag (no netns, no addresses needed)
and GC of one network removes only that network's stale elements.
"""

from __future__ import annotations

from cni_plugins import nft
from cni_plugins.nft import Chain, Set, Table

MASQ = Table("inet", "pynet-bridge", sets=(
    Set("masq4", "ipv4_addr"),                                         # container address
    Set("local4", "ipv4_addr . ipv4_addr", flags=("interval",)),       # container address . its subnet
    Set("masq6", "ipv6_addr"),
    Set("local6", "ipv6_addr . ipv6_addr", flags=("interval",)),
), chains=(
    Chain("postrouting", hook="nat postrouting", priority=100, rules=(
        "ip saddr . ip daddr @local4 return",     # traffic to the container's own subnet keeps its source
        "ip daddr 224.0.0.0/4 return",            # multicast keeps its source
        "ip saddr @masq4 masquerade",
        "ip6 saddr . ip6 daddr @local6 return",
        "ip6 daddr ff00::/8 return",
        "ip6 saddr @masq6 masquerade",
    )),
))


def add_masquerade(handle: nft.Nft, tag: str, addresses) -> None:
    """Masquerades traffic from each container address (an ip_interface) leaving its subnet."""
    elements = {}
    for version in (4, 6):
        mine = [a for a in addresses if a.version == version]
        elements[f"masq{version}"] = [str(a.ip) for a in mine]
        elements[f"local{version}"] = [nft.concat(str(a.ip), nft.prefix(a.network)) for a in mine]
    nft.own(handle, MASQ, tag, elements, what="ipMasq setup")


def remove_masquerade(handle: nft.Nft, tag: str) -> None:
    nft.remove_owned(handle, MASQ, tag)


def collect_garbage(handle: nft.Nft, network: str, valid_tags: set[str]) -> None:
    """Removes this network's masquerade elements whose owner is not a valid attachment."""
    nft.collect_garbage(handle, MASQ, network, valid_tags)


def masqueraded(handle: nft.Nft, tag: str) -> set[str]:
    """The container addresses ``tag`` owns in the masquerade sets (for CHECK)."""
    return {str(value) for values in nft.owned(handle, MASQ, tag, ("masq4", "masq6")).values() for value in values}
