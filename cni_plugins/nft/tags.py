"""Owner tags: the comment on every nft element (and the mark on every lease) that says which attachment
owns it.

``owner_tag`` is ``<containerID>/<ifname>``; ``network_owner_tag`` appends ``@<network>`` for tables that
several networks share, so that a GC (sent per network) recognises, and leaves alone, other networks'
elements. libnftables aborts the whole process on element comments much longer than 128 bytes: long parts
are replaced by a digest, so a tag always fits.
"""

from __future__ import annotations

_OWNER_MAX = 96
_NETWORK_MAX = 30


def _digest(text: str, n: int) -> str:
    from ..digest import sha256_hex

    return "#" + sha256_hex(text)[:n]


def owner_tag(container_id: str, ifname: str) -> str:
    """``<containerID>/<ifname>``: what marks state one attachment owns (leases, nft elements)."""
    owner = f"{container_id}/{ifname}"
    return owner if len(owner) <= _OWNER_MAX else _digest(owner, 40)


def network_suffix(network: str) -> str:
    """The ``@<network>`` part of a network-scoped tag (no '@' in network names, per the spec's charset)."""
    return "@" + (network if len(network) <= _NETWORK_MAX else _digest(network, 24))


def network_owner_tag(container_id: str, ifname: str, network: str) -> str:
    """An owner tag scoped to one network, for tables that several networks share: GC is sent per
    network, so it must recognise, and leave alone, other networks' elements."""
    return owner_tag(container_id, ifname) + network_suffix(network)
