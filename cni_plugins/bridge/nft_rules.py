"""nftables state of the bridge plugin: ipMasq and macspoofchk, each a fixed rule set plus owner-tagged elements.

``table inet pynet-bridge`` (ipMasq, shared with ptp: cni_plugins/masquerade.py) and
``table bridge pynet-bridge`` (macspoofchk: frames entering the bridge from a guarded port must carry the
container's MAC) are declared below as data; ``cni_plugins.nft`` writes them.

Each element's comment is its owner tag ``<containerID>/<ifname>@<network>``: DEL removes its own elements
by tag (no need for the container netns or the addresses), and GC of one network removes that network's
elements whose attachment is no longer valid without touching other networks sharing the table. The rules
are written only when a set is missing (the first ADD, or after someone removed the table).
"""

from __future__ import annotations

from cni_plugins import nft
from cni_plugins.masquerade import MASQ, add_masquerade, masqueraded  # noqa: F401  (bridge's ipMasq)
from cni_plugins.nft import Chain, Set, Table

SPOOF = Table("bridge", "pynet-bridge", sets=(
    Set("guarded", "ifname"),                                          # host veth
    Set("allowed", "ifname . ether_addr"),                             # host veth . container MAC
), chains=(
    Chain("prerouting", hook="filter prerouting", priority=-300, rules=(
        "iifname . ether saddr @allowed return",
        "iifname @guarded drop",
    )),
))


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

