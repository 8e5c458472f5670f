"""nftables state of the bridge plugin: ipMasq and macspoofchk, each a fixed rule set plus owner-tagged elements.

``table inet pynet-bridge`` (ipMasq; the reference's per-container iptables chain, as set lookups) and
``table bridge pynet-bridge`` (macspoofchk: frames entering the bridge from a guarded port must carry the
container's MAC) are declared below as data; ``cni_plugins.nft`` writes them.

Each element's comment is its owner tag ``<containerID>/<ifname>@<network>``: DEL removes its own elements
by tag (no need for the container netns or the addresses), and GC of one network removes that network's
elements whose attachment is no longer valid without touching other networks sharing the table. The rules
are written only when a set is missing (the first ADD, or after someone removed the table).
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

SPOOF = Table("bridge", "pynet-bridge", sets=(
    Set("guarded", "ifname"),                                          # host veth
    Set("allowed", "ifname . ether_addr"),                             # host veth . container MAC
), chains=(
    Chain("prerouting", hook="filter prerouting", priority=-300, rules=(
        "iifname . ether saddr @allowed return",
        "iifname @guarded drop",
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


def add_spoofcheck(handle: nft.Nft, tag: str, host_ifname: str, mac: str) -> None:
    """Lets frames from ``host_ifname`` into the bridge only with source MAC ``mac``."""
    nft.own(handle, SPOOF, tag, {"guarded": [host_ifname], "allowed": [nft.concat(host_ifname, mac)]},
            what="macspoofchk setup")


def remove_owned(handle: nft.Nft, tag: str, masq: bool = True, spoof: bool = True) -> None:
    for wanted, table in ((masq, MASQ), (spoof, SPOOF)):
        if wanted:
            nft.remove_owned(handle, table, tag)


def collect_garbage(handle: nft.Nft, network: str, valid_tags: set[str]) -> None:
    """Removes this network's elements whose owner is not a valid attachment; other networks' stay."""
    for table in (MASQ, SPOOF):
        nft.collect_garbage(handle, table, network, valid_tags)


def masqueraded(handle: nft.Nft, tag: str) -> set[str]:
    """The container addresses ``tag`` owns in the masquerade sets (for CHECK)."""
    return {str(value) for values in nft.owned(handle, MASQ, tag, ("masq4", "masq6")).values() for value in values}
